"""The delta model: BN folding is exact, `full` blocks reproduce the teacher, one path a step."""

import copy

import pytest
import torch
from torch import nn

from nas.cost.amortised import amortised, smallest_interval
from nas.delta.model import DeltaModel
from nas.graph.fold import fold_batchnorms
from nas.graph.layers import layer_graph
from nas.searching.mixed import MixedDelta
from nas.teachers import load_teacher


def _randomise_batchnorms(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.normal_(0, 0.2, generator=g)


def _copy_without_bias(layer, conv: nn.Conv2d) -> nn.Conv2d:
    block = copy.deepcopy(conv)
    block.bias = None
    return block


@pytest.fixture(scope="module")
def deeplab():
    teacher = load_teacher("deeplabv3")
    _randomise_batchnorms(teacher.module)
    return teacher


def test_folding_is_exact(deeplab):
    layers = layer_graph(deeplab.module, (96, 128))
    folded = fold_batchnorms(deeplab.module, layers)
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = deeplab(x), folded(x)["out"]
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules() if m is not None) or any(
        layer.bn_path is None for layer in layers
    )
    assert sum(isinstance(m, nn.BatchNorm2d) for m in deeplab.module.modules()) > 0  # original kept


@pytest.mark.parametrize("name", ["deeplabv3", "ppocrv4_det"])
def test_full_blocks_reproduce_teacher_on_frame_t(name, deeplab):
    """z_t = z_k + W'(a_t - a_k) with the teacher's own (folded) weights is exact."""
    teacher = deeplab if name == "deeplabv3" else load_teacher(name)
    size = (96, 128)
    layers = layer_graph(teacher.module, size)
    model = DeltaModel.build(
        teacher.module, layers, _copy_without_bias, output_key=teacher.output_key
    )
    g = torch.Generator().manual_seed(0)
    x_key = torch.randn(2, 3, *size, generator=g)
    x_t = x_key + 0.5 * torch.randn(2, 3, *size, generator=g)
    with torch.no_grad():
        model.key_frame(x_key)
        y = model.delta_frame(x_t)
        expected = teacher(x_t)
    scale = expected.abs().max()
    assert (y - expected).abs().max() <= 1e-4 * max(1.0, float(scale))
    assert not torch.allclose(teacher(x_key), expected)  # the frames really differ


def test_zero_blocks_reuse_the_key_frame(deeplab):
    size = (64, 64)
    layers = layer_graph(deeplab.module, size)

    class Zero(nn.Module):
        def forward(self, x):
            return torch.zeros(1)

    model = DeltaModel.build(deeplab.module, layers, lambda layer, conv: Zero(), output_key="out")
    x_key = torch.randn(1, 3, *size)
    with torch.no_grad():
        key_out = model.key_frame(x_key)
        # The first conv's prediction is its key output; later layers see the same inputs too.
        y = model.delta_frame(x_key + 1.0)
    assert torch.allclose(y, key_out, atol=1e-6)


def test_delta_without_key_frame_is_refused(deeplab):
    layers = layer_graph(deeplab.module, (32, 32))
    model = DeltaModel.build(deeplab.module, layers, _copy_without_bias, output_key="out")
    with pytest.raises(RuntimeError, match="run the key frame first"):
        model.delta_frame(torch.randn(1, 3, 32, 32))


def test_mixed_layer_samples_one_path_and_straight_through():
    calls = []

    class Probe(nn.Module):
        def __init__(self, i):
            super().__init__()
            self.i = i

        def forward(self, x):
            calls.append(self.i)
            return x * (self.i + 1)

    mixed = MixedDelta(["a", "b", "c"], [Probe(0), Probe(1), Probe(2)], [10, 20, 30])
    mixed.generator = torch.Generator().manual_seed(0)
    mixed.train()
    x = torch.ones(3)
    out = mixed(x)
    assert len(calls) == 1 and torch.equal(out.detach(), x * (calls[0] + 1))
    out.sum().backward()
    assert mixed.logits.grad is not None and mixed.logits.grad.abs().sum() > 0
    expected = mixed.expected_cost()
    assert float(expected) == pytest.approx(20.0)  # uniform logits: mean cost
    expected.backward()
    mixed.eval()
    mixed.logits.data = torch.tensor([0.0, 5.0, 0.0])
    calls.clear()
    mixed(x)
    assert calls == [1]
    mixed.fixed = 2
    calls.clear()
    mixed(x)
    assert calls == [2]


