"""TFLite models as teachers, read with no TensorFlow: `tflite:PATH`.

The flatbuffer is read with the `tflite` package (the schema's generated Python bindings, pure
Python) and rebuilt as an `nn.Module` that runs the graph's operators in their order, in NCHW:
it takes and returns N x C x H x W like every other teacher. Its convolutions are real
`nn.Conv2d` modules, named after the tensors they write (`layers.conv2d_1.conv`), so the layer
graph, the search and the delta model see them as they see any teacher's; every other operator
is a small module around a torch function. fp16 weights (`DEQUANTIZE` of a constant) are read
as float32.

TFLite's rules are kept: `SAME` padding puts the odd pixel after (at stride 2 an explicit pad
before the conv, whose own padding is then 0), and fused activations run after their op. So
that the graph runs at sizes other than the file's: an average pool whose window is its whole
input in the file is a global mean (as MEAN over H and W is), and a bilinear resize scales by
the factor it has in the file. MediaPipe's custom
`Convolution2DTransposeBias` is a transposed conv with bias (its options: padding, stride
width, stride height, three int32). An operator outside `SUPPORTED` is refused before any work,
in one line naming it and the layer it writes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas.core.errors import NasError
from nas.teachers.base import (
    UNIT_RANGE,
    InputSpec,
    OutputKind,
    Teacher,
    file_teacher,
)

SAME, VALID = 0, 1  # tflite.Padding
TRANSPOSE_BIAS = "Convolution2DTransposeBias"  # MediaPipe's custom op
SUPPORTED = (
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "ADD",
    "MUL",
    "HARD_SWISH",
    "LOGISTIC",
    "RELU",
    "RELU6",
    "AVERAGE_POOL_2D",
    "MEAN",
    "RESIZE_BILINEAR",
    "DEQUANTIZE",
    TRANSPOSE_BIAS,
)
# tflite.ActivationFunctionType: NONE, RELU, RELU_N1_TO_1, RELU6, TANH
FUSED: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {
    0: lambda x: x,
    1: F.relu,
    2: lambda x: x.clamp(-1.0, 1.0),
    3: F.relu6,
    4: torch.tanh,
}
_NUMPY = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's `SAME` padding of one dimension: (before, after), the odd pixel after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel, stride, dilation=(1, 1)) -> torch.Tensor:
    """`x` zero-padded as TensorFlow's `SAME` pads it before a window of `kernel` (H, W)."""
    top, bottom = same_padding(x.shape[-2], kernel[0], stride[0], dilation[0])
    left, right = same_padding(x.shape[-1], kernel[1], stride[1], dilation[1])
    return F.pad(x, (left, right, top, bottom))


