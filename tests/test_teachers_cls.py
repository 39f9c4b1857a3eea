"""The classification teachers (ResNet-50, MobileNetV3-Large) against independent references.

Costs against torchvision's published figures (its weights' metadata, and the numbers printed
in its model table), per-conv multiply-adds against fvcore and thop, the layer graph against the
model's own modules, and the teacher itself on a real frame and with a user's checkpoint.
"""

from __future__ import annotations

import copy
import hashlib
import warnings

import pytest
import torch
from torch import nn

from nas.core.errors import NasError
from nas.core.torchvision_compat import import_torchvision
from nas.cost.macs import cost_report, count_macs
from nas.data import load_frames, open_video
from nas.graph.layers import layer_graph
from nas.searching.options import SearchOptions
from nas.searching.pipeline import search
from nas.teachers import OutputKind, load_teacher
from nas.teachers.base import IMAGENET
from nas.teachers.weights import weights_id

with warnings.catch_warnings():
    # fvcore and thop warn on import under torch 2.13 (see tests/test_cost_crosscheck.py)
    warnings.simplefilter("ignore", DeprecationWarning)
    import thop
    from fvcore.nn import FlopCountAnalysis

SIZE = (224, 224)
REL_TOL = 0.01
SEED = 20240521

# name -> (torchvision weights enum, GFLOPs and params as torchvision's model table prints them,
#          Conv2d modules of the architecture)
PUBLISHED = {
    "resnet50": ("ResNet50_Weights", 4.089, 25_557_032, 53),
    "mobilenet_v3_large": ("MobileNet_V3_Large_Weights", 0.217, 5_483_032, 62),
}
NAMES = list(PUBLISHED)


def _input(size: tuple[int, int] = SIZE) -> torch.Tensor:
    return torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(SEED))


@pytest.mark.parametrize("name", NAMES)
def test_zoo_entry(teachers, name):
    teacher = teachers(name, "meta")
    spec = teacher.input_spec
    assert teacher.output_kind is OutputKind.IMAGE_LOGITS and teacher.num_classes == 1000
    assert (spec.mean, spec.std) == (IMAGENET["mean"], IMAGENET["std"])
    assert spec.default_size == SIZE and spec.size_multiple == 32 and spec.channel_order == "rgb"
    assert teacher.weights_id == weights_id(None) and not teacher.module.training


@pytest.mark.parametrize("name", NAMES)
def test_costs_equal_torchvision_published(teachers, name):
    """GFLOPs (multiply-adds) at 224x224 and parameters, to the precision torchvision gives."""
    enum_name, gflops, params, _ = PUBLISHED[name]
    enum = getattr(import_torchvision().models, enum_name)
    for weights in enum:  # every published weight set of the architecture
        assert (weights.meta["_ops"], weights.meta["num_params"]) == (gflops, params), weights
    module = teachers(name, "meta").module
    report = cost_report(module, SIZE)
    assert round(report.macs / 1e9, 3) == gflops
    assert report.params == params
    assert count_macs(module, SIZE) == report.macs


@pytest.mark.parametrize("name", NAMES)
def test_layer_graph_lists_every_conv(teachers, name):
    """Every Conv2d module, once, in the order of the forward pass; the convs plus the Linear
    layers (in x out multiply-adds each) make up the whole count."""
    module = teachers(name, "meta").module
    convs = [path for path, m in module.named_modules() if isinstance(m, nn.Conv2d)]
    layers = layer_graph(module, SIZE)
    assert len(convs) == len(layers) == PUBLISHED[name][3]
    assert sorted(layer.path for layer in layers) == sorted(convs)
    assert all(layer.calls == 1 for layer in layers)
    linear = sum(
        m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear)
    )
    assert sum(layer.macs for layer in layers) + linear == count_macs(module, SIZE)


@pytest.mark.parametrize("name", NAMES)
def test_conv_macs_match_fvcore(teachers, name):
    """fvcore's per-module conv count agrees with every layer within 1%, and so do the totals
    of its `conv` and `linear` operators."""
    module = teachers(name).module
    layers = layer_graph(module, SIZE)
    analysis = (
        FlopCountAnalysis(module, _input())
        .unsupported_ops_warnings(False)
        .uncalled_modules_warnings(False)
    )
    by_module, by_operator = analysis.by_module(), analysis.by_operator()
    for layer in layers:
        assert abs(by_module[layer.path] - layer.macs) <= REL_TOL * layer.macs, layer
    conv_total = sum(layer.macs for layer in layers)
    assert abs(by_operator["conv"] - conv_total) <= REL_TOL * conv_total
    linear = count_macs(module, SIZE) - conv_total
    assert abs(by_operator["linear"] - linear) <= REL_TOL * linear


def _thop_ops_by_path(info: dict, prefix: str = "") -> dict[str, float]:
    """Flatten thop's `ret_layer_info` tree {child: (ops, params, children)} to {path: ops}."""
    flat = {}
    for child, (ops, _params, children) in info.items():
        flat[prefix + child] = ops
        flat.update(_thop_ops_by_path(children, prefix + child + "."))
    return flat


