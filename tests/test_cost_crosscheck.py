"""The cost model against independent counters: torch's FlopCounterMode, fvcore and thop.

`conv_macs` / `conv_out_size` are checked on random conv shapes, and every conv of real teachers
(`layer_graph`) against the per-module figures of three counters that share no code with it.
"""

from __future__ import annotations

import copy
import random
import warnings
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nas.cost.macs import conv_out_size, count_macs, count_macs_by_module
from nas.graph.layers import ConvLayer, conv_macs, layer_graph
from nas.teachers import TEACHERS
from nas.teachers.base import select_output

with warnings.catch_warnings():
    # Both import fine on torch 2.13 but warn: fvcore's focal loss is `torch.jit.script`ed at
    # import, and thop 0.1.1 compares torch versions with distutils' deprecated LooseVersion.
    warnings.simplefilter("ignore", DeprecationWarning)
    import thop
    from fvcore.nn import FlopCountAnalysis

SEED = 20240521
N_SHAPES = 300
SIZE = (160, 224)  # non-square; a multiple of 32, so every teacher (PP-OCRv4 too) accepts it
CROSS_SIZE = (128, 128)  # for the real-tensor runs of fvcore and thop
REL_TOL = 0.01
# Not the converted files: PP-OCRv4 (ONNX) and MediaPipe's selfie models (TFLite, whose
# transposed conv is counted but is no searched layer).
TORCHVISION_TEACHERS = [
    name for name in TEACHERS if name not in ("ppocrv4_det", "selfie", "selfie_landscape")
]
# The segmentation family: convs are its only counted ops (classifiers add their Linear heads).
SEGMENTATION_TEACHERS = [
    name for name in TORCHVISION_TEACHERS if name not in ("resnet50", "mobilenet_v3_large")
]


# --- conv_macs and conv_out_size on random shapes -------------------------------------------


@dataclass(frozen=True)
class ConvCase:
    batch: int
    c_in: int
    c_out: int
    groups: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    in_hw: tuple[int, int]
    bias: bool

    @property
    def out_hw(self) -> tuple[int, int]:
        return tuple(
            conv_out_size(
                self.in_hw[axis],
                kernel=self.kernel[axis],
                stride=self.stride[axis],
                padding=self.padding[axis],
                dilation=self.dilation[axis],
            )
            for axis in (0, 1)
        )


def _random_case(rng: random.Random) -> ConvCase:
    kind = rng.choice(["dense", "grouped", "depthwise"])
    if kind == "depthwise":
        c_in = rng.randint(2, 16)
        groups, c_out = c_in, c_in * rng.randint(1, 3)
    else:
        groups = 1 if kind == "dense" else rng.randint(2, 4)
        c_in, c_out = groups * rng.randint(1, 5), groups * rng.randint(1, 5)
    kernel = (rng.randint(1, 5), rng.randint(1, 5))
    stride = (rng.randint(1, 3), rng.randint(1, 3))
    padding = (rng.randint(0, 3), rng.randint(0, 3))
    dilation = (rng.randint(1, 3), rng.randint(1, 3))
    # the smallest input that leaves one output element, then up to 20 more (odd and even)
    smallest = [
        max(1, d * (k - 1) + 1 - 2 * p) for k, p, d in zip(kernel, padding, dilation, strict=True)
    ]
    in_hw = (rng.randint(smallest[0], smallest[0] + 20), rng.randint(smallest[1], smallest[1] + 20))
    return ConvCase(
        batch=rng.randint(1, 3),
        c_in=c_in,
        c_out=c_out,
        groups=groups,
        kernel=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        in_hw=in_hw,
        bias=rng.random() < 0.5,
    )


_rng = random.Random(SEED)
CASES = [_random_case(_rng) for _ in range(N_SHAPES)]


def test_random_shapes_cover_the_promised_cases():
    """The seeded sample really contains every kind of conv the checks below claim to cover."""
    assert {c.stride[0] for c in CASES} == {1, 2, 3}
    assert {c.dilation[1] for c in CASES} == {1, 2, 3}
    assert {c.padding[0] for c in CASES} == {0, 1, 2, 3}
    assert any(c.groups == c.c_in > 1 for c in CASES)  # depthwise
    assert any(1 < c.groups < c.c_in and c.c_out % c.groups == 0 for c in CASES)  # grouped
    assert any(c.kernel[0] != c.kernel[1] for c in CASES)
    assert {h % 2 for c in CASES for h in c.in_hw} == {0, 1}
    assert any(1 in c.out_hw for c in CASES)  # some convs shrink an axis to one element
    assert {c.bias for c in CASES} == {False, True}


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_conv_macs_and_out_size_match_torch(device):
    """`conv_out_size` is the real output shape; `conv_macs` is FlopCounterMode's flops / 2."""
    for case in CASES:
        conv = nn.Conv2d(
            case.c_in,
            case.c_out,
            case.kernel,
            stride=case.stride,
            padding=case.padding,
            dilation=case.dilation,
            groups=case.groups,
            bias=case.bias,
            device=device,
        )
        x = torch.zeros(case.batch, case.c_in, *case.in_hw, device=device)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            y = conv(x)
        assert tuple(y.shape) == (case.batch, case.c_out, *case.out_hw), case
        macs = conv_macs(
            c_in=case.c_in,
            c_out=case.c_out,
            kernel=case.kernel,
            out_hw=case.out_hw,
            groups=case.groups,
        )
        assert counter.get_total_flops() == 2 * case.batch * macs, case


