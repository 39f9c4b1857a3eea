"""The search end to end on a tiny teacher and synthetic video: budget met, deterministic, safe."""

import csv
import json

import pytest
import torch

from nas.core.errors import NasError
from nas.core.layout import in_layout
from nas.cost.latency import measure
from nas.delta.liveness import NO_CHANGE, idle_layers, layer_sources
from nas.searching.options import SearchOptions
from nas.searching.pipeline import prepare, search
from nas.searching.validation import validate
from nas.spec import load_spec
from nas.student.build import build_student, teacher_for
from tests.conftest import TINY_SEARCH


def _run(tmp_path, name="run", **overrides):
    options = SearchOptions(
        **(TINY_SEARCH | {"budget": "3MFLOPs", "out": str(tmp_path / name)} | overrides)
    )
    return search(options)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("search"))


def test_spec_meets_and_uses_the_budget(tiny_run):
    spec = tiny_run.spec
    assert spec.totals.amortised_macs <= 3e6
    # The budget is spent: no layer's next dearer candidate would still fit.
    assert spec.totals.amortised_macs > 0.5 * 3e6
    assert spec.totals.teacher_macs > 3e6  # the budget asked for a real saving
    assert {layer.path for layer in spec.layers} == {"stem.0", "dw", "pw", "dilated", "head"}
    delta = spec.totals.delta_frame_macs
    assert delta == sum(layer.macs for layer in spec.layers)  # the tiny net has only convs
    assert spec.totals.amortised_macs == pytest.approx((spec.totals.teacher_macs + 2 * delta) / 3)
    assert 0.0 <= spec.metrics["val_agreement"] <= 1.0


def test_search_measures_what_its_saving_is_worth_in_time(tiny_run):
    """The teacher and the exported delta model timed end to end: the spec records the
    amortised speed-up and its share of the multiply-add ratio, consistent with its totals."""
    spec = tiny_run.spec
    m = spec.metrics
    assert all(m[name] > 0 for name in ("teacher_ms", "keyframe_ms", "delta_frame_ms"))
    assert m["amortised_ms"] == pytest.approx((m["keyframe_ms"] + 2 * m["delta_frame_ms"]) / 3)
    assert m["speedup"] == pytest.approx(m["teacher_ms"] / m["amortised_ms"])
    ratio = spec.totals.teacher_macs / spec.totals.amortised_macs
    assert m["speedup_share"] == pytest.approx(m["speedup"] / ratio)


def test_recorded_delta_frame_time_is_the_shipped_students(tmp_path):
    """The spec's `delta_frame_ms` is the time of the student `nas.build_student` returns, run
    as `nas eval` runs it: an independent timing of that student (`nas.cost.latency.measure` of its
    delta frame after a key frame, in the search's layout, on a frame of the same clip) is
    within 20% of it. A ratio of two timings in one process, frames large enough (256x384)
    that a frame's time is not Python's."""
    options = SearchOptions(
        **(
            TINY_SEARCH
            | {
                "budget": "50%",
                "input_size": "256x384",
                "video": "synthetic:frames=24,size=256x384",
            }
            | {"out": str(tmp_path / "run"), "steps": 2}
        )
    )
    result = search(options)
    spec = result.spec
    run = prepare(options)
    student = build_student(spec, run.teacher)
    x_key, x_t = (in_layout(x, run.channels_last) for x in run.timing_frames()[:2])
    if run.channels_last:
        student.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        student.key_frame(x_key)
    delta = measure(lambda: student.delta_frame(x_t), threads=run.threads, repeats=30).median
    assert 0.8 < spec.metrics["delta_frame_ms"] / (delta * 1e3) < 1.25


def test_per_frame_search_has_no_speedup(tmp_path):
    """No key frames, no amortised speed-up: the per-frame modes are not timed after export."""
    spec = _run(tmp_path, mode="perframe", budget="20MFLOPs").spec
    assert "speedup" not in spec.metrics and "teacher_ms" not in spec.metrics


def test_run_folder(tiny_run):
    out = tiny_run.out
    assert load_spec(out / "spec.json") == tiny_run.spec
    config = json.loads((out / "config.json").read_text())
    assert config["budget"] == "3MFLOPs" and config["steps"] == 6
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(6))
    assert all(float(r["expected_cost"]) > 0 and float(r["tau"]) > 0 for r in rows)
    assert float(rows[0]["task_loss"]) > 0  # synthetic labels fit the tiny teacher's 3 classes


def test_deterministic_for_a_seed(tmp_path, tiny_run):
    again = _run(tmp_path)
    strip = lambda spec: spec.model_dump(exclude={"metrics"})  # noqa: E731
    assert strip(again.spec) == strip(tiny_run.spec)
    assert again.spec.metrics["val_agreement"] == tiny_run.spec.metrics["val_agreement"]


def test_fixed_penalty_runs(tmp_path):
    result = _run(tmp_path, penalty="fixed", beta=2.0)
    assert result.spec.totals.amortised_macs <= 3e6
    assert result.spec.search.penalty == "fixed"


def test_budget_below_key_frame_share_is_refused_before_work(tmp_path):
    with pytest.raises(NasError) as info:
        _run(tmp_path, budget="0.5MFLOPs")
    message = str(info.value)
    assert "below what key-frame interval 3 allows" in message
    assert "smallest key-frame interval that could meet it is" in message
    assert not (tmp_path / "run").exists()  # nothing was written


