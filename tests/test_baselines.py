"""The cheap answers at the student's cost (`nas.student.baselines`) and the side-by-side comparison
(`nas.student.compare`): sizes and ranks that are the largest that fit, and R on one scale."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from nas.cost.amortised import amortised
from nas.cost.macs import count_macs
from nas.data import load_frames, open_video
from nas.delta.runner import DeltaRunner
from nas.searching.make_spec import make_spec
from nas.searching.options import SearchOptions
from nas.searching.pipeline import prepare
from nas.searching.tables import macs_table
from nas.student.baselines import lowres_size, uniform_candidate, uniform_spec
from nas.student.build import build_student
from nas.student.compare import Column, Repeated, Student, compare
from nas.teachers import load_teacher
from search_spaces import candidate_macs, max_rank
from tests.conftest import TINY_SEARCH, build_tiny


def build_moving():
    """The tiny teacher without its head's bias: its decisions follow the moving shapes (the
    plain one labels every pixel of the synthetic frames class 1)."""
    net = build_tiny()
    with torch.no_grad():
        net.head.bias.zero_()
    return net


@pytest.fixture(scope="module")
def run():
    teacher = "tests.test_baselines:build_moving"
    return prepare(SearchOptions(**(TINY_SEARCH | {"budget": "3MFLOPs", "teacher": teacher})))


# The teacher on smaller frames


def _sizes(multiple: int, size: tuple[int, int]) -> list[tuple[int, int]]:
    """Every height in the size multiple up to the frame's, its width from the aspect ratio as
    `lowres_size` rounds it."""
    height, width = size
    return [
        (h, max(multiple, round(h * width / height / multiple) * multiple))
        for h in range(multiple, height + 1, multiple)
    ]


@pytest.mark.parametrize("size", [(64, 96), (96, 64), (48, 128)])
def test_lowres_size_is_the_largest_that_fits(size, monkeypatch):
    """At every size's exact cost, just under it, between two sizes' costs, above the full
    size's and under the smallest's, `lowres_size` is what counting every size gives: the
    largest that costs at most the budget (None: none fits)."""
    teacher = load_teacher("tests.conftest:build_tiny")
    counted: dict[tuple[int, int], int] = {}

    def count(module, input_size):  # each size counted once (the search, not the count, is tested)
        assert module is teacher.module
        key = tuple(input_size)
        if key not in counted:
            counted[key] = count_macs(module, key)
        return counted[key]

    monkeypatch.setattr("nas.student.baselines.count_macs", count)
    sizes = _sizes(teacher.input_spec.size_multiple, size)
    costs = [count(teacher.module, s) for s in sizes]
    assert sizes[-1] == size and costs == sorted(costs)

    def brute_force(macs: float) -> tuple[int, int] | None:
        fitting = [s for s, cost in zip(sizes, costs, strict=True) if cost <= macs]
        return max(fitting, default=None)

    budgets = {0.0, costs[0] - 1, costs[-1] * 2.0}
    budgets |= set(costs) | {cost - 1 for cost in costs}
    budgets |= {(a + b) / 2 for a, b in itertools.pairwise(costs)}
    for macs in sorted(budgets):
        assert lowres_size(teacher, size, macs) == brute_force(macs), macs
    assert lowres_size(teacher, size, costs[0] - 1) is None
    assert lowres_size(teacher, size, costs[-1]) == size
    assert lowres_size(teacher, size, costs[2]) == sizes[2]
    assert set(counted) <= set(sizes)  # only sizes of the frames' aspect were counted


# The uniform student


def _spec(run, picks: dict[str, str]):
    return make_spec(
        run.teacher, run.layers, picks, run.macs, run.budget, run.size, run.options, {}
    )


def _by_cost(run, position: int) -> dict[str, str]:
    """Every layer's candidate at `position` in cost order (clipped; -1: `full`)."""
    picks = {}
    for path, costs in run.macs.candidates.items():
        names = sorted(costs, key=lambda name: (costs[name], name))
        picks[path] = "full" if position < 0 else names[min(position, len(names) - 1)]
    return picks


def _uniform_delta(run, fraction: float) -> int:
    other = run.macs.other
    return other + sum(
        candidate_macs(uniform_candidate(layer, fraction), layer) * layer.calls
        for layer in run.layers
    )