class Conv(nn.Module):
    """CONV_2D and DEPTHWISE_CONV_2D: `conv` is the real `nn.Conv2d` the search sees (and a
    delta model replaces), so its geometry is kept here too."""

    def __init__(self, conv: nn.Conv2d, padding: int, activation: int) -> None:
        super().__init__()
        self.conv = conv
        self.activation = activation
        k, d, s = conv.kernel_size, conv.dilation, conv.stride
        self.geometry = (k, s, d)
        same = padding == SAME
        # At stride 1 SAME padding is symmetric at every size: the conv pads itself.
        self.explicit = same and s != (1, 1)
        if same and not self.explicit:
            if any((kk - 1) * dd % 2 for kk, dd in zip(k, d, strict=True)):
                self.explicit = True  # an even kernel pads one more after
            else:
                conv.padding = tuple((kk - 1) * dd // 2 for kk, dd in zip(k, d, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.explicit:
            x = pad_same(x, *self.geometry)
        return FUSED[self.activation](self.conv(x))


class TransposeBias(nn.Module):
    """MediaPipe's `Convolution2DTransposeBias`: a transposed conv with bias, TFLite's padding."""

    def __init__(self, deconv: nn.ConvTranspose2d, padding: int) -> None:
        super().__init__()
        self.deconv = deconv
        self.same = padding == SAME

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.deconv(x)  # (in - 1) * stride + kernel: VALID
        if not self.same:
            return y
        (sh, sw), (kh, kw) = self.deconv.stride, self.deconv.kernel_size
        h, w = x.shape[-2] * sh, x.shape[-1] * sw
        top, left = max(kh - sh, 0) // 2, max(kw - sw, 0) // 2
        return y[..., top : top + h, left : left + w]


class Elementwise(nn.Module):
    """ADD and MUL of two tensors, either of which may be a constant (kept as a buffer, NCHW)."""

    def __init__(self, op: Callable, activation: int, constants: dict[int, torch.Tensor]) -> None:
        super().__init__()
        self.op = op
        self.activation = activation
        self.slots = sorted(constants)
        for slot, value in constants.items():
            self.register_buffer(f"constant{slot}", value)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        args = list(xs)
        for slot in self.slots:
            args.insert(slot, getattr(self, f"constant{slot}"))
        return FUSED[self.activation](self.op(args[0], args[1]))


class Unary(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class AveragePool(nn.Module):
    """AVERAGE_POOL_2D; a window that covered its whole input in the file is a global mean."""

    def __init__(self, window, stride, padding: int, whole: bool, activation: int) -> None:
        super().__init__()
        self.window, self.stride, self.same, self.whole = window, stride, padding == SAME, whole
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.whole:
            return FUSED[self.activation](x.mean(dim=(2, 3), keepdim=True))
        if self.same:  # the mean over the window's real pixels: padding not counted, as TFLite
            x, ones = (
                pad_same(t, self.window, self.stride) for t in (x, torch.ones_like(x[:, :1]))
            )
            pooled = F.avg_pool2d(x, self.window, self.stride)
            return FUSED[self.activation](pooled / F.avg_pool2d(ones, self.window, self.stride))
        return FUSED[self.activation](F.avg_pool2d(x, self.window, self.stride))


class Mean(nn.Module):
    """MEAN over NHWC axes, taken over the same axes of NCHW tensors."""

    def __init__(self, dims: tuple[int, ...], keepdim: bool) -> None:
        super().__init__()
        self.dims, self.keepdim = dims, keepdim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=self.dims, keepdim=self.keepdim)


class ResizeBilinear(nn.Module):
    """RESIZE_BILINEAR by the scale it has in the file (half-pixel centres or aligned corners)."""

    def __init__(self, scale: tuple[float, float], align_corners: bool) -> None:
        super().__init__()
        self.scale, self.align_corners = scale, align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (round(x.shape[-2] * self.scale[0]), round(x.shape[-1] * self.scale[1]))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)


class TFLiteNet(nn.Module):
    """A TFLite graph run in order: `plan` holds (module name, input tensor ids, output id)."""

    def __init__(self, layers: dict[str, nn.Module], plan, input_id: int, output_id: int) -> None:
        super().__init__()
        self.layers = nn.ModuleDict(layers)
        self.plan = list(plan)
        self.input_id, self.output_id = input_id, output_id

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {self.input_id: x}
        for name, inputs, output in self.plan:
            values[output] = self.layers[name](*(values[i] for i in inputs))
        return values[self.output_id]


def _module_name(tensor_name: str, taken: set[str]) -> str:
    name = re.sub(r"\W", "_", tensor_name).strip("_") or "op"
    name = "t_" + name if name[0].isdigit() else name
    found, n = name, 1
    while found in taken:
        n += 1
        found = f"{name}_{n}"
    taken.add(found)
    return found