@pytest.mark.parametrize("name", NAMES)
def test_conv_macs_match_thop(teachers, name):
    """thop's per-conv `total_ops` agrees with every layer within 1%, and so does the total."""
    module = teachers(name).module
    layers = layer_graph(module, SIZE)
    # thop adds buffers to the modules it profiles: give it a copy.
    _total, _params, info = thop.profile(
        copy.deepcopy(module), inputs=(_input(),), verbose=False, ret_layer_info=True
    )
    ops = _thop_ops_by_path(info)
    for layer in layers:
        assert abs(ops[layer.path] - layer.macs) <= REL_TOL * layer.macs, layer
    conv_total = sum(layer.macs for layer in layers)
    assert abs(sum(ops[layer.path] for layer in layers) - conv_total) <= REL_TOL * conv_total


@pytest.fixture(scope="module")
def real_frame() -> torch.Tensor:
    """The first frame of the `carphone` sample, fitted to 224x224: 1 x 3 x H x W uint8."""
    return load_frames(open_video("sample:carphone", max_frames=1), size=SIZE).frames[:1]


@pytest.mark.parametrize("name", NAMES)
def test_output_on_a_real_frame(teachers, real_frame, name):
    teacher = teachers(name)
    with torch.no_grad():
        out = teacher(teacher.input_spec.normalize(real_frame))
    assert out.shape == (1, 1000) and out.isfinite().all()
    with torch.no_grad():  # any multiple of 32: global pooling, one prediction per frame
        assert teacher(torch.randn(2, 3, 160, 96)).shape == (2, 1000)


@pytest.mark.parametrize("name", NAMES)
def test_ten_class_checkpoint(tmp_path, real_frame, name):
    """A checkpoint with a 10-class head loads exactly; the class count comes from the file."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        state = load_teacher(name, num_classes=10).module.state_dict()
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    path = tmp_path / f"{name}.pth"
    torch.save({"model": state, "epoch": 90}, path)  # as torchvision's reference scripts write
    teacher = load_teacher(name, weights=path)
    assert teacher.num_classes == 10 and teacher.output_kind is OutputKind.IMAGE_LOGITS
    own = teacher.module.state_dict()
    assert own.keys() == state.keys() and all(torch.equal(own[k], v) for k, v in state.items())
    assert teacher.weights_id == hashlib.sha256(path.read_bytes()).hexdigest()
    with torch.no_grad():
        out = teacher(teacher.input_spec.normalize(real_frame))
    assert out.shape == (1, 10)
    with pytest.raises(NasError, match=r"shape mismatch: .*weight \(10, \d+\) vs \(7, \d+\)"):
        load_teacher(name, weights=path, num_classes=7)


@pytest.mark.parametrize("name", NAMES)
def test_num_classes_sizes_the_final_linear(name):
    teacher = load_teacher(name, num_classes=5, device="meta")
    last = [m for m in teacher.module.modules() if isinstance(m, nn.Linear)][-1]
    assert teacher.num_classes == last.out_features == 5
    with pytest.raises(NasError, match="--num-classes must be at least 1"):
        load_teacher(name, num_classes=0, device="meta")


def test_seeded_init_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a, b = load_teacher("mobilenet_v3_large"), load_teacher("mobilenet_v3_large")
    assert torch.rand(1) == expected
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.module.state_dict().values(), b.module.state_dict().values(), strict=True)
    )


def test_segmentation_checkpoint_does_not_fit_a_classifier(tmp_path):
    seg = load_teacher("lraspp_mobilenet_v3_large", num_classes=3, device="meta")
    path = tmp_path / "seg.pth"
    torch.save({k: torch.zeros(v.shape) for k, v in seg.module.state_dict().items()}, path)
    with pytest.raises(NasError, match="does not fit teacher mobilenet_v3_large; missing keys"):
        load_teacher("mobilenet_v3_large", weights=path, device="meta")


def test_delta_search_with_a_classification_teacher(tmp_path):
    """A delta-mode search distils the classifier: a spec within a budget of 60% of the
    teacher's multiply-adds at 64x64, covering every conv, with agreement in [0, 1].

    The synthetic video's 3-class pixel labels do not fit 1000 image classes, so the search
    distils without a task loss (labels are kept only where the class count matches).
    """
    size = (64, 64)
    module = load_teacher("mobilenet_v3_large", device="meta").module
    teacher_macs = count_macs(module, size)
    budget = 0.6 * teacher_macs
    result = search(
        SearchOptions(
            teacher="mobilenet_v3_large",
            video="synthetic:frames=24,size=64x64",
            input_size="64x64",
            max_frames=24,
            steps=3,
            val_batches=1,
            device="cpu",
            threads=1,
            budget=f"{budget / 1e9}GFLOPs",
            out=str(tmp_path / "run"),
        )
    )
    spec = result.spec
    assert spec.teacher.name == "mobilenet_v3_large"
    assert spec.teacher.output_kind == "image_logits" and spec.teacher.num_classes == 1000
    assert spec.totals.teacher_macs == teacher_macs
    assert spec.totals.amortised_macs <= budget
    convs = {path for path, m in module.named_modules() if isinstance(m, nn.Conv2d)}
    assert {layer.path for layer in spec.layers} == convs
    assert 0.0 <= spec.metrics["val_agreement"] <= 1.0
