"""The study dashboard: run-folder reading, the values behind each figure, and the HTML file."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import random
import re

import pandas as pd
import pytest
import torch
from plotly.offline import get_plotlyjs

from nas.core.errors import NasError
from nas.cost.amortised import amortised
from nas.cost.budget import Budget, CostKind
from nas.dashboard import data as d
from nas.dashboard import figures as f
from nas.dashboard import write_dashboard
from nas.graph.layers import conv_macs, layer_graph
from nas.searching.make_spec import make_spec
from nas.searching.options import SearchOptions
from nas.searching.supernet import StepLog
from nas.searching.tables import macs_table
from nas.spec import save_spec
from nas.study import runs
from nas.teachers import load_teacher
from search_spaces import load_preset, resolve_candidates
from tests.conftest import TINY_SEARCH

SIZE = (64, 96)
K = 3
N_TRIALS = 10
FAILED, RUNNING = 3, 9  # trial numbers without a spec
STEPS = 6


@pytest.fixture(scope="module")
def tiny():
    """The tiny teacher's layers, each layer's candidates and the exact multiply-add table."""
    teacher = load_teacher(TINY_SEARCH["teacher"], device="cpu")
    layers = layer_graph(teacher.module, SIZE)
    preset = load_preset("default")
    names = {layer.path: resolve_candidates(preset, layer) for layer in layers}
    return teacher, layers, names, macs_table(teacher, layers, names, SIZE)


def _dominated(point, others) -> bool:
    """Brute force: another point at most as costly and at least as good, better in one."""
    g, a = point
    return any(
        og <= g and oa >= a and (og < g or oa > a) for og, oa in others if (og, oa) != (g, a)
    )


def _write_log(path, rows, *, partial_tail: bool = False) -> None:
    names = [field.name for field in dataclasses.fields(StepLog)]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, names)
        writer.writeheader()
        for row in rows:
            writer.writerow(dataclasses.asdict(row))
        if partial_tail:
            handle.write("6,0.5,0.1")  # a row the search had not finished writing


def make_run(root, tiny, *, budget_kind: str = "macs", seed: int = 0) -> dict:
    """A study's run folder with real specs of the tiny teacher; returns what the test knows."""
    teacher, layers, names, table = tiny
    rng = random.Random(seed)
    picks, probabilities = {}, {}
    for trial in range(N_TRIALS):
        weights = {p: [rng.random() + 0.01 for _ in names[p]] for p in names}
        probabilities[trial] = {
            p: {n: w / sum(ws) for n, w in zip(names[p], ws, strict=True)}
            for p, ws in weights.items()
        }
        picks[trial] = {p: max(probs, key=probs.get) for p, probs in probabilities[trial].items()}
    cost = {t: amortised(table.keyframe, table.delta(picks[t]), K) for t in picks}
    budget_macs = sorted(cost.values())[N_TRIALS // 2]
    if budget_kind == "macs":
        budget = Budget(CostKind.MACS, budget_macs)
    else:
        budget = Budget(CostKind.LATENCY, 0.004)
    options = SearchOptions(**TINY_SEARCH, keyframe_interval=K)

    rows, specs = [], {}
    for trial in range(N_TRIALS):
        folder = runs.trial_dir(root, trial)
        folder.mkdir(parents=True)
        state = "FAIL" if trial == FAILED else "RUNNING" if trial == RUNNING else "COMPLETE"
        log = [
            StepLog(
                step=s,
                loss=1.0 / (s + 1),
                layer_loss=0.5,
                output_loss=0.3,
                task_loss=0.2,
                expected_cost=cost[trial] * (1.5 - 0.1 * s)
                if budget_kind == "macs"
                else 0.005 - 0.0001 * s,
                budget=budget.value,
                tau=2.0 - 0.3 * s,
                multiplier=0.1 * s,
            )
            for s in range(STEPS)
        ]
        _write_log(folder / runs.TRIAL_LOG, log, partial_tail=state == "RUNNING")
        spec_path = ""
        if state == "COMPLETE":
            (folder / runs.TRIAL_PROBABILITIES).write_text(json.dumps(probabilities[trial]))
            spec = make_spec(
                teacher, layers, picks[trial], table, budget, SIZE, options, {"val_x": 1.0}
            )
            save_spec(spec, folder / runs.TRIAL_SPEC)
            specs[trial] = spec
            spec_path = str((folder / runs.TRIAL_SPEC).relative_to(root))
        done = state == "COMPLETE"
        latency = 3.0 + 1e-6 * cost[trial] if budget_kind == "latency" and done else math.nan
        feasible = done and (
            cost[trial] <= budget.value if budget_kind == "macs" else latency <= 4.0
        )
        rows.append(
            {
                "trial": trial,
                "state": state,
                "agreement": rng.uniform(0.6, 0.99) if done else math.nan,
                "gflops": cost[trial] / 1e9 if done else math.nan,
                "latency_ms": latency,
                "speedup": 1.0 + 0.1 * trial if done else math.nan,
                "feasible": feasible,
                "pareto": False,
                "spec_path": spec_path,
                "duration_s": rng.uniform(5, 50) if state != "RUNNING" else math.nan,
                "started": f"2025-01-01T00:{trial:02d}:00",
                "param_lr_arch": rng.choice([0.01, 0.05, 0.1]),
                "param_penalty": rng.choice(["constraint", "fixed"]),
            }
        )
    ok = [r for r in rows if r["state"] == "COMPLETE" and r["feasible"]]
    points = [(r["gflops"], r["agreement"]) for r in ok]
    for r in ok:
        r["pareto"] = not _dominated((r["gflops"], r["agreement"]), points)
    frame = pd.DataFrame(rows)
    frame.to_parquet(root / runs.TRIALS_PARQUET)
    frame.to_csv(root / runs.TRIALS_CSV, index=False)
    info = runs.StudyInfo(
        study="tiny-study",
        storage="sqlite:///study.db",
        teacher=TINY_SEARCH["teacher"],
        input_size=SIZE,
        teacher_gflops=table.keyframe / 1e9,
        teacher_latency_ms=9.0 if budget_kind == "latency" else None,
        budget_kind=budget_kind,
        budget_value=budget.value,
        budget_text=str(budget),
        objectives=["agreement", "gflops"],
        directions=["maximize", "minimize"],
    )
    (root / runs.STUDY_INFO).write_text(info.model_dump_json(indent=2))
    return {"rows": rows, "specs": specs, "budget": budget, "table": table, "probs": probabilities}


@pytest.fixture
def run(tmp_path, tiny):
    return tmp_path, make_run(tmp_path, tiny)


def test_load_run_reads_the_table_and_each_trials_files(run):
    root, known = run
    data = d.load_run(root)
    assert [row.trial for row in data.trials] == list(range(N_TRIALS))
    assert data.param_names == ["lr_arch", "penalty"]
    assert sorted(data.specs) == sorted(known["specs"])
    assert data.specs[0] == known["specs"][0]
    assert sorted(data.logs) == list(range(N_TRIALS))  # the running trial's log too
    assert len(data.logs[RUNNING]["step"]) == STEPS  # its half-written last row left out
    assert sorted(data.probabilities) == sorted(known["specs"])
    row = data.trial(0)
    assert row.params == {k[6:]: v for k, v in known["rows"][0].items() if k.startswith("param_")}
    assert data.trial(RUNNING).state == "RUNNING" and math.isnan(data.trial(RUNNING).gflops)


def test_csv_is_read_when_there_is_no_parquet(run):
    root, _ = run
    from_parquet = d.load_run(root)
    (root / runs.TRIALS_PARQUET).unlink()
    from_csv = d.load_run(root)
    for a, b in zip(from_parquet.trials, from_csv.trials, strict=True):
        assert (a.trial, a.state, a.feasible, a.pareto, a.spec_path, a.params) == (
            b.trial,
            b.state,
            b.feasible,
            b.pareto,
            b.spec_path,
            b.params,
        )
        assert a.gflops == pytest.approx(b.gflops, nan_ok=True)


def test_pareto_points_match_a_brute_force_front(run):
    root, known = run
    pareto = d.pareto_points(d.load_run(root))
    complete = [r for r in known["rows"] if r["state"] == "COMPLETE"]
    assert pareto.trials == [r["trial"] for r in complete]  # one point per completed trial
    assert pareto.feasible == [r["gflops"] * 1e9 <= known["budget"].value for r in complete]
    assert any(pareto.feasible) and not all(pareto.feasible)
    points = list(zip(pareto.trials, pareto.gflops, pareto.agreement, pareto.feasible, strict=True))
    feasible = [(g, a) for _, g, a, ok in points if ok]
    expected_front = {t for t, g, a, ok in points if ok and not _dominated((g, a), feasible)}
    assert set(pareto.front_trials) == expected_front
    on_front = [t for t, on in zip(pareto.trials, pareto.on_front, strict=True) if on]
    assert on_front == sorted(expected_front)
    # The front sorted by cost gains agreement at every step; the staircase visits each point.
    assert pareto.front_gflops == sorted(pareto.front_gflops)
    assert pareto.front_agreement == sorted(pareto.front_agreement)
    steps = list(zip(pareto.staircase_gflops, pareto.staircase_agreement, strict=True))
    assert len(steps) == 2 * len(expected_front) - 1
    assert set(zip(pareto.front_gflops, pareto.front_agreement, strict=True)) <= set(steps)
    for (x0, y0), (x1, y1) in itertools.pairwise(steps):
        assert (x0 == x1 and y1 >= y0) or (y0 == y1 and x1 >= x0)  # horizontal or vertical
    assert pareto.budget_gflops == pytest.approx(known["budget"].value / 1e9)
    assert pareto.teacher_gflops == pytest.approx(known["table"].keyframe / 1e9)
    assert pareto.teacher_agreement == 1.0
    first = complete[0]
    assert pareto.hover[0].startswith(f"<b>trial {first['trial']}</b>")
    assert f"lr_arch = {first['param_lr_arch']:.4g}" in pareto.hover[0]
    assert f"penalty = {first['param_penalty']}" in pareto.hover[0]


def test_pareto_figure_has_one_trial_point_per_completed_trial(run):
    root, known = run
    fig = f.pareto_figure(d.pareto_points(d.load_run(root)))
    traces = {trace.name: trace for trace in fig.data}
    points = sum(len(traces[name].x) for name in (f.FEASIBLE, f.INFEASIBLE))
    assert points == sum(r["state"] == "COMPLETE" for r in known["rows"])
    assert traces[f.TEACHER].marker.symbol == "star"
    assert traces[f.FRONT].mode == "lines"
    assert [s.line.dash for s in fig.layout.shapes] == ["dash"]
    assert fig.layout.xaxis.title.text == "amortised GFLOPs per frame"
    assert fig.layout.yaxis.title.text == "agreement with the teacher"


def test_architecture_map_of_the_best_front_trial(run, tiny):
    root, known = run
    _, layers, names, _ = tiny
    data = d.load_run(root)
    front = [r for r in known["rows"] if r["pareto"]]
    best = max(front, key=lambda r: r["agreement"])["trial"]
    arch = d.architecture_map(data)
    assert arch.trial == best
    spec = known["specs"][best]
    assert arch.layers == [layer.path for layer in layers] == [s.path for s in spec.layers]
    assert arch.chosen == [s.candidate for s in spec.layers]
    assert len(arch.probabilities) == len(layers)
    for layer, row, index in zip(layers, arch.probabilities, arch.chosen_index, strict=True):
        offered = [arch.candidates[j] for j, p in enumerate(row) if not math.isnan(p)]
        assert sorted(offered) == sorted(names[layer.path])
        assert sum(p for p in row if not math.isnan(p)) == pytest.approx(1.0)
        assert row[index] == max(p for p in row if not math.isnan(p))  # picks were the argmax
        assert row[index] == pytest.approx(known["probs"][best][layer.path][arch.candidates[index]])
    for name, kind, rank in zip(arch.chosen, arch.chosen_kind, arch.chosen_rank, strict=True):
        match = re.fullmatch(r"(down2_)?([a-z]+)(?:_r(\d+))?", name)
        assert kind == (match[1] or "") + match[2]
        assert rank == (int(match[3]) if match[3] else None)
    assert arch.candidates[0] == "zero"  # cheapest kinds first, `full` last
    assert arch.candidates[-1] == "full"
    json.dumps(dataclasses.asdict(arch))  # plain values


def test_architecture_map_of_a_named_trial_and_errors(run):
    root, known = run
    data = d.load_run(root)
    other = min(known["specs"])
    assert d.architecture_map(data, other).trial == other
    with pytest.raises(NasError, match=f"trial {FAILED} .* has no spec"):
        d.architecture_map(data, FAILED)
    with pytest.raises(NasError, match="has no trial 99"):
        d.layer_macs(data, 99)


def test_layer_macs_match_the_tiny_nets_real_convs(run, tiny):
    root, known = run
    teacher, _, _, table = tiny
    data = d.load_run(root)
    macs = d.layer_macs(data)
    spec = known["specs"][macs.trial]
    # Output sizes from the real modules, by forward hooks on the tiny net.
    out_hw, calls = {}, {}
    hooks = []
    for path, module in teacher.module.named_modules():
        if isinstance(module, torch.nn.Conv2d):

            def hook(m, i, o, path=path):
                out_hw[path] = tuple(o.shape[-2:])
                calls[path] = calls.get(path, 0) + 1

            hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        teacher.module(torch.zeros(1, 3, *SIZE))
    for h in hooks:
        h.remove()
    for path, mmacs in zip(macs.layers, macs.teacher_mmacs, strict=True):
        conv = teacher.module.get_submodule(path)
        expected = conv_macs(
            c_in=conv.in_channels,
            c_out=conv.out_channels,
            kernel=conv.kernel_size,
            out_hw=out_hw[path],
            groups=conv.groups,
        )
        assert mmacs * 1e6 == pytest.approx(expected * calls[path])
    teacher_total = sum(macs.teacher_mmacs) * 1e6
    assert teacher_total + table.other == pytest.approx(spec.totals.teacher_macs)
    assert macs.outside_mmacs * 1e6 == pytest.approx(table.other)
    student_total = sum(macs.student_mmacs) * 1e6
    assert student_total + table.other == pytest.approx(spec.totals.delta_frame_macs)
    assert macs.candidates == [s.candidate for s in spec.layers]


def test_search_curves_in_gflops(run):
    root, known = run
    curves = d.search_curves(d.load_run(root))
    assert [c.trial for c in curves] == list(range(N_TRIALS))
    with open(runs.trial_dir(root, 0) / runs.TRIAL_LOG, newline="") as handle:
        log = list(csv.DictReader(handle))
    c = curves[0]
    assert c.unit == "GFLOPs"
    assert c.step == [float(r["step"]) for r in log]
    assert c.expected_cost == pytest.approx([float(r["expected_cost"]) / 1e9 for r in log])
    assert c.budget == pytest.approx([known["budget"].value / 1e9] * STEPS)
    assert c.tau == pytest.approx([float(r["tau"]) for r in log])
    assert c.multiplier == pytest.approx([float(r["multiplier"]) for r in log])
    assert d.latency_points(d.load_run(root)).empty


def test_a_latency_budget(tmp_path, tiny):
    known = make_run(tmp_path, tiny, budget_kind="latency")
    data = d.load_run(tmp_path)
    pareto = d.pareto_points(data)
    assert pareto.budget_gflops is None and "latency" in pareto.budget_note
    assert not f.pareto_figure(pareto).layout.shapes  # no vertical GFLOPs line
    curves = d.search_curves(data)
    assert curves[0].unit == "ms"
    assert curves[0].budget == pytest.approx([4.0] * STEPS)
    assert curves[0].expected_cost[0] == pytest.approx(5.0)
    latency = d.latency_points(data)
    complete = [r for r in known["rows"] if r["state"] == "COMPLETE"]
    assert latency.trials == [r["trial"] for r in complete]
    assert latency.latency_ms == pytest.approx([r["latency_ms"] for r in complete])
    assert latency.budget_ms == pytest.approx(4.0) and latency.teacher_latency_ms == 9.0
    # No trial meets this budget, so there is no front: the map falls back to the best trial.
    assert not any(r["pareto"] for r in known["rows"])
    best = max(complete, key=lambda r: r["agreement"])["trial"]
    assert d.architecture_map(data).trial == d.layer_macs(data).trial == best
    html = write_dashboard(tmp_path).read_text()
    assert 'id="latency"' in html


def test_front_table_lists_the_measured_speedup(run):
    """The summary's front table gives each front trial's measured speed-up; a table written
    before the column existed reads as not measured, and the column is left out."""
    root, known = run
    front = sorted((r for r in known["rows"] if r["pareto"]), key=lambda r: r["gflops"])
    table = d.summary(d.load_run(root))
    column = table.columns.index("speed-up")
    assert [row[column] for row in table.front] == [d.format_value(r["speedup"]) for r in front]
    frame = pd.read_parquet(root / runs.TRIALS_PARQUET)
    frame.drop(columns=["speedup"]).to_parquet(root / runs.TRIALS_PARQUET)
    older = d.load_run(root)
    assert all(math.isnan(row.speedup) for row in older.trials)
    assert "speed-up" not in d.summary(older).columns


def test_errors_name_the_file(run):
    root, _ = run
    (root / runs.STUDY_INFO).rename(root / "elsewhere.json")
    with pytest.raises(NasError, match=r"study\.json' does not exist") as info:
        d.load_run(root)
    assert "\n" not in str(info.value)
    (root / runs.STUDY_INFO).write_text('{"study": "x"}')
    with pytest.raises(NasError, match=r"study\.json' is invalid"):
        d.load_run(root)
    (root / "elsewhere.json").rename(root / runs.STUDY_INFO)

    frame = pd.read_parquet(root / runs.TRIALS_PARQUET)
    frame.drop(columns=["gflops"]).to_parquet(root / runs.TRIALS_PARQUET)
    with pytest.raises(NasError, match=r"trials\.parquet' lacks the column\(s\) gflops"):
        d.load_run(root)
    (root / runs.TRIALS_PARQUET).write_bytes(b"not parquet at all")
    with pytest.raises(NasError, match=r"trials\.parquet' is not readable Parquet"):
        d.load_run(root)
    (root / runs.TRIALS_PARQUET).unlink()
    frame.assign(gflops="lots").to_csv(root / runs.TRIALS_CSV, index=False)
    with pytest.raises(NasError, match=r"trials\.csv': column 'gflops' is not numeric"):
        d.load_run(root)
    frame.to_csv(root / runs.TRIALS_CSV, index=False)
    (runs.trial_dir(root, 0) / runs.TRIAL_PROBABILITIES).write_text("[1, 2]")
    with pytest.raises(NasError, match=r"0000/probabilities\.json' is not \{layer path"):
        d.load_run(root)


def test_write_dashboard_is_one_offline_file(run):
    root, known = run
    path = write_dashboard(root)
    assert path == root / runs.DASHBOARD
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [runs.DASHBOARD, runs.STUDY_INFO, runs.TRIALS_CSV, runs.TRIALS_PARQUET, runs.TRIALS_DIR]
    )
    html = path.read_text()
    assert html.count(get_plotlyjs()) == 1
    assert html.count("plotly.js v") == get_plotlyjs().count("plotly.js v")
    sources = re.findall(r"<(?:script|link)\b[^>]*\b(?:src|href)\s*=\s*['\"]?([^'\" >]*)", html)
    assert not [s for s in sources if re.match(r"(https?:)?//", s)]
    assert not re.search(r"@import|url\(\s*['\"]?https?:", html)  # no web fonts from CSS
    for div in ("pareto", "architecture", "layer-macs", "curves"):
        assert f'<div id="{div}" class="plotly-graph-div"' in html
    assert 'id="latency"' not in html
    # The Pareto plot's data: one trial point per completed trial.
    start = re.search(r'Plotly\.newPlot\(\s*"pareto",\s*', html).end()
    traces, _ = json.JSONDecoder().raw_decode(html, start)
    points = sum(len(t["x"]) for t in traces if t.get("name") in (f.FEASIBLE, f.INFEASIBLE))
    assert points == sum(r["state"] == "COMPLETE" for r in known["rows"])
    front = [r for r in known["rows"] if r["pareto"]]
    table = html[html.index('id="front-table"') : html.index("</table>")]
    assert table.count("<tr>") == len(front) + 1  # header and one row per front trial


def test_a_study_without_trials_yet(tmp_path, tiny):
    make_run(tmp_path, tiny)
    (tmp_path / runs.TRIALS_PARQUET).unlink()
    (tmp_path / runs.TRIALS_CSV).unlink()
    data = d.load_run(tmp_path)
    assert data.trials == [] and d.architecture_map(data) is None
    html = write_dashboard(tmp_path).read_text()
    assert html.count(get_plotlyjs()) == 1
    assert 'id="pareto"' in html and "No trial has a spec yet." in html
