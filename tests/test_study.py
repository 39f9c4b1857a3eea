"""The outer loop: an Optuna study over the inner search (nas.study.hpo, nas.study.results, the
CLI)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from nas.core.errors import NasError
from nas.cost.macs import count_macs
from nas.searching.options import SearchOptions
from nas.spec import load_spec
from nas.study import runs
from nas.study.hpo import (
    Objective,
    StudyOptions,
    best_trial,
    export_trial,
    mask_url,
    normalise_url,
    run_study,
)
from nas.study.results import open_run_study
from nas.teachers import load_teacher
from tests.conftest import REPO, TINY_SEARCH

TINY_MACS = count_macs(load_teacher("tests.conftest:build_tiny").module, (64, 96))


def _options(out, **study) -> StudyOptions:
    search = SearchOptions(**TINY_SEARCH, budget=f"{0.6 * TINY_MACS / 1e9}GFLOPs", out=str(out))
    return StudyOptions(search=search, **({"trials": 3, "train_steps": 2} | study))


def _dominates(a, b) -> bool:
    """a dominates b: agreement not lower, GFLOPs not higher, one strictly better."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "run"
    options = _options(out, trials=4, keyframe_interval_auto=True, sampler="random")
    return options, run_study(options)


def test_study_holds_the_trials_asked_for(tiny_study):
    _, study = tiny_study
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 4
    assert all(len(t.values) == 2 for t in complete)
    assert {t.params["search_space"] for t in complete} == {"default"}
    assert all(2 <= t.params["keyframe_interval"] <= 8 for t in study.trials if t.params)


def test_trials_table_csv_and_parquet_agree_with_the_study(tiny_study):
    options, study = tiny_study
    run = options.run
    parquet = pd.read_parquet(run / runs.TRIALS_PARQUET)
    csv = pd.read_csv(run / runs.TRIALS_CSV)
    assert list(parquet["trial"]) == [t.number for t in study.trials]
    assert list(csv.columns) == list(parquet.columns)
    assert set(runs.COLUMNS) <= set(parquet.columns)
    assert {"param_lr_weights", "param_keyframe_interval", "param_search_space"} <= set(
        parquet.columns
    )
    pd.testing.assert_series_equal(csv["gflops"], parquet["gflops"], check_dtype=False)
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        row = parquet[parquet["trial"] == trial.number].iloc[0]
        assert row["agreement"] == pytest.approx(trial.values[0])
        assert row["gflops"] == pytest.approx(trial.values[1])
        assert row["duration_s"] > 0 and row["state"] == "COMPLETE"


def test_every_complete_trial_keeps_its_spec_and_meets_the_constraint(tiny_study):
    options, study = tiny_study
    budget = 0.6 * TINY_MACS
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        spec = load_spec(options.run / trial.user_attrs["spec_path"])
        assert spec.to_json() == trial.user_attrs["spec"]
        assert spec.keyframe_interval == trial.params["keyframe_interval"]
        assert trial.values[1] == pytest.approx(spec.totals.amortised_macs / 1e9)
        assert trial.constraints["budget"] == pytest.approx(spec.totals.amortised_macs / budget - 1)
        probabilities = trial.user_attrs["probabilities"]
        assert {layer.path for layer in spec.layers} == set(probabilities)
        assert all(sum(p.values()) == pytest.approx(1.0) for p in probabilities.values())


def test_pareto_flags_match_a_brute_force_front(tiny_study):
    options, _ = tiny_study
    table = pd.read_parquet(options.run / runs.TRIALS_PARQUET)
    feasible = table[(table["state"] == "COMPLETE") & table["feasible"]]
    points = {r.trial: (r.agreement, r.gflops) for r in feasible.itertuples()}
    expected = {n for n, p in points.items() if not any(_dominates(q, p) for q in points.values())}
    assert set(table.loc[table["pareto"], "trial"]) == expected
    assert expected  # the budget is generous enough for some trials


def test_export_best_and_by_number(tiny_study, tmp_path):
    options, study = tiny_study
    trial, path = export_trial(study, None, tmp_path / "best.json")
    assert trial.number == best_trial(study).number
    front = study.best_trials
    assert trial.values[0] == max(t.values[0] for t in front)
    assert load_spec(path).to_json() == trial.user_attrs["spec"]
    _, path = export_trial(study, 1, tmp_path / "one.json")
    assert load_spec(path) == load_spec(options.run / "trials/0001/spec.json")
    with pytest.raises(NasError, match="no trial 99"):
        export_trial(study, 99, tmp_path / "x.json")