def test_sampling_follows_the_logits():
    mixed = MixedDelta(["a", "b"], [nn.Identity(), nn.Identity()], [1, 2])
    mixed.generator = torch.Generator().manual_seed(0)
    mixed.logits.data = torch.tensor([0.0, torch.log(torch.tensor(3.0))])  # p = 1/4, 3/4
    mixed.train()
    picks = []
    for _ in range(2000):
        mixed.sample()
        mixed(torch.ones(1))
        picks.append(mixed.last_choice)
    assert sum(picks) / len(picks) == pytest.approx(0.75, abs=0.03)


def test_amortised_and_smallest_interval():
    assert amortised(90.0, 30.0, 3) == pytest.approx(50.0)
    # teacher 90, cheapest delta 0: budget 30 needs K >= 3; budget 45 needs K >= 2.
    assert smallest_interval(90.0, 0.0, 30.0) == 3
    assert smallest_interval(90.0, 0.0, 45.0) == 2
    assert smallest_interval(90.0, 10.0, 10.0) is None
    k = smallest_interval(90.0, 10.0, 25.0)
    assert amortised(90.0, 10.0, k) <= 25.0 < amortised(90.0, 10.0, k - 1)


class _InPlaceResidual(nn.Module):
    """Writes into conv outputs in place, as ResNets and MobileNets do."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 3, 3, padding=1)
        self.b = nn.Conv2d(3, 3, 3, padding=1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.act(self.a(x))
        out = self.b(y)
        out += y  # in place into b's output
        return out


@pytest.mark.parametrize("mode", ["inference", "no_grad"])
def test_in_place_networks_keep_correct_caches(mode):
    net = _InPlaceResidual().eval()
    layers = layer_graph(net, (8, 8))
    model = DeltaModel.build(net, layers, _copy_without_bias)
    g = torch.Generator().manual_seed(0)
    frames = [torch.randn(1, 3, 8, 8, generator=g) for _ in range(3)]
    context = torch.inference_mode if mode == "inference" else torch.no_grad
    with context():
        model.key_frame(frames[0])
        outputs = [model.delta_frame(x) for x in frames[1:]]
        expected = [net(x) for x in frames[1:]]
    for got, want in zip(outputs, expected, strict=True):
        assert torch.allclose(got, want, atol=1e-5)
    copied = {layer.path: conv.copy_cache for layer, conv in model.delta_convs()}
    assert copied == {"a": False, "b": True}  # only b's output is written to in place


def test_training_mode_leaves_the_teacher_in_eval():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Dropout(0.5))
    net.eval()
    layers = layer_graph(net, (8, 8))
    model = DeltaModel.build(net, layers, _copy_without_bias).train()
    assert model.training and not model.net[2].training and not model.net[3].training
    ((_, conv),) = model.delta_convs()
    assert conv.block.training
    stats = model.net[2].running_mean.clone()
    x = torch.randn(2, 3, 8, 8)
    first = model.key_frame(x)
    assert torch.equal(model.key_frame(x), first)  # no dropout, no batch statistics
    assert torch.equal(model.net[2].running_mean, stats)


class _Zero(nn.Module):
    delta_shortcut = "key"

    def forward(self, x):
        return torch.zeros_like(x)


def test_in_place_activations_on_delta_frames_never_touch_the_key_caches():
    net = _InPlaceResidual().eval()
    layers = layer_graph(net, (8, 8))
    model = DeltaModel.build(
        net,
        layers,
        lambda layer, conv: _Zero() if layer.path == "a" else _copy_without_bias(layer, conv),
    )
    g = torch.Generator().manual_seed(1)
    frames = [torch.randn(1, 3, 8, 8, generator=g) for _ in range(3)]
    with torch.inference_mode():
        model.key_frame(frames[0])
        conv_a = model.net.get_submodule("a")
        key_out = conv_a.z_key.clone()
        first = model.delta_frame(frames[1])
        second = model.delta_frame(frames[1])
    # The ReLU after `a` ran in place on the delta frames, on a copy of a's cached output.
    assert torch.equal(conv_a.z_key, key_out) and (key_out < 0).any()
    assert torch.equal(first, second)
    assert model._inplace == [model.net.act] and model.net.act.inplace is False
    with torch.inference_mode():
        expected = net.b(torch.relu(key_out)) + torch.relu(key_out)
    assert torch.allclose(first, expected, atol=1e-5)


class _Branches(nn.Module):
    """Three convs reading one input, as ASPP's parallel branches do."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.branches = nn.ModuleList(nn.Conv2d(4, 2, 3, padding=d, dilation=d) for d in (1, 2, 3))

    def forward(self, x):
        y = torch.relu(self.stem(x))
        return torch.cat([branch(y) for branch in self.branches], dim=1)


