"""The output-aware search objective (`nas.searching.supernet`): each layer's error weighed by its
measured output sensitivity, so that a layer whose change reaches the output is never cut for one
whose change does not."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from nas.delta.liveness import NO_CHANGE
from nas.searching.make_spec import make_spec
from nas.searching.options import SearchOptions
from nas.searching.pipeline import prepare
from nas.searching.supernet import (
    measure_all_candidates,
    measure_sensitivity,
    predicted_error,
    run_search,
)
from nas.student.baselines import uniform_spec
from nas.student.build import build_student
from nas.student.compare import Student, compare
from nas.student.losses import LossWeights, change_energy, student_losses
from search_spaces import decode
from tests.conftest import TINY_SEARCH

SIDE_SCALE = 1e-4


class Branchy(nn.Module):
    """A sequential path (stem, head) with two branches off it: `side`, added back scaled by
    1e-4, and `dead`, whose output is multiplied by 0 before it is added."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.side = nn.Conv2d(8, 8, 1)
        self.dead = nn.Conv2d(8, 3, 1)
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = h + SIDE_SCALE * self.side(h)
        return self.head(h) + 0.0 * self.dead(h)


def build_branchy() -> Branchy:
    """`tests.test_output_aware:build_branchy`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Branchy()


class EarlyCarrier(nn.Module):
    """The frame's change reaches the output through `early` (3 -> 16, 5x5) and `head` alone;
    four dearer 3x3 convs on a side branch (about 95% of the teacher's multiply-adds) add
    back only a hundredth of their output."""

    def __init__(self) -> None:
        super().__init__()
        self.early = nn.Conv2d(3, 16, 5, padding=2)
        widths = [16, 32, 32, 32, 16]
        self.side = nn.Sequential(
            *(
                nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.ReLU())
                for a, b in itertools.pairwise(widths)
            )
        )
        self.head = nn.Conv2d(16, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.early(x))
        return self.head(h + 0.01 * self.side(h))


def build_carrier() -> EarlyCarrier:
    """`tests.test_output_aware:build_carrier`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return EarlyCarrier()


def _options(teacher: str, **overrides) -> SearchOptions:
    return SearchOptions(**(TINY_SEARCH | {"teacher": teacher, "budget": "1TFLOPs"} | overrides))


@pytest.fixture(scope="module")
def branchy():
    return prepare(_options("tests.test_output_aware:build_branchy"))


@pytest.fixture(scope="module")
def measured(branchy):
    """A supernet of `Branchy` after one delta step: every candidate's error and every layer's
    sensitivity measured on that step's frames."""
    net = branchy.supernet()
    generator = torch.Generator().manual_seed(0)
    net.model.train()
    for m in net.mixed.values():
        m.generator = generator
        m.sample()
    batch = branchy.next_batch(generator)
    student_losses(net.model, batch, branchy.teacher, LossWeights())
    measure_all_candidates(net)
    drawn = {path: m.last_choice for path, m in net.mixed.items()}
    found = measure_sensitivity(net, batch)
    return net, batch, found, drawn


def test_sensitivity_is_one_on_the_path_and_zero_off_it(branchy, measured):
    """On the sequential path, no change at a layer leaves the output at the key frame's: the
    sensitivity is the teacher's output change over its floored energy (~1). A branch that
    never reaches the output scores 0, one scaled by 1e-4 scores ~1e-8."""
    net, (x_key, x_t, _), found, drawn = measured
    assert set(found) == {"stem", "side", "dead", "head"}
    for path, m in net.mixed.items():
        assert float(m.sensitivity) == pytest.approx(found[path], rel=1e-6), path
        assert m.fixed is None and m.last_choice == drawn[path]  # the step's draw is kept
    with torch.no_grad():  # measured on the batch's first pair
        y_t, y_key = branchy.teacher(x_t[:1]), branchy.teacher(x_key[:1])
    by_hand = float((y_key - y_t).pow(2).mean() / change_energy(y_t, y_key))
    assert by_hand > 0.9  # the synthetic shapes move: the change dwarfs the energy's floor
    assert found["stem"] == pytest.approx(by_hand, rel=1e-3)
    assert found["head"] == pytest.approx(by_hand, rel=1e-3)
    assert found["dead"] == 0.0
    assert 0 < found["side"] < 1e-6


def test_predicted_error_weighs_layer_errors_by_sensitivity(measured):
    """sum_l s_l sum_i p_li e_li / sum_l s_l from the buffers, by hand; a layer of sensitivity 0
    neither counts nor learns from it; all sensitivities 0 fall back to the plain mean."""
    net, *_ = measured
    mixed = net.mixed
    assert all(not torch.isnan(m.error).any() for m in mixed.values())  # every one measured
    generator = torch.Generator().manual_seed(1)
    saved = {path: (m.logits.detach().clone(), m.sensitivity.clone()) for path, m in mixed.items()}
    try:
        with torch.no_grad():
            for m in mixed.values():
                m.logits.copy_(torch.randn(m.logits.shape, generator=generator))

        def by_hand() -> float:
            expected = {
                path: float((torch.softmax(m.logits.detach().double(), 0) * m.error.double()).sum())
                for path, m in mixed.items()
            }
            weights = {path: float(m.sensitivity) for path, m in mixed.items()}
            total = sum(weights.values())
            if total == 0:
                return sum(expected.values()) / len(expected)
            return sum(weights[p] * expected[p] for p in mixed) / total

        found = predicted_error(net)
        assert float(found.detach()) == pytest.approx(by_hand(), rel=1e-5)
        plain = sum(float(m.expected_error().detach()) for m in mixed.values()) / len(mixed)
        assert float(found.detach()) != pytest.approx(plain, rel=1e-3)  # not the plain mean

        for m in mixed.values():
            m.logits.grad = None
        found.backward()
        assert float(mixed["dead"].logits.grad.abs().max()) == 0.0
        assert float(mixed["stem"].logits.grad.abs().max()) > 0.0

        with torch.no_grad():
            mixed["dead"].logits.add_(torch.randn(mixed["dead"].logits.shape, generator=generator))
        assert float(predicted_error(net).detach()) == pytest.approx(
            float(found.detach()), rel=1e-6
        )

        for m in mixed.values():
            m.sensitivity.zero_()
        assert float(predicted_error(net).detach()) == pytest.approx(by_hand(), rel=1e-5)
        assert by_hand() == pytest.approx(
            sum(float(m.expected_error().detach()) for m in mixed.values()) / len(mixed), rel=1e-6
        )
    finally:
        with torch.no_grad():
            for path, m in mixed.items():
                m.logits.copy_(saved[path][0])
                m.sensitivity.copy_(saved[path][1])
                m.logits.grad = None


@pytest.mark.parametrize("sensitivity", [True, False])
def test_the_search_measures_sensitivity_only_when_asked(branchy, sensitivity):
    """`SearchConfig.sensitivity`: measured on the first step, else every layer weighs 1."""
    options = _options("tests.test_output_aware:build_branchy", steps=1)
    net = branchy.supernet()
    config = options.search_config().model_copy(update={"sensitivity": sensitivity})
    run_search(
        net,
        branchy.teacher,
        branchy.next_batch,
        budget=branchy.budget,
        interval=options.interval,
        config=config,
    )
    weights = {path: float(m.sensitivity) for path, m in net.mixed.items()}
    if sensitivity:
        assert weights["dead"] == 0.0 and weights["side"] < 1e-6
        assert weights["stem"] > 0.5 and weights["head"] > 0.5
    else:
        assert weights == dict.fromkeys(net.mixed, 1.0)


def _is_cut(name: str, lowest_rank: int) -> bool:
    """`zero`, or a block at the lowest rank the layer is offered."""
    if name == NO_CHANGE:
        return True
    rank = decode(name).rank
    return rank is not None and rank <= lowest_rank


def test_search_never_cuts_the_layer_that_carries_the_change(tmp_path):
    """The issue's case: at about half the teacher's amortised cost, the layers on the only path
    from the frame to the output (the cheap `early` conv, and the head) are never exported as
    `zero` or at their lowest rank, however dear the side branch, and the exported student
    recovers at least as much of the change on held-out frames as the uniform student of its
    cost. Here the search keeps both exact: the plain mean of layer errors (`sensitivity=False`)
    trades `early` down to a low-rank block for rank on the side branch."""
    options = SearchOptions(
        teacher="tests.test_output_aware:build_carrier",
        video="synthetic:frames=32,size=64x96",
        input_size="64x96",
        max_frames=32,
        budget="45%",
        steps=40,
        val_batches=2,
        device="cpu",
        threads=1,
        out=str(tmp_path),
    )
    assert options.sensitivity  # the default
    run = prepare(options)
    macs = {layer.path: layer.macs for layer in run.layers}
    side = [cost for path, cost in macs.items() if path.startswith("side.")]
    assert sum(side) > 0.9 * run.macs.keyframe  # the side branch is most of the teacher
    assert macs["early"] < 0.05 * run.macs.keyframe and macs["early"] < min(side)
    net = run.supernet()
    outcome = run_search(
        net,
        run.teacher,
        run.next_batch,
        budget=run.budget,
        interval=options.interval,
        config=options.search_config(),
    )
    picks = outcome.picks
    assert float(net.mixed["early"].sensitivity) > 0.9
    assert all(float(net.mixed[layer.path].sensitivity) < 1e-3 for layer in run.layers[1:-1])
    for path in ("early", "head"):
        ranks = [decode(n).rank for n in run.macs.candidates[path] if decode(n).rank is not None]
        assert not _is_cut(picks[path], min(ranks)), picks
        assert picks[path] == "full", picks

    spec = make_spec(run.teacher, run.layers, picks, run.macs, run.budget, run.size, options, {})
    assert spec.totals.amortised_macs <= run.budget.value
    uniform = uniform_spec(spec, run.layers)
    assert uniform is not None
    assert uniform.totals.amortised_macs <= spec.totals.amortised_macs
    k = options.keyframe_interval
    columns = [
        Student("searched", build_student(spec, run.teacher, stats=run.stats), k),
        Student("uniform", build_student(uniform, run.teacher, stats=run.stats), k),
    ]
    scores = compare(
        run.teacher, columns, run.val.span_frames(), interval=k, device=torch.device("cpu")
    )
    searched, uniform_r = scores["searched"]["r"], scores["uniform"]["r"]
    assert searched is not None and uniform_r is not None
    assert searched >= uniform_r, scores
    # What the side branch adds reaches the output scaled by 1e-2: the rest is recovered.
    assert searched > 0.99, scores