def test_rerun_continues_the_study_without_repeating_trials(tmp_path):
    out = tmp_path / "run"
    first = run_study(_options(out, trials=2))
    before = {
        t.number: (t.params, t.values) for t in first.get_trials(states=(TrialState.COMPLETE,))
    }
    again = run_study(_options(out, trials=3))
    after = {
        t.number: (t.params, t.values) for t in again.get_trials(states=(TrialState.COMPLETE,))
    }
    assert len(after) == 3 and set(before) < set(after)
    assert all(after[n] == before[n] for n in before)  # kept as they were
    assert len({str(p) for p, _ in after.values()}) == 3  # no point run twice
    assert pd.read_parquet(out / runs.TRIALS_PARQUET)["trial"].tolist() == sorted(after)


def test_a_study_for_another_budget_is_refused(tmp_path):
    out = tmp_path / "run"
    run_study(_options(out, trials=1))
    other = _options(out, trials=2)
    other.search.budget = f"{0.7 * TINY_MACS / 1e9}GFLOPs"
    with pytest.raises(NasError, match="was made for other settings"):
        run_study(other)


def test_a_point_that_cannot_meet_the_budget_is_pruned(tmp_path):
    # At this budget K=2 cannot fit (the key frame alone is over it); K=4 can.
    options = _options(tmp_path / "run", keyframe_interval_auto=True)
    options.search.budget = f"{0.45 * TINY_MACS / 1e9}GFLOPs"
    objective = Objective(options)
    objective.check()  # some point of the space fits
    point = {
        "lr_weights": 1e-4, "lr_arch": 0.05, "tau_start": 2.0, "tau_end": 0.2, "dual_lr": 0.5,
        "search_space": "default",
    }  # fmt: skip
    with pytest.raises(optuna.TrialPruned, match="key-frame interval"):
        objective(optuna.trial.FixedTrial(point | {"keyframe_interval": 2}))
    agreement, gflops = objective(optuna.trial.FixedTrial(point | {"keyframe_interval": 4}))
    assert 0 <= agreement <= 1 and gflops * 1e9 <= 0.45 * TINY_MACS


def test_load_run_and_its_errors(tiny_study, tmp_path):
    options, study = tiny_study
    _, loaded = open_run_study(options.run)
    assert loaded.study_name == study.study_name and len(loaded.trials) == len(study.trials)
    with pytest.raises(NasError, match=r"no config\.json"):
        open_run_study(tmp_path)


def test_urls():
    assert normalise_url("postgresql://u:p@h:5/db") == "postgresql+psycopg://u:p@h:5/db"
    assert normalise_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"
    assert "secret" not in mask_url("postgresql+psycopg://u:secret@h/db")


# The command line, as a user runs it.

TINY_CLI = [
    "--teacher", "tests.conftest:build_tiny", "--video", "synthetic:frames=24,size=64x96",
    "--input-size", "64x96", "--max-frames", "24", "--device", "cpu", "--train-steps", "2",
    "--budget", f"{0.6 * TINY_MACS / 1e9}GFLOPs",
]  # fmt: skip


def test_report_and_export_commands(run_nas, tiny_study, tmp_path):
    options, study = tiny_study
    result = run_nas("report", str(options.run))
    assert result.returncode == 0, result.stderr
    front = len(study.best_trials)
    assert f"Pareto-optimal trials (feasible): {front} of {len(study.trials)}" in result.stdout
    result = run_nas("report", str(options.run), "--all")
    assert f"all trials: {len(study.trials)} of {len(study.trials)}" in result.stdout
    result = run_nas("export", str(options.run), "--trial", "2", "--out", str(tmp_path / "s.json"))
    assert result.returncode == 0, result.stderr
    assert load_spec(tmp_path / "s.json") == load_spec(options.run / "trials/0002/spec.json")
    result = run_nas("export", str(options.run), "--trial", "7", "--out", str(tmp_path / "x.json"))
    assert result.returncode == 2 and result.stderr.startswith("error: no trial 7")
    assert not (tmp_path / "x.json").exists()
    result = run_nas("report", str(tmp_path))
    assert result.returncode == 2 and "is not a study run folder" in result.stderr