class _Halve(nn.Module):
    """A linear block that is not the conv itself (no shortcut): half the conv's change."""

    def __init__(self, conv):
        super().__init__()
        self.conv = _copy_without_bias(None, conv)

    def forward(self, x):
        return 0.5 * self.conv(x)


def test_parallel_branches_share_one_input_change_per_frame():
    net = _Branches().eval()
    layers = layer_graph(net, (8, 8))
    model = DeltaModel.build(net, layers, lambda layer, conv: _Halve(conv))
    g = torch.Generator().manual_seed(2)
    key, frame = (torch.randn(1, 3, 8, 8, generator=g) for _ in range(2))
    subtractions = []

    def count(module, args):
        subtractions.append(
            module.frame.shared_deltas is not None and len(module.frame.shared_deltas)
        )

    branches = [model.net.get_submodule(f"branches.{i}") for i in range(3)]
    for conv in branches:
        conv.register_forward_pre_hook(count)
    with torch.inference_mode():
        model.key_frame(key)
        subtractions.clear()
        shared = model.delta_frame(frame)
        seen = list(subtractions)
    with torch.no_grad():  # the search's path: every layer subtracts its own key
        model.key_frame(key)
        alone = model.delta_frame(frame)
    torch.testing.assert_close(shared, alone)
    # Before the branches: the stem's input change; the first branch adds the shared input's,
    # which the other two find.
    assert seen == [1, 2, 2]
    assert all(conv.frame.shared_deltas is None for conv in branches)  # nothing kept past the frame


def _lowrank_model(teacher, size):
    """deeplabv3 with low-rank blocks in the head (a block runs, not a shortcut)."""
    from search_spaces import build_candidate

    layers = layer_graph(teacher.module, size)

    def make(layer, conv):
        name = "lowrank_r8" if layer.path.startswith("classifier") else "full"
        return build_candidate(name, layer, weight=conv.weight.detach())

    return DeltaModel.build(teacher.module, layers, make, output_key="out").eval()


def test_channels_last_model_converts_mixed_layout_inputs(deeplab):
    """ASPP concatenates a channels-last map with an upsampled 1 x 1 one, which comes out NCHW;
    a channels-last delta model hands its projection a channels-last input, with the same
    result as the model run in NCHW."""
    size = (64, 64)
    g = torch.Generator().manual_seed(3)
    key = torch.randn(1, 3, *size, generator=g)
    frame = key + 0.3 * torch.randn(1, 3, *size, generator=g)
    plain = _lowrank_model(deeplab, size)
    fast = _lowrank_model(deeplab, size).to(memory_format=torch.channels_last)
    seen = []
    project = fast.net.get_submodule("classifier.0.project.0")
    project.block.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    with torch.inference_mode():
        plain.key_frame(key)
        expected = plain.delta_frame(frame)
        fast.key_frame(key.to(memory_format=torch.channels_last))
        got = fast.delta_frame(frame.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert seen == [True]
    # Unconverted, the concatenation really is NCHW: the conversion is what made it so.
    cat = []
    fast.net.get_submodule("classifier.0.project").register_forward_pre_hook(
        lambda module, args: cat.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    with torch.inference_mode():
        fast.delta_frame(frame.to(memory_format=torch.channels_last))
    assert cat == [False]