@pytest.mark.parametrize("position", [5, 7, 8, 10, -1])
def test_uniform_spec_is_the_largest_rank_fraction_that_fits(run, position):
    """The uniform student costs at most the spec's amortised multiply-adds, its blocks are one
    rank fraction's (grouped convs `full`), its totals add up, and the next fraction at which
    any layer gains a rank costs more than the spec."""
    spec = _spec(run, _by_cost(run, position))
    uniform = uniform_spec(spec, run.layers)
    assert uniform is not None
    target = spec.totals.amortised_macs
    assert uniform.totals.amortised_macs <= target
    fraction = uniform.metrics["uniform_fraction"]
    assert 0 < fraction <= 1
    by_path = {layer.path: layer for layer in run.layers}
    for old, new in zip(spec.layers, uniform.layers, strict=True):
        layer = by_path[new.path]
        assert new.path == old.path and new.shape == old.shape
        assert new.candidate == uniform_candidate(layer, fraction)
        if layer.groups != 1:
            assert new.candidate == "full"
        else:
            assert new.candidate.startswith("lowrank_r")
        assert new.macs == candidate_macs(new.candidate, layer) * layer.calls
    delta = run.macs.other + sum(layer.macs for layer in uniform.layers)
    assert uniform.totals.delta_frame_macs == delta
    k = spec.keyframe_interval
    assert uniform.totals.amortised_macs == pytest.approx(
        amortised(spec.totals.teacher_macs, delta, k)
    )
    assert uniform.totals.teacher_macs == spec.totals.teacher_macs

    # One step up: the smallest fraction at which some dense layer gains a rank.
    steps = []
    for layer in run.layers:
        if layer.groups != 1:
            continue
        top = max_rank("lowrank", layer)
        rank = max(1, math.floor(fraction * top))
        if rank < top:
            steps.append((rank + 1) / top)
    if steps:
        above = min(steps)
        assert _uniform_delta(run, above) > _uniform_delta(run, fraction)
        assert amortised(spec.totals.teacher_macs, _uniform_delta(run, above), k) > target


def test_uniform_spec_none_when_the_grouped_convs_alone_exceed_the_budget(run):
    """All `zero` costs the key frame's share alone: the grouped conv, kept `full`, does not fit.
    At exactly the cheapest uniform student's cost it is that student (rank 1 on every dense
    conv); one multiply-add less, and none fits."""
    zeros = _spec(run, dict.fromkeys(run.macs.candidates, "zero"))
    assert uniform_spec(zeros, run.layers) is None
    cheapest_uniform = _uniform_delta(run, 1e-9)
    for position in range(1, 5):  # dearer than all `zero`, cheaper than any uniform student
        spec = _spec(run, _by_cost(run, position))
        assert 0 < spec.totals.delta_frame_macs < cheapest_uniform
        assert uniform_spec(spec, run.layers) is None

    cheapest = {layer.path: "full" if layer.groups != 1 else "lowrank_r1" for layer in run.layers}
    table = macs_table(run.teacher, run.layers, {p: [n] for p, n in cheapest.items()}, run.size)
    exact = make_spec(
        run.teacher, run.layers, cheapest, table, run.budget, run.size, run.options, {}
    )
    assert exact.totals.delta_frame_macs == cheapest_uniform
    uniform = uniform_spec(exact, run.layers)
    assert uniform is not None
    assert uniform.candidates() == cheapest
    assert uniform.totals == exact.totals.model_copy(
        update={"student_params": uniform.totals.student_params}
    )
    less = exact.model_copy(
        update={
            "totals": exact.totals.model_copy(
                update={"amortised_macs": exact.totals.amortised_macs - 1}
            )
        }
    )
    assert uniform_spec(less, run.layers) is None


# The comparison


class TeacherColumn(Column):
    """Returns the teacher's own output: what R = 1 means."""

    name = "the teacher"

    def __call__(self, x, y_teacher):
        return y_teacher


@pytest.fixture(scope="module")
def sequences():
    """Two synthetic clips of different lengths (the second starts a new key-frame schedule)."""
    clips = ["synthetic:frames=8,size=64x96,seed=1", "synthetic:frames=6,size=64x96,seed=2"]
    return [list(load_frames(open_video(clip), size=(64, 96)).frames) for clip in clips]


