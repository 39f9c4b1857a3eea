"""The key-frame interval, measured (nas.searching.interval; `--keyframe-interval auto`)."""

from __future__ import annotations

import math

import pytest
import torch
from optuna.trial import TrialState

from nas.core.errors import NasError
from nas.cost.amortised import CostTable, amortised
from nas.cost.budget import Budget, CostKind
from nas.cost.macs import count_macs
from nas.delta.liveness import NO_CHANGE
from nas.searching.interval import IntervalScreen, feasible_intervals, screen_intervals, windows
from nas.searching.options import SearchOptions
from nas.searching.pipeline import ALLOCATION_BATCHES, better_allocation, prepare
from nas.searching.supernet import knapsack_picks, measure_errors, output_r
from nas.spec import load_spec
from nas.student.compare import Student, compare
from nas.study.hpo import SCREEN_ATTR, Objective, StudyOptions, run_study
from nas.teachers import load_teacher
from tests.conftest import TINY_SEARCH

TINY_MACS = count_macs(load_teacher("tests.conftest:build_tiny").module, (64, 96))


def _options(out, fraction=0.45, **study) -> StudyOptions:
    budget = f"{fraction * TINY_MACS / 1e9}GFLOPs"
    search = SearchOptions(**TINY_SEARCH, budget=budget, out=str(out))
    return StudyOptions(search=search, keyframe_interval_auto=True, **study)


@pytest.fixture(scope="module")
def screened(tmp_path_factory):
    """The tiny teacher's screen at 45% of its cost, with the run it measured."""
    objective = Objective(_options(tmp_path_factory.mktemp("screen") / "run"))
    screen = objective.screen()
    _, run = objective.prepare(
        objective.options.search.model_copy(update={"keyframe_interval": 8}), 1
    )
    return run, screen


def test_feasible_intervals_are_those_the_cheapest_delta_frame_fits():
    # (100 + (K - 1) * 5) / K <= 50 from K = 3 on (K = 2: 52.5).
    table = CostTable(CostKind.MACS, 100.0, 5.0, {"a": {"zero": 0.0, "full": 80.0}})
    assert feasible_intervals(table, Budget(CostKind.MACS, 50.0)) == [3, 4, 5, 6, 7, 8]
    assert feasible_intervals(table, Budget(CostKind.MACS, 5.0)) == []


def test_every_interval_the_budget_allows_is_measured_and_the_least_error_chosen(screened):
    run, screen = screened
    assert list(screen.errors) == feasible_intervals(run.costs, run.budget)
    assert 2 not in screen.errors  # at 45% the key frame alone is over the budget at K = 2
    students = [k for k, a in screen.allocations.items() if set(a.values()) != {NO_CHANGE}]
    assert screen.chosen == min(students, key=screen.errors.get)
    assert all(math.isfinite(e) and e >= 0 for e in screen.errors.values())
    assert screen.repeat_interval == 2 and screen.repeat_error > 0


def test_each_allocation_meets_the_budget(screened):
    run, screen = screened
    for k, picks in screen.allocations.items():
        assert amortised(run.costs.keyframe, run.costs.delta(picks), k) <= run.budget.value, k


def test_the_error_is_what_the_student_makes_as_it_runs(screened):
    """E(K) from the screen's batched frames equals 1 - R of the same student run frame by frame by
    `nas.DeltaRunner` (`nas.student.compare`), times the teacher's own change since the key
    frame."""
    run, screen = screened
    frames = windows(run.train.span_frames(), 8)
    teacher = run.teacher
    with torch.no_grad():
        outputs = [teacher(teacher.input_spec.normalize(frames[:, d].float())) for d in range(8)]
    for k, error in screen.errors.items():
        net = run.supernet()
        net.fix(screen.allocations[k])
        found = compare(
            teacher,
            [Student("student", net.model, k)],
            [list(window[:k]) for window in frames],
            interval=k,
            device=run.device,
        )
        change = sum(float((outputs[d] - outputs[0]).pow(2).mean()) for d in range(1, k))
        assert error * k / change == pytest.approx(1 - found["student"]["r"], rel=1e-4), k


def test_the_supernet_is_left_as_it_was_found(screened):
    run, _ = screened
    net = run.supernet()
    with torch.no_grad():
        for m in net.mixed.values():
            m.logits.normal_()
    before = [m.logits.detach().clone() for m in net.mixed.values()]
    screen_intervals(
        net,
        windows(run.train.span_frames(), 8),
        run.teacher.input_spec.normalize,
        budget=run.budget,
        intervals=[3, 5],
    )
    for m, logits in zip(net.mixed.values(), before, strict=True):
        assert torch.equal(m.logits, logits) and m.fixed is None
        assert m.error.isnan().all() and float(m.sensitivity) == 1.0
    assert all(conv.a_key is None for _, conv in net.model.delta_convs())
    assert net.model.training