def test_nan_stops_the_run_without_a_spec(tmp_path):
    with pytest.raises(NasError, match="diverged at step 0"):
        _run(tmp_path, teacher="tests.conftest:build_nan")
    assert not (tmp_path / "run" / "spec.json").exists()


def _timed_keys(cache) -> list[str]:
    (table,) = (cache / "latency").iterdir()  # the per-candidate table is on disk
    return [key for key in json.loads(table.read_text())["entries"] if key.startswith("delta:")]


@pytest.mark.parametrize("layout", ["auto", "nchw"])
def test_latency_budget_checked_end_to_end(tmp_path, monkeypatch, layout):
    """Latencies are measured in the layout the student will run in: on the CPU, `auto` is
    channels-last (the table's entries say so), as `nas eval` and `nas infer` run it."""
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    result = _run(tmp_path, budget="1s", layout=layout)
    metrics = result.spec.metrics
    assert metrics["amortised_ms"] <= 1000.0 and metrics["keyframe_ms"] > 0
    assert result.spec.search.layout == layout
    keys = _timed_keys(tmp_path / "cache")
    assert keys and all(key.endswith(":nhwc") == (layout == "auto") for key in keys)


def test_latency_limit_beside_a_flops_budget(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    result = _run(tmp_path, max_latency="1s")
    spec = result.spec
    assert spec.budget.text == "3MFLOPs" and spec.totals.amortised_macs <= 3e6
    assert spec.search.max_latency == "1s"
    assert 0 < spec.metrics["amortised_ms"] <= 1000.0  # measured end to end, within the limit
    # The speed-up is set against the frames the limit was checked on, not a second timing.
    m = spec.metrics
    assert m["speedup"] == pytest.approx(m["teacher_ms"] / m["amortised_ms"])
    rows = list(csv.DictReader((result.out / "log.csv").open()))
    assert len(rows) == 6


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_latency": "5GFLOPs"}, "invalid --max-latency 5GFLOPs: expected a time per frame"),
        ({"budget": "1s", "max_latency": "2s"}, "is a time already: give one of them"),
        ({"mode": "perframe", "max_latency": "1s"}, "drop --max-latency for --mode perframe"),
        ({"search_space": "nope"}, "unknown search-space preset 'nope'"),
        ({"video": "sample:nope"}, "sample"),
        ({"video": "/definitely/missing.mp4"}, "missing.mp4"),
    ],
)
def test_bad_input(tmp_path, overrides, message):
    with pytest.raises(NasError, match=message):
        _run(tmp_path, **overrides)


def test_a_binding_limit_steers_the_search_and_the_export(tmp_path):
    """A made-up cost that only `zero` and `full` meet (`full` cheap, everything else dear):
    the search meets it beside the FLOPs budget; without it, the search picks other blocks."""
    from nas.cost.amortised import CostTable, amortised
    from nas.cost.budget import Budget, CostKind
    from nas.searching.pipeline import prepare
    from nas.searching.supernet import run_search

    options = SearchOptions(**(TINY_SEARCH | {"budget": "3MFLOPs", "out": str(tmp_path)}))
    run = prepare(options)
    net = run.supernet()
    made_up = {
        path: {name: 0.0 if name in ("zero", "full") else 1.0 for name in names}
        for path, names in run.costs.candidates.items()
    }
    limit_table = CostTable(CostKind.LATENCY, keyframe=0.0, other=0.0, candidates=made_up)
    limit = Budget(CostKind.LATENCY, 0.5 / 3)  # at most half a dear block per delta frame
    outcome = run_search(
        net,
        run.teacher,
        run.next_batch,
        budget=run.budget,
        interval=options.interval,
        config=options.search_config(),
        limits=[(limit_table, limit)],
    )
    assert all(name in ("zero", "full") for name in outcome.picks.values())
    assert amortised(run.costs.keyframe, run.costs.delta(outcome.picks), 3) <= 3e6  # and budget
    alone = run_search(
        run.supernet(),
        run.teacher,
        run.next_batch,
        budget=run.budget,
        interval=options.interval,
        config=options.search_config(),
    )
    assert any(name not in ("zero", "full") for name in alone.picks.values())


@pytest.mark.parametrize("budget", ["3MFLOPs", "2.2MFLOPs"])
def test_no_block_of_the_spec_is_idle(tmp_path, budget):
    """Every block the spec pays for sees a change and passes one to the output (the tiny
    teacher is a chain: one `zero` anywhere leaves every other block with nothing to do)."""
    spec = _run(tmp_path, budget=budget).spec
    student = build_student(spec, teacher_for(spec))
    picks = {layer.path: layer.candidate for layer in spec.layers}
    idle = idle_layers(
        layer_sources(student, tuple(spec.input_size)),
        {path for path, name in picks.items() if name == NO_CHANGE},
    )
    assert all(picks[path] == NO_CHANGE for path in idle)
    assert spec.totals.delta_frame_macs == sum(layer.macs for layer in spec.layers)


def test_validation_scores_the_output_against_repeating_the_key_frame(tmp_path):
    run = prepare(SearchOptions(**(TINY_SEARCH | {"budget": "3MFLOPs", "out": str(tmp_path)})))
    net = run.supernet()
    paths = [layer.path for layer in run.layers]
    scores = {
        name: validate(net, run.teacher, run.val_batches(), dict.fromkeys(paths, name))
        for name in (NO_CHANGE, "full")
    }
    assert scores[NO_CHANGE]["val_error_vs_key"] == pytest.approx(1.0, abs=1e-6)
    assert scores["full"]["val_error_vs_key"] < 1e-4  # every layer the teacher's own conv