def test_compare_scores_on_one_scale(run, sequences):
    """`Repeated` at the reference interval scores R = 0 exactly; the teacher's own output
    R = 1 and agreement 1; a delta student's R is `evaluators.Recovered` on the frames between
    its key frames, computed here from a `DeltaRunner` and the teacher."""
    from evaluators import Recovered  # after `nas`, which `evaluators` imports first

    k = 3
    picks = _by_cost(run, 2)
    spec = _spec(run, picks)
    student = build_student(spec, run.teacher)
    columns = [Repeated(k), TeacherColumn(), Student("student", student, k)]
    scores = compare(run.teacher, columns, sequences, interval=k, device=torch.device("cpu"))
    assert set(scores) == {f"key frame repeated, every {k}", "the teacher", "student"}

    repeated = scores[f"key frame repeated, every {k}"]
    assert repeated["r"] == 0.0
    assert repeated["agreement"] < 1.0  # the shapes move: repeating the key frame loses some
    assert scores["the teacher"]["r"] == 1.0
    assert scores["the teacher"]["agreement"] == 1.0

    by_hand = Recovered()
    for frames in sequences:
        inputs = [run.teacher.input_spec.normalize(f[None].float()) for f in frames]
        with torch.no_grad():
            truth = [run.teacher(x) for x in inputs]
        key = None
        runner = DeltaRunner(student, interval=k)
        for step, y in zip(runner.run(inputs), truth, strict=True):
            if step.is_key:
                key = y
                continue
            by_hand.update(step.prediction, key, y)
    assert by_hand.frames == sum(len(f) - len(range(0, len(f), k)) for f in sequences)
    r = scores["student"]["r"]
    assert r == pytest.approx(by_hand.compute(), abs=1e-6)
    assert 0 < r < 1  # some of the change, not all of it


def test_compare_against_another_reference(run, sequences):
    """With a column as the reference (the per-frame modes' low-res teacher), that column
    scores R = 0 exactly, the teacher R = 1, and a third column's R is 1 - its squared error
    over the reference's, summed over every frame (checked by hand)."""
    from nas.student.compare import LowRes

    lowres = LowRes(run.teacher, (32, 48))
    repeated = Repeated(2)
    scores = compare(
        run.teacher,
        [lowres, TeacherColumn(), repeated],
        sequences,
        interval=3,
        device=torch.device("cpu"),
        reference=lowres,
    )
    assert scores[lowres.name]["r"] == 0.0 and scores["the teacher"]["r"] == 1.0
    err = {"lowres": 0.0, "repeat": 0.0}
    for frames in sequences:
        repeated.reset()
        for frame in frames:
            x = run.teacher.input_spec.normalize(frame[None].float())
            with torch.no_grad():
                y = run.teacher(x)
                err["lowres"] += float((lowres(x, y) - y).pow(2).sum())
                err["repeat"] += float((repeated(x, y) - y).pow(2).sum())
    expected = 1 - err["repeat"] / err["lowres"]
    assert scores[repeated.name]["r"] == pytest.approx(expected, rel=1e-4)


def test_per_frame_r_is_against_the_lowres_teacher(sequences):
    """A per-frame student's held-out metrics measure R against the teacher on smaller frames
    at its cost (which scores 0 exactly), and say so (`baseline_r_reference` 1)."""
    from nas.student.compare import baseline_metrics

    options = TINY_SEARCH | {
        "budget": "60%",
        "mode": "perframe",
        "teacher": "tests.test_baselines:build_moving",
    }
    run = prepare(SearchOptions(**options))
    spec = _spec(run, _by_cost(run, 2))
    metrics = baseline_metrics(
        run.teacher,
        spec,
        build_student(spec, run.teacher),
        run.layers,
        sequences,
        stats=None,
        size=run.size,
        device=torch.device("cpu"),
    )
    assert metrics["baseline_r_reference"] == 1.0
    assert metrics["baseline_lowres_r"] == 0.0
    assert metrics["heldout_r"] != 0.0 and "baseline_repeat_r" in metrics
