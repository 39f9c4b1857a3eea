"""Budgets relative to the teacher: `50%` and `2x` parse, resolve against the teacher's cost at
the input size (multiply-adds for --budget, measured time for --max-latency) and reach the spec,
`study.json` and the summaries in absolute units; `0.5x` and `150%` are refused as no saving."""

import json

import pytest

from nas.core.errors import NasError
from nas.core.sizes import scaled_size
from nas.cost.budget import (
    Budget,
    CostKind,
    RelativeBudget,
    parse_budget,
    recorded_budget,
    resolve_budget,
)
from nas.cost.macs import count_macs
from nas.searching.options import SearchOptions
from nas.searching.pipeline import prepare
from nas.spec import BudgetRef
from nas.study import runs
from nas.teachers import load_teacher
from tests.conftest import TINY_SEARCH
from tests.test_cli import TINY_ARGS

TINY_MACS = count_macs(load_teacher("tests.conftest:build_tiny").module, (64, 96))


@pytest.mark.parametrize(
    ("text", "fraction", "given"),
    [
        ("50%", 0.5, "50%"),
        ("50 %", 0.5, "50%"),
        ("12.5%", 0.125, "12.5%"),
        ("2x", 0.5, "2x"),
        ("2X", 0.5, "2x"),
        ("4 x", 0.25, "4x"),
        ("1.25x", 0.8, "1.25x"),
    ],
)
def test_relative_forms_parse_to_a_fraction_of_the_teacher(text, fraction, given):
    budget = parse_budget(text)
    assert budget == RelativeBudget(CostKind.MACS, pytest.approx(fraction), given)
    assert str(budget) == given
    latency = parse_budget(text, relative_kind=CostKind.LATENCY)
    assert latency.kind is CostKind.LATENCY and latency.fraction == pytest.approx(fraction)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.5x", "a speed-up below 1 is not a saving: give more than 1x, e.g. 2x"),
        ("1x", "a speed-up of 1x is no saving: give more than 1x, e.g. 2x"),
        ("150%", "a budget of 150% of the teacher is no saving: give less than 100%, e.g. 50%"),
        ("100%", "a budget of 100% of the teacher is no saving: give less than 100%"),
        ("0%", "it must be positive"),
        ("0x", "it must be positive"),
        ("%", "expected a cost such as"),
        ("-50%", "expected a cost such as"),
        ("50%x", "expected a cost such as"),
    ],
)
def test_relative_forms_that_save_nothing_are_refused(text, message):
    with pytest.raises(NasError) as info:
        parse_budget(text)
    assert str(info.value).startswith(f"invalid budget '{text}': ")
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("5GFLOPs", CostKind.MACS, 5e9),
        ("2.5e9", CostKind.MACS, 2.5e9),
        ("40ms", CostKind.LATENCY, 0.04),
    ],
)
def test_absolute_forms_are_unchanged(text, kind, value):
    budget = parse_budget(text)
    assert budget == Budget(kind, pytest.approx(value)) and budget.relative is None
    assert str(budget) == budget.given == budget.absolute
    assert resolve_budget(text, teacher_macs=1.0) == budget  # nothing to resolve: as parsed
    assert resolve_budget(budget) is budget


def test_resolve_takes_the_teacher_cost_of_the_budget_kind():
    budget = resolve_budget("50%", teacher_macs=8e9, teacher_seconds=0.2)
    assert budget.kind is CostKind.MACS and budget.value == 4e9
    assert str(budget) == "50% = 4GFLOPs" and budget.given == "50%"
    limit = resolve_budget(
        "2x", relative_kind=CostKind.LATENCY, teacher_macs=8e9, teacher_seconds=0.2
    )
    assert limit.kind is CostKind.LATENCY and limit.value == pytest.approx(0.1)
    assert str(limit) == "2x = 100ms"
    with pytest.raises(ValueError, match="needs the teacher's latency"):
        resolve_budget("2x", relative_kind=CostKind.LATENCY, teacher_macs=8e9)
    # Back from what a spec records: the text as given, the absolute value.
    assert recorded_budget("50%", 4e9, CostKind.MACS) == budget
    assert recorded_budget("5GFLOPs", 5e9, CostKind.MACS) == Budget(CostKind.MACS, 5e9)


def test_specs_without_a_relative_field_still_load():
    ref = BudgetRef.model_validate({"kind": "macs", "value": 5e9, "text": "5GFLOPs"})
    assert ref.relative is None
    with pytest.raises(ValueError):
        BudgetRef(kind="macs", value=5e9, text="150%", relative=1.5)


def test_prepare_resolves_against_the_teacher_at_its_input_size():
    run = prepare(SearchOptions(**TINY_SEARCH, budget="50%"))
    assert run.budget.value == 0.5 * run.macs.keyframe == 0.5 * TINY_MACS
    assert run.budget.given == "50%"