def _nas(*args: str, cwd) -> subprocess.Popen:
    env = dict(os.environ, COLUMNS="200", NAS_CACHE_DIR=str(cwd / "cache"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "nas", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _complete(run) -> list[int]:
    storage = optuna.storages.RDBStorage(f"sqlite:///{run / runs.SQLITE}")
    study = optuna.load_study(study_name="nas", storage=storage)
    return sorted(t.number for t in study.get_trials(states=(TrialState.COMPLETE,)))


def _mid_trial(run, number: int) -> bool:
    """Trial `number` has logged search steps (so it is running, not done)."""
    log = runs.trial_dir(run, number) / runs.TRIAL_LOG
    return log.is_file() and log.read_text().count("\n") > 3


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_search_continues_where_it_stopped(tmp_path, sig):
    run = tmp_path / "run"
    args = ["search", *TINY_CLI, "--steps", "80", "--trials", "3", "--heartbeat", "1"]
    args += ["--out", str(run)]
    proc = _nas(*args, cwd=tmp_path)
    _wait_for(lambda: _mid_trial(run, 1))
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    if sig is signal.SIGINT:
        assert proc.returncode == 130 and "rerun the same command to continue it" in stderr
    done = _complete(run)
    assert done == [0]  # trial 0 finished, trial 1 was cut off
    params0 = pd.read_parquet(run / runs.TRIALS_PARQUET).iloc[0]
    time.sleep(3)  # past the heartbeat's grace period: the killed trial is stale
    again = _nas(*args, cwd=tmp_path)
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    table = pd.read_parquet(run / runs.TRIALS_PARQUET)
    complete = table[table["state"] == "COMPLETE"]
    assert len(complete) == 3 and 0 in complete["trial"].tolist()
    kept = complete[complete["trial"] == 0].iloc[0]
    assert kept["param_lr_weights"] == params0["param_lr_weights"]
    assert kept["agreement"] == params0["agreement"]
    cut = table[table["trial"] == 1].iloc[0]
    assert cut["state"] == "FAIL"  # recorded, not lost, and not counted
    assert table["trial"].is_unique and (table["state"] != "RUNNING").all()
    if sig is signal.SIGKILL:  # a stale trial is queued again with the same hyperparameters
        retried = complete[complete["param_lr_weights"] == cut["param_lr_weights"]]
        assert len(retried) == 1 and retried.iloc[0]["trial"] > 1


def test_a_latency_budget_adds_measured_latency_as_an_objective(tmp_path):
    options = _options(tmp_path / "run", trials=2)
    options.search.budget = "1s"  # generous: every trial is feasible, latency is measured
    study = run_study(options)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    table = pd.read_parquet(options.run / runs.TRIALS_PARQUET)
    complete = table[table["state"] == "COMPLETE"]
    assert len(complete) == 2 and (complete["latency_ms"] > 0).all()
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        spec = load_spec(options.run / trial.user_attrs["spec_path"])
        assert trial.values[2] == pytest.approx(spec.metrics["amortised_ms"])
        assert trial.constraints["budget"] == pytest.approx(spec.metrics["amortised_ms"] / 1e3 - 1)
    info = runs.StudyInfo.model_validate_json((options.run / runs.STUDY_INFO).read_text())
    assert info.budget_kind == "latency" and info.teacher_latency_ms > 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_interrupt_dropped_in_a_finalizer_is_still_seen():
    """Python prints and drops a KeyboardInterrupt raised in `__del__`; the search must still
    stop (at its next step), so the CLI notes every Ctrl-C as well."""
    from nas.cli.study import _remember_interrupts

    class Finalised:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)

    seen: list[int] = []
    before = signal.getsignal(signal.SIGINT)
    with _remember_interrupts(seen):
        Finalised()  # dropped at once: the interrupt is raised, and dropped, in its __del__
        for _ in range(100):  # the handler runs between bytecodes
            pass
    assert seen == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is before


def test_search_cli_refuses_a_latency_limit_in_flops(tmp_path, run_nas):
    run = tmp_path / "run"
    result = run_nas("search", *TINY_CLI, "--max-latency", "5GFLOPs", "--out", str(run))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: invalid --max-latency 5GFLOPs: expected a time")
    assert "Traceback" not in result.stderr
