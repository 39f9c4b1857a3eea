"""The import's exact rewrites (`nas.graph.simplify`), checked against onnxruntime on the file."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import fx, nn

from nas.graph.simplify import SIMPLIFY_TAG, simplify
from nas.teachers import load_teacher
from nas.teachers.onnx import convert_onnx

RNG = np.random.default_rng(0)


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def _conv(name: str, x: str, c_in: int, c_out: int, k: int, pad: int, nodes, inits, group=1):
    inits.append(_const(f"{name}_w", RNG.normal(size=(c_out, c_in // group, k, k)) * 0.3))
    nodes.append(
        helper.make_node(
            "Conv", [x, f"{name}_w"], [name], pads=[pad] * 4, group=group, kernel_shape=[k, k]
        )
    )
    return name


def _binary(op: str, x: str, value, name: str, nodes, inits, const_first=False):
    inits.append(_const(f"{name}_c", value))
    inputs = [f"{name}_c", x] if const_first else [x, f"{name}_c"]
    nodes.append(helper.make_node(op, inputs, [name]))
    return name


def _hardswish(x: str, name: str, nodes, inits, divisor=6.0):
    shifted = _binary("Add", x, [3.0], f"{name}_add", nodes, inits)
    inits += [_const(f"{name}_lo", 0.0), _const(f"{name}_hi", 6.0)]
    nodes.append(helper.make_node("Clip", [shifted, f"{name}_lo", f"{name}_hi"], [f"{name}_clip"]))
    nodes.append(helper.make_node("Mul", [x, f"{name}_clip"], [f"{name}_mul"]))
    return _binary("Div", f"{name}_mul", [divisor], name, nodes, inits)


def _model(path, *, divisor=6.0, second_reader=False) -> None:
    """conv -> BN -> Mul(per channel) -> Add(scalar) -> hard-swish -> Mul(s) -> Add(b) -> a padded
    3x3 conv and a 1x1 conv (both read it) -> Add -> hard-swish -> Mul(s) -> Add(b) -> a 1x1 conv;
    with `second_reader`, the first conv's output is also read by the output."""
    nodes, inits = [], []
    x = _conv("c0", "x", 3, 8, 3, 1, nodes, inits)
    inits += [
        _const("bn_scale", RNG.uniform(0.5, 1.5, 8)),
        _const("bn_bias", RNG.normal(size=8)),
        _const("bn_mean", RNG.normal(size=8) * 0.1),
        _const("bn_var", RNG.uniform(0.5, 1.5, 8)),
    ]
    nodes.append(
        helper.make_node(
            "BatchNormalization", [x, "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["bn"]
        )
    )
    y = _binary("Mul", "bn", RNG.uniform(0.5, 2, (1, 8, 1, 1)), "m0", nodes, inits, True)
    y = _binary("Add", y, [0.25], "a0", nodes, inits)
    y = _hardswish(y, "hs0", nodes, inits, divisor)
    y = _binary("Mul", y, [1.7], "m1", nodes, inits, True)
    y = _binary("Add", y, [-0.4], "a1", nodes, inits)
    left = _conv("c1", y, 8, 8, 3, 1, nodes, inits, group=8)
    right = _conv("c2", y, 8, 8, 1, 0, nodes, inits)
    nodes.append(helper.make_node("Add", [left, right], ["sum"]))
    y = _hardswish("sum", "hs1", nodes, inits)
    y = _binary("Mul", y, [0.8], "m2", nodes, inits)
    y = _binary("Add", y, [0.3], "a2", nodes, inits)
    out = _conv("c3", y, 8, 4, 1, 0, nodes, inits)
    outputs = [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 4, 16, 16])]
    if second_reader:
        outputs.append(helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, 8, 16, 16]))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.save(model, str(path))


def _ops(gm: fx.GraphModule) -> list[str]:
    names = []
    for node in gm.graph.nodes:
        if node.op == "call_module":
            names.append(type(gm.get_submodule(node.target)).__name__)
        elif node.op == "call_function":
            names.append(node.target.__name__)
    return names


def _run(path, x: np.ndarray) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def test_rewrites_match_onnxruntime(tmp_path):
    """Every rule fires on the model it was written for, and the module still computes what
    onnxruntime computes on the file: only convs, hard-swishes, the network's own Add and one
    shift before the padded conv are left."""
    path = tmp_path / "m.onnx"
    _model(path)
    module, _, rewrites = convert_onnx(path)
    ops = _ops(module)
    assert ops.count("Conv2d") == 4 and ops.count("Hardswish") == 2
    assert "BatchNorm2d" not in ops and "ReLU6" not in ops and "OnnxClip" not in ops
    # left: the network's Add of the two branches, and the 3x3 conv's shift (its zero padding
    # must see the constant as the file does)
    assert ops.count("OnnxBinaryMathOperation") + ops.count("add") == 2, ops
    assert rewrites == 3 + 2 + 2  # BN, Mul, Add into c0; two hard-swishes; two affines
    x = RNG.normal(size=(1, 3, 16, 16)).astype(np.float32) * 3
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, _run(path, x)[0], rtol=1e-4, atol=1e-4)


def test_nothing_that_is_not_exact(tmp_path):
    """A conv output something else reads keeps its affine; a division by 5 is no hard-swish."""
    path = tmp_path / "m.onnx"
    _model(path, divisor=5.0, second_reader=True)
    module, _, _ = convert_onnx(path)
    ops = _ops(module)
    assert "Hardswish" not in ops[:6] and ops.count("Hardswish") == 1
    assert "BatchNorm2d" in ops
    x = RNG.normal(size=(1, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        got = [t.numpy() for t in module(torch.from_numpy(x))]
    for a, b in zip(got, _run(path, x), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


class _Traced(nn.Module):
    """The same spellings written in torch, for fx's own tracer (call_function nodes)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.head = nn.Conv2d(6, 2, 3, padding=1)
        self.register_buffer("scale", torch.tensor([2.0]))

    def forward(self, x):
        y = self.conv(x) * self.scale + 0.5
        y = y * F.relu6(y + 3.0) / 6.0
        return self.head(y * 0.5 - 1.0)


def test_traced_torch_graph():
    """The rules read torch's own functions too; the output is unchanged (float rounding)."""
    torch.manual_seed(0)
    model = _Traced().eval()
    gm = fx.symbolic_trace(model)
    x = torch.randn(2, 3, 12, 12)
    expected = model(x)
    assert simplify(gm) == 2 + 1 + 0  # Mul and Add into conv; hard-swish; `- 1.0` is a Sub
    assert torch.allclose(gm(x), expected, atol=1e-5)
    assert simplify(gm) == 0  # a fixed point


def test_ppocr_is_rewritten_and_named_so():
    """The built-in detector is simplified (its spelled-out hard-swishes are gone), and its
    weights id says so."""
    teacher = load_teacher("ppocrv4_det")
    assert teacher.weights_id.endswith(f"+{SIMPLIFY_TAG}")
    ops = _ops(teacher.module)
    assert ops.count("Hardswish") == 24 and "ReLU6" not in ops and ops.count("Conv2d") == 62