def test_resolution_mode_is_relative_to_the_teacher_at_full_size():
    options = SearchOptions(**TINY_SEARCH, budget="2x", mode="resolution", input_scale=0.5)
    run = prepare(options)
    assert run.student_size != run.size and run.macs.keyframe < TINY_MACS
    assert run.budget.value == 0.5 * TINY_MACS


def test_a_downscaled_point_of_a_study_keeps_the_full_size_budget():
    """The study's downscaled delta runs are searched against the budget of its input size,
    not a fraction of the smaller teacher (`nas.study.hpo.Objective.prepare`)."""
    full = prepare(SearchOptions(**TINY_SEARCH, budget="70%"))
    size = scaled_size(full.size, 0.75, full.teacher.input_spec.size_multiple)
    small = SearchOptions(**(TINY_SEARCH | {"input_size": f"{size[0]}x{size[1]}"}), budget="70%")
    assert prepare(small, reference=full).budget == full.budget
    assert prepare(small).budget.value < full.budget.value  # alone: its own teacher


def test_relative_latency_limit_is_half_the_measured_teacher(monkeypatch, tmp_path):
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    run = prepare(SearchOptions(**TINY_SEARCH, budget="3MFLOPs", max_latency="2x"))
    assert run.limit.kind is CostKind.LATENCY and run.limit.given == "2x"
    assert run.limit.value == pytest.approx(0.5 * run.limit_costs.keyframe)  # no second timing


def _search(run_nas, tmp_path, *extra):
    out = tmp_path / "run"
    args = ["--trials", "1", "--input-scale", "1", "--keyframe-interval", "3"]
    result = run_nas(*TINY_ARGS, *args, *extra, "--out", str(out))
    assert result.returncode == 0, result.stderr
    spec = json.loads((out / "spec.json").read_text())
    info = json.loads((out / runs.STUDY_INFO).read_text())
    return " ".join(result.stdout.split()), spec, info


def test_search_cli_half_the_teacher(run_nas, tmp_path):
    said, spec, info = _search(run_nas, tmp_path, "--budget", "50%")
    budget, totals = spec["budget"], spec["totals"]
    assert budget["text"] == "50%" and budget["relative"] == 0.5
    assert budget["kind"] == "macs" and budget["value"] == 0.5 * totals["teacher_macs"]
    assert totals["teacher_macs"] == TINY_MACS and totals["amortised_macs"] <= budget["value"]
    assert info["budget_value"] == budget["value"] == 0.5 * info["teacher_gflops"] * 1e9
    assert info["budget_text"] == str(Budget(CostKind.MACS, budget["value"], parse_budget("50%")))
    assert f"budget 50% = {Budget(CostKind.MACS, 0.5 * TINY_MACS).absolute}" in said


def test_search_cli_twice_as_fast_in_multiply_adds_and_measured_time(run_nas, tmp_path):
    """`--budget 2x` is half the teacher's multiply-adds; `--max-latency 1.5x` two thirds of its
    time measured on this device, as the spec records it (not the test's wall clock; a limit
    with room, so that a spec meets it on a busy machine too)."""
    said, spec, _ = _search(run_nas, tmp_path, "--budget", "2x", "--max-latency", "1.5x")
    budget, metrics, search = spec["budget"], spec["metrics"], spec["search"]
    assert budget["text"] == "2x" and budget["value"] == 0.5 * spec["totals"]["teacher_macs"]
    assert search["max_latency"] == "1.5x"
    teacher_s = metrics["max_latency_teacher_ms"] / 1e3
    assert search["max_latency_s"] == pytest.approx(teacher_s / 1.5)
    assert metrics["amortised_ms"] / 1e3 <= search["max_latency_s"]  # checked end to end
    limit = Budget(CostKind.LATENCY, search["max_latency_s"]).absolute
    assert f"max latency 1.5x = {limit}" in said


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--budget", "0.5x"], "invalid budget '0.5x': a speed-up below 1 is not a saving"),
        (["--budget", "150%"], "invalid budget '150%': a budget of 150% of the teacher is no"),
        (["--budget", "3MFLOPs", "--max-latency", "0.5x"], "a speed-up below 1 is not a saving"),
    ],
)
def test_search_cli_refuses_what_saves_nothing(run_nas, tmp_path, extra, message):
    result = run_nas(*TINY_ARGS, *extra, "--out", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "run").exists()  # refused before any work


def test_cost_cli_shows_a_relative_budget_in_absolute_units(run_nas):
    result = run_nas(
        "cost", "--teacher", "tests.conftest:build_tiny", "--input-size", "64x96",
        "--budget", "50%",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    absolute = Budget(CostKind.MACS, 0.5 * TINY_MACS).absolute
    assert f"budget 50% = {absolute}" in result.stdout
    assert "50.0% of the teacher: a 2.00x reduction per frame" in result.stdout