def test_windows_and_clips_too_short():
    clips = [[torch.full((3, 4, 4), i, dtype=torch.uint8) for i in range(n)] for n in (9, 2, 3)]
    found = windows(clips, 3)
    assert found.shape == (3, 3, 3, 4, 4)  # two of the first clip, one of the third
    assert found[:, :, 0, 0, 0].tolist() == [[0, 1, 2], [6, 7, 8], [0, 1, 2]]  # spread out
    with pytest.raises(NasError, match="no clip holds the 10 frames"):
        windows(clips, 10)


def test_metrics_round_trip_and_summary(screened):
    _, screen = screened
    again = IntervalScreen.from_metrics(screen.metrics())
    assert again == screen and again.allocations == {}
    line = screen.summary()
    assert f"K={screen.chosen} " in line and "(chosen)" in line
    assert "relative to the key frame repeated every 2, the same cost" in line


def test_an_auto_study_runs_the_chosen_interval_first_and_keeps_the_screen(tmp_path, monkeypatch):
    options = _options(tmp_path / "run", trials=2, train_steps=0, sampler="random")
    shown = []
    study = run_study(options, on_screen=shown.append)
    screen = shown[0]
    first = study.trials[0]
    assert first.params["keyframe_interval"] == screen.chosen
    assert study.user_attrs[SCREEN_ATTR] == screen.metrics()
    spec = load_spec(options.run / first.user_attrs["spec_path"])
    assert spec.keyframe_interval == screen.chosen
    assert spec.metrics["interval_chosen"] == screen.chosen
    # A continued study reads its screen back instead of measuring again.
    monkeypatch.setattr(Objective, "screen", lambda self: pytest.fail("measured twice"))
    more = run_study(options.model_copy(update={"trials": 3}), on_screen=shown.append)
    assert len(more.get_trials(states=(TrialState.COMPLETE,))) == 3 and shown[1] == screen


@pytest.fixture(scope="module")
def tiny_run():
    return prepare(
        SearchOptions(**TINY_SEARCH, budget=f"{0.45 * TINY_MACS / 1e9}GFLOPs", keyframe_interval=4)
    )


def test_output_r_is_one_for_the_teacher_and_zero_for_the_repeated_key_frame(tiny_run):
    net = tiny_run.supernet()
    batches = [tiny_run.next_batch(torch.Generator().manual_seed(1)) for _ in range(2)]
    exact = net.dearest()
    still = {p: NO_CHANGE for p in net.mixed}
    assert output_r(net, exact, batches) == pytest.approx(1.0, abs=1e-5)
    assert output_r(net, still, batches) == pytest.approx(0.0, abs=1e-6)


def test_the_knapsack_meets_the_budget_and_spends_it_where_the_error_is(tiny_run):
    net = tiny_run.supernet()
    batches = [tiny_run.next_batch(torch.Generator().manual_seed(2)) for _ in range(2)]
    errors = measure_errors(net, batches)
    full = tiny_run.costs.keyframe
    roomy = knapsack_picks(net, errors, Budget(CostKind.MACS, full), 4)
    assert all(
        errors[row, m.names.index(roomy[p])] < 1e-6 for row, (p, m) in enumerate(net.mixed.items())
    )
    picks = knapsack_picks(net, errors, tiny_run.budget, 4)
    assert amortised(full, tiny_run.costs.delta(picks), 4) <= tiny_run.budget.value
    assert all(m.fixed is None and m.logits.abs().sum() == 0 for m in net.mixed.values())


def test_the_search_keeps_the_allocation_that_recovers_more(tiny_run):
    net = tiny_run.supernet()
    cheapest = {p: m.names[0] for p, m in net.mixed.items()}
    kept, found = better_allocation(net, cheapest, tiny_run)
    best = max(found["allocation_r_search"], found["allocation_r_knapsack"])
    assert found["allocation_knapsack"] == float(kept != cheapest)
    generator = torch.Generator().manual_seed(tiny_run.options.seed + 11)
    judged = [tiny_run.next_batch(generator) for _ in range(2 * ALLOCATION_BATCHES)][
        ALLOCATION_BATCHES:
    ]
    assert output_r(net, kept, judged) == pytest.approx(best)