class _Reader:
    """The parts of one TFLite file the conversion reads."""

    def __init__(self, path: Path) -> None:
        import tflite

        self.tflite = tflite
        self.path = path
        self.data = path.read_bytes()
        try:
            self.model = tflite.Model.GetRootAsModel(self.data, 0)
            self.graph = self.model.Subgraphs(0)
        except Exception as exc:  # a truncated or foreign file fails anywhere in the parse
            raise NasError(f"cannot read TFLite file '{path}': {exc}") from exc
        if self.model.SubgraphsLength() != 1:
            raise NasError(f"TFLite file '{path}' has several subgraphs: expected one model")
        if self.graph.InputsLength() != 1 or self.graph.OutputsLength() != 1:
            raise NasError(
                f"TFLite file '{path}' has {self.graph.InputsLength()} inputs and "
                f"{self.graph.OutputsLength()} outputs: expected one image in, one map out"
            )

    def op_name(self, op) -> str:
        code = self.model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == self.tflite.BuiltinOperator.CUSTOM:
            return code.CustomCode().decode()
        return self.tflite.opcode2name(builtin)

    def tensor(self, index: int):
        return self.graph.Tensors(index)

    def name(self, index: int) -> str:
        return self.tensor(index).Name().decode()

    def shape(self, index: int) -> list[int]:
        t = self.tensor(index)
        return [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []

    def constant(self, index: int) -> np.ndarray | None:
        """A tensor's stored value (float32 for float16), None where it is computed."""
        t = self.tensor(index)
        buffer = self.model.Buffers(t.Buffer())
        offset = buffer.Offset() if hasattr(buffer, "Offset") else 0
        if offset > 1:  # stored after the flatbuffer (large models)
            raw = self.data[offset : offset + buffer.Size()]
        elif buffer.DataLength():
            raw = buffer.DataAsNumpy().tobytes()
        else:
            return None
        dtype = _NUMPY.get(t.Type())
        if dtype is None:
            raise NasError(f"TFLite tensor '{self.name(index)}' has type {t.Type()}: not read")
        value = np.frombuffer(raw, dtype=dtype).reshape(self.shape(index))
        return value.astype(np.float32) if dtype == np.float16 else value

    def options(self, op, kind):
        table = op.BuiltinOptions()
        found = kind()
        found.Init(table.Bytes, table.Pos)
        return found


def _nchw(value: np.ndarray) -> torch.Tensor:
    """A constant operand in NHWC broadcast form, for NCHW tensors."""
    t = torch.from_numpy(np.array(value, dtype=np.float32))
    if t.dim() == 4:
        return t.permute(0, 3, 1, 2).contiguous()
    if t.dim() == 1:
        return t.view(1, -1, 1, 1)
    if t.dim() == 0:
        return t
    raise NasError(f"a constant operand of shape {tuple(t.shape)}: expected NHWC, C or a scalar")


def convert_tflite(path: str | Path) -> tuple[TFLiteNet, tuple[int, int]]:
    """A TFLite file as an eval-mode module (NCHW in and out) and its own input size (H, W)."""
    path = Path(path)
    if not path.is_file():
        raise NasError(f"TFLite file '{path}' does not exist: use tflite:PATH with a .tflite file")
    r = _Reader(path)
    g = r.graph
    ops = [g.Operators(i) for i in range(g.OperatorsLength())]
    for op in ops:  # refuse before any work
        name = r.op_name(op)
        if name not in SUPPORTED:
            layer = r.name(int(op.OutputsAsNumpy()[0]))
            raise NasError(
                f"TFLite file '{path}': operator {name} (layer '{layer}') is not supported; "
                f"supported: {', '.join(SUPPORTED)}"
            )
    in_shape = r.shape(int(g.Inputs(0)))
    if len(in_shape) != 4 or in_shape[3] != 3:
        raise NasError(f"TFLite file '{path}' takes {in_shape}: expected one NHWC RGB image")
    constants: dict[int, np.ndarray] = {}
    layers: dict[str, nn.Module] = {}
    plan, taken = [], set()

    def value(index: int) -> np.ndarray | None:
        if index in constants:
            return constants[index]
        found = r.constant(index)
        if found is not None:
            constants[index] = found
        return found

    for op in ops:
        kind = r.op_name(op)
        inputs = [int(i) for i in op.InputsAsNumpy()]
        out = int(op.OutputsAsNumpy()[0])
        if kind == "DEQUANTIZE":
            stored = value(inputs[0])
            if stored is not None:
                constants[out] = stored.astype(np.float32)
                continue
            module, live = Unary(lambda x: x.float()), inputs
        elif kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            module, live = _conv(r, op, kind, inputs, value), inputs[:1]
        elif kind == TRANSPOSE_BIAS:
            module, live = _transpose(r, op, inputs, value), inputs[:1]
        elif kind in ("ADD", "MUL"):
            t = r.tflite
            options = r.options(op, t.AddOptions if kind == "ADD" else t.MulOptions)
            stored = {slot: value(i) for slot, i in enumerate(inputs)}
            fixed = {slot: _nchw(v) for slot, v in stored.items() if v is not None}
            live = [i for slot, i in enumerate(inputs) if slot not in fixed]
            fn = torch.add if kind == "ADD" else torch.mul
            module = Elementwise(fn, options.FusedActivationFunction(), fixed)
        elif kind in ("HARD_SWISH", "LOGISTIC", "RELU", "RELU6"):
            fn = {"HARD_SWISH": F.hardswish, "LOGISTIC": torch.sigmoid, "RELU": F.relu}.get(
                kind, F.relu6
            )
            module, live = Unary(fn), inputs[:1]
        elif kind == "AVERAGE_POOL_2D":
            o = r.options(op, r.tflite.Pool2DOptions)
            window = (o.FilterHeight(), o.FilterWidth())
            whole = list(window) == r.shape(inputs[0])[1:3]
            stride = (o.StrideH(), o.StrideW())
            module = AveragePool(window, stride, o.Padding(), whole, o.FusedActivationFunction())
            live = inputs[:1]
        elif kind == "MEAN":
            axes = value(inputs[1])
            if axes is None:
                raise NasError(f"MEAN '{r.name(out)}' reduces over computed axes: not supported")
            nchw = {0: 0, 1: 2, 2: 3, 3: 1, -1: 1, -2: 3, -3: 2}
            keep = bool(r.options(op, r.tflite.ReducerOptions).KeepDims())
            if not keep and set(np.ravel(axes).tolist()) != {1, 2}:
                raise NasError(f"MEAN '{r.name(out)}' drops axes other than H and W: not supported")
            dims = tuple(sorted(nchw[int(a)] for a in np.ravel(axes)))
            module, live = Mean(dims, keep), inputs[:1]
        else:  # RESIZE_BILINEAR
            o = r.options(op, r.tflite.ResizeBilinearOptions)
            if not (o.AlignCorners() or o.HalfPixelCenters()):
                raise NasError(
                    f"TFLite file '{path}': RESIZE_BILINEAR (layer '{r.name(out)}') with neither "
                    "aligned corners nor half-pixel centres (TF1's legacy sampling) is not "
                    "supported"
                )
            size = value(inputs[1])
            h, w = r.shape(inputs[0])[1:3]
            module = ResizeBilinear((float(size[0]) / h, float(size[1]) / w), o.AlignCorners())
            live = inputs[:1]
        name = _module_name(r.name(out), taken)
        layers[name] = module
        plan.append((name, live, out))
    net = TFLiteNet(layers, plan, int(g.Inputs(0)), int(g.Outputs(0)))
    return net.eval(), (in_shape[1], in_shape[2])


def _conv(r: _Reader, op, kind: str, inputs: list[int], value) -> Conv:
    t = r.tflite
    depthwise = kind == "DEPTHWISE_CONV_2D"
    o = r.options(op, t.DepthwiseConv2DOptions if depthwise else t.Conv2DOptions)
    weight = value(inputs[1])
    bias = value(inputs[2]) if len(inputs) > 2 and inputs[2] >= 0 else None
    if weight is None:
        raise NasError(f"{kind} '{r.name(int(op.OutputsAsNumpy()[0]))}' has computed weights")
    w = torch.from_numpy(np.array(weight, dtype=np.float32))
    if depthwise:  # 1 x H x W x (C * multiplier)
        c_in = r.shape(inputs[0])[3]
        w = w.permute(3, 0, 1, 2).contiguous()
        groups = c_in
    else:  # O x H x W x I
        w = w.permute(0, 3, 1, 2).contiguous()
        groups = 1
    c_out, per_group, kh, kw = w.shape
    conv = nn.Conv2d(
        per_group * groups,
        c_out,
        (kh, kw),
        stride=(o.StrideH(), o.StrideW()),
        dilation=(o.DilationHFactor(), o.DilationWFactor()),
        groups=groups,
        bias=bias is not None,
    )
    with torch.no_grad():
        conv.weight.copy_(w)
        if bias is not None:
            conv.bias.copy_(torch.from_numpy(np.array(bias, dtype=np.float32)))
    return Conv(conv, o.Padding(), o.FusedActivationFunction())


def _transpose(r: _Reader, op, inputs: list[int], value) -> TransposeBias:
    raw = bytes(op.CustomOptionsAsNumpy()) if op.CustomOptionsLength() else b""
    if len(raw) < 12:
        raise NasError(
            f"{TRANSPOSE_BIAS} '{r.name(int(op.OutputsAsNumpy()[0]))}' lacks its options "
            "(padding, stride width, stride height)"
        )
    padding, stride_w, stride_h = np.frombuffer(raw[:12], dtype=np.int32)
    weight = torch.from_numpy(np.array(value(inputs[1]), dtype=np.float32))  # O x H x W x I
    bias = torch.from_numpy(np.array(value(inputs[2]), dtype=np.float32))
    c_out, kh, kw, c_in = weight.shape
    deconv = nn.ConvTranspose2d(c_in, c_out, (kh, kw), stride=(int(stride_h), int(stride_w)))
    with torch.no_grad():
        deconv.weight.copy_(weight.permute(3, 0, 1, 2))
        deconv.bias.copy_(bias)
    return TransposeBias(deconv, int(padding))


def tflite_teacher(
    path: str | Path,
    *,
    name: str | None = None,
    input_spec: InputSpec | None = None,
    output_kind: OutputKind | None = None,
    device: str = "cpu",
) -> Teacher:
    """A teacher from a TFLite file; unknown feeding details default to [0, 1] RGB inputs at
    the file's own size, and the output kind is read off the output's shape."""
    module, size = convert_tflite(path)
    spec = input_spec or InputSpec(**UNIT_RANGE, size_multiple=1, default_size=size)
    return file_teacher(
        module,
        path,
        name=name or f"tflite:{path}",
        input_spec=spec,
        output_kind=output_kind,
        device=device,
    )
