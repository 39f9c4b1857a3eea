"""Liveness: the wiring between searched layers is read off the network, and the layers that a
`zero` leaves with nothing to do change no output when they are made `zero` themselves."""

import random

import pytest
import torch
from torch import nn

from nas.cost.amortised import amortised
from nas.delta.liveness import INPUT, NO_CHANGE, OUTPUT, idle_layers, layer_sources
from nas.delta.model import DeltaModel
from nas.graph.layers import layer_graph
from nas.searching.export import LayerChoice, export_choices
from search_spaces import build_candidate


class Branchy(nn.Module):
    """expand -> depthwise -> project with a residual, then a head reading two branches."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.expand = nn.Conv2d(8, 16, 1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.project = nn.Conv2d(16, 8, 1)
        self.side = nn.Conv2d(3, 8, 1)  # reads the frame directly
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        stem = torch.relu(self.stem(x))
        y = self.project(torch.relu(self.dw(torch.relu(self.expand(stem))))) + stem
        return self.head(torch.relu(y) * torch.sigmoid(self.side(x)))


def _model(module: nn.Module, size, picks=None, output_key=None) -> DeltaModel:
    layers = layer_graph(module, size)
    picks = picks or {}

    def make(layer, conv):
        return build_candidate(picks.get(layer.path, "full"), layer, weight=conv.weight.detach())

    return DeltaModel.build(module, layers, make, output_key=output_key)


SOURCES = {  # the wiring of `Branchy`
    "stem": (INPUT,),
    "expand": ("stem",),
    "dw": ("expand",),
    "project": ("dw",),
    "side": (INPUT,),
    "head": ("project", "side", "stem"),
    OUTPUT: ("head",),
}


def test_sources_are_the_wiring_of_the_network():
    assert layer_sources(_model(Branchy().eval(), (12, 16)), (12, 16)) == SOURCES


@pytest.mark.parametrize(
    ("blocking", "idle"),
    [
        (set(), set()),
        ({"dw"}, {"expand", "dw", "project"}),  # project is dead, expand unused
        ({"project"}, {"expand", "dw", "project"}),
        ({"stem"}, {"stem", "expand", "dw", "project"}),  # the residual is closed too
        ({"head"}, set(SOURCES) - {OUTPUT}),  # nothing reaches the output
        ({"side", "stem"}, {"side", "stem", "expand", "dw", "project", "head"}),
    ],
)
def test_idle_layers(blocking, idle):
    assert idle_layers(SOURCES, blocking) == idle


def _delta_output(model: DeltaModel, key: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        model.key_frame(key)
        return model.delta_frame(frame).clone()


@pytest.mark.parametrize("seed", range(4))
def test_idle_layers_made_zero_change_nothing(seed, teachers):
    """On MobileNetV3-DeepLabV3 with random `zero`s: the delta model's output on a frame is
    bitwise the same when every idle layer runs `zero` instead of its block."""
    teacher = teachers("deeplabv3")
    size = (64, 96)
    layers = layer_graph(teacher.module, size)
    rng = random.Random(seed)
    picks = {
        layer.path: rng.choice([NO_CHANGE, "full", "full", "lowrank_r4", "down2_full"])
        if layer.groups == 1
        else rng.choice([NO_CHANGE, "full", "full"])
        for layer in layers
    }
    model = _model(teacher.module, size, picks, teacher.output_key)
    idle = idle_layers(layer_sources(model, size), {p for p, c in picks.items() if c == NO_CHANGE})
    assert idle - {p for p, c in picks.items() if c == NO_CHANGE}  # some blocks have no work
    pruned = _model(
        teacher.module, size, {p: NO_CHANGE if p in idle else c for p, c in picks.items()},
        teacher.output_key,
    )  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    key = torch.randn(1, 3, *size, generator=g)
    frame = key + 0.3 * torch.randn(1, 3, *size, generator=g)
    expected = _delta_output(model, key, frame)
    assert torch.equal(_delta_output(pruned, key, frame), expected)
    if len(idle) < len(layers):  # the output still moves with the frame where a path is open
        assert not torch.equal(expected, _delta_output(pruned, key, key))


def test_export_pays_only_for_blocks_that_run():
    """A chain a -> b -> c beside d: with `a` zero, b and c are idle, and what they would cost
    goes to d."""
    sources = {"a": (INPUT,), "b": ("a",), "c": ("b",), "d": (INPUT,), OUTPUT: ("c", "d")}
    names = (NO_CHANGE, "mid", "full")
    cost = {NO_CHANGE: 0, "mid": 50, "full": 100}
    choices = [
        LayerChoice("a", names, (0, 50, 100), (0.0, -30.0, -30.0)),  # sure of zero
        LayerChoice("b", names, (0, 50, 100), (-9.0, 0.0, -5.0)),
        LayerChoice("c", names, (0, 50, 100), (-9.0, 0.0, -5.0)),
        LayerChoice("d", names, (0, 50, 100), (-1.0, 0.0, -0.5)),
    ]
    args = dict(keyframe_cost=0, other_cost=0, interval=2, budget=75)  # delta frame <= 150
    blind = export_choices(choices, **args)
    assert blind == {"a": NO_CHANGE, "b": "mid", "c": "mid", "d": "mid"}  # b, c: for nothing
    seen = export_choices(choices, **args, sources=sources)
    assert seen == {"a": NO_CHANGE, "b": NO_CHANGE, "c": NO_CHANGE, "d": "full"}
    assert amortised(0, sum(cost[seen[p]] for p in "abcd"), 2) <= 75
    # Less sure of zero: opening `a` (and paying for b and c) scores better than closing it.
    unsure = [LayerChoice("a", names, (0, 50, 100), (0.0, -5.0, -9.0)), *choices[1:]]
    opened = export_choices(unsure, **args, sources=sources)
    assert opened == {"a": "mid", "b": "mid", "c": "mid", "d": NO_CHANGE}


def test_export_opens_a_path_that_two_zeros_close():
    """a -> b -> c with a and b most probably zero: no single step opens the chain, but c is
    sure it has work to do; starting from no zero finds the open chain."""
    sources = {"a": (INPUT,), "b": ("a",), "c": ("b",), OUTPUT: ("c",)}
    names = (NO_CHANGE, "mid", "full")
    choices = [
        LayerChoice("a", names, (0, 50, 100), (-0.5, -1.0, -3.0)),
        LayerChoice("b", names, (0, 50, 100), (-0.5, -1.0, -3.0)),
        LayerChoice("c", names, (0, 50, 100), (-9.0, 0.0, -5.0)),
    ]
    args = dict(keyframe_cost=0, other_cost=0, interval=2, budget=75, fill=False)
    assert export_choices(choices, **args) == {"a": NO_CHANGE, "b": NO_CHANGE, "c": "mid"}
    assert export_choices(choices, **args, sources=sources) == {"a": "mid", "b": "mid", "c": "mid"}


@pytest.mark.parametrize("seed", range(10))
def test_exported_layers_are_never_idle_unless_zero(seed):
    rng = random.Random(seed)
    paths = [f"l{i}" for i in range(8)]
    sources = {
        path: tuple(sorted({INPUT} if i == 0 else set(rng.sample(paths[:i], rng.randint(1, i)))))
        for i, path in enumerate(paths)
    } | {OUTPUT: (paths[-1],)}
    names = (NO_CHANGE, "mid", "full")
    choices = [
        LayerChoice(
            p, names, (0, rng.randint(10, 60), 100), tuple(rng.uniform(-4, 0) for _ in names)
        )
        for p in paths
    ]
    budget = rng.uniform(50, 400)
    picks = export_choices(
        choices, keyframe_cost=0, other_cost=0, interval=2, budget=budget, sources=sources
    )
    idle = idle_layers(sources, {p for p, c in picks.items() if c == NO_CHANGE})
    assert all(picks[p] == NO_CHANGE for p in idle)
    costs = {c.path: dict(zip(c.names, c.cost, strict=True)) for c in choices}
    assert amortised(0, sum(costs[p][picks[p]] for p in paths), 2) <= budget