# --- teachers ----------------------------------------------------------------------------------


def _device_for(name: str) -> str:
    # ONNX teachers are always real; the torchvision family is costed on `meta` in no time.
    return "cpu" if name == "ppocrv4_det" else "meta"


class _TensorOutput(nn.Module):
    """A teacher's module returning its one output tensor (as `Teacher.__call__` does).

    fvcore and thop want a tensor, and torchvision's segmentation models return a dict. The
    module is registered as `net`, so counters name its modules `net.<teacher path>`.
    """

    def __init__(self, module: nn.Module, output_key: str | None) -> None:
        super().__init__()
        self.net = module
        self.output_key = output_key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return select_output(self.net(x), self.output_key)


def _input(size: tuple[int, int]) -> torch.Tensor:
    return torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(SEED))


def _close(counted: float, layer: ConvLayer) -> bool:
    return abs(counted - layer.macs) <= REL_TOL * layer.macs


@pytest.mark.parametrize("name", list(TEACHERS))
def test_layer_macs_equal_counter_per_module(teachers, name):
    """Every conv of `layer_graph` costs exactly what the flop counter charges its module."""
    module = teachers(name, _device_for(name)).module
    layers = layer_graph(module, SIZE)
    by_module = count_macs_by_module(module, SIZE)
    n_convs = sum(isinstance(m, nn.Conv2d) for m in module.modules())
    assert len(layers) == n_convs > 0  # every conv ran, so the graph lists all of them
    for layer in layers:
        assert layer.macs == by_module[layer.path], layer
    assert sum(layer.macs for layer in layers) <= by_module[""]


@pytest.mark.parametrize("name", SEGMENTATION_TEACHERS)
def test_conv_macs_sum_to_total(teachers, name):
    """In the torchvision family convs are the only counted ops: their sum is `count_macs`."""
    module = teachers(name, "meta").module
    for size in (SIZE, (520, 520)):
        assert sum(layer.macs for layer in layer_graph(module, size)) == count_macs(module, size)


@pytest.mark.parametrize("name", ["deeplabv3", "lraspp_mobilenet_v3_large"])
def test_layer_macs_match_fvcore(teachers, name):
    """fvcore's per-module conv count (one per multiply-add) agrees with every layer within 1%."""
    teacher = teachers(name)
    layers = layer_graph(teacher.module, CROSS_SIZE)
    analysis = (
        FlopCountAnalysis(_TensorOutput(teacher.module, teacher.output_key), _input(CROSS_SIZE))
        .unsupported_ops_warnings(False)
        .uncalled_modules_warnings(False)
    )
    by_module = analysis.by_module()
    for layer in layers:
        counted = by_module["net." + layer.path]
        assert _close(counted, layer), (layer, counted)
    conv_total = sum(layer.macs for layer in layers)
    assert abs(analysis.by_operator()["conv"] - conv_total) <= REL_TOL * conv_total


def _thop_ops_by_path(info: dict, prefix: str = "") -> dict[str, float]:
    """Flatten thop's `ret_layer_info` tree {child: (ops, params, children)} to {path: ops}."""
    flat = {}
    for child, (ops, _params, children) in info.items():
        path = prefix + child
        flat[path] = ops
        flat.update(_thop_ops_by_path(children, path + "."))
    return flat


@pytest.mark.parametrize("name", ["deeplabv3", "lraspp_mobilenet_v3_large"])
def test_layer_macs_match_thop(teachers, name):
    """thop's per-conv `total_ops` agrees with every layer within 1%, and so do the totals.

    thop 0.1.1 (post2209072238) does not charge a bias: `count_convNd` hands the bias to
    `calculate_conv2d_flops`, which ignores it and returns N * C_out * H * W * C_in/g * kh * kw.
    So biased convs are compared with the same bias-free figure as the others, at the same 1%.
    (An op per output element for a bias would be 1/(C_in/g * kh * kw) more: 11% for a 3x3
    depthwise conv; `test_thop_does_not_count_bias` pins the convention down.)
    """
    teacher = teachers(name)
    layers = layer_graph(teacher.module, CROSS_SIZE)
    assert any(layer.bias for layer in layers)  # the claim above is exercised
    # thop adds buffers to the modules it profiles: give it a copy.
    wrapped = _TensorOutput(copy.deepcopy(teacher.module), teacher.output_key)
    _total, _params, info = thop.profile(
        wrapped, inputs=(_input(CROSS_SIZE),), verbose=False, ret_layer_info=True
    )
    ops = _thop_ops_by_path(info)
    for layer in layers:
        counted = ops["net." + layer.path]
        assert _close(counted, layer), (layer, counted)
    conv_total = sum(layer.macs for layer in layers)
    thop_conv_total = sum(ops["net." + layer.path] for layer in layers)
    assert abs(thop_conv_total - conv_total) <= REL_TOL * conv_total


def test_thop_does_not_count_bias():
    """thop charges a biased depthwise conv exactly its multiply-adds, like `conv_macs`."""
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=True)
    x = torch.zeros(1, 8, 9, 9)
    ops, _params = thop.profile(copy.deepcopy(conv), inputs=(x,), verbose=False)
    assert ops == conv_macs(c_in=8, c_out=8, kernel=(3, 3), out_hw=(9, 9), groups=8)
