"""Many workers on one study in a real PostgreSQL server (started by `.ci/services`)."""

from __future__ import annotations

import signal
import time

import optuna
import pandas as pd
from optuna.trial import TrialState

from nas.study import runs
from nas.study.results import open_run_study, write_results
from tests.test_study import TINY_CLI, _mid_trial, _nas, _wait_for


def _worker(url: str, run, cwd, *extra: str):
    args = ["search", *TINY_CLI, "--storage", url, "--study", "shared", "--heartbeat", "1"]
    return _nas(*args, *extra, "--out", str(run), cwd=cwd)


def _ran_here(run) -> set[int]:
    """Trials this worker ran itself (only the worker that ran a trial has its step log)."""
    return {int(p.parent.name) for p in (run / runs.TRIALS_DIR).glob(f"*/{runs.TRIAL_LOG}")}


def test_two_workers_share_one_study(postgres_db, tmp_path):
    runs_ = [tmp_path / "a", tmp_path / "b"]
    workers = [
        _worker(postgres_db, run, tmp_path, "--steps", "6", "--trials", "6") for run in runs_
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=600)
        assert worker.returncode == 0, stderr
    study = optuna.load_study(study_name="shared", storage=postgres_db)
    trials = study.get_trials()
    complete = [t.number for t in trials if t.state is TrialState.COMPLETE]
    # Each worker stops once 6 are complete; the other may be finishing one more.
    assert 6 <= len(complete) <= 7
    assert all(t.state is TrialState.COMPLETE for t in trials)  # none lost, none left running
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    a, b = (_ran_here(run) for run in runs_)
    assert a and b and not a & b  # both worked, no trial ran twice
    assert a | b == set(complete)
    for run in runs_:  # each run folder lists the whole study, specs of the other's trials too
        write_results(open_run_study(run)[1], run)  # as `nas report` does: the worker that finished
        table = pd.read_parquet(run / runs.TRIALS_PARQUET)  # first saw the other's last running
        assert sorted(table["trial"]) == sorted(complete)
        assert all((run / path).is_file() for path in table["spec_path"])


def test_a_killed_worker_leaves_the_study_usable(postgres_db, tmp_path):
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    a = _worker(postgres_db, run_a, tmp_path, "--steps", "80", "--trials", "4")
    _wait_for(lambda: any(_mid_trial(run_a, n) for n in range(3)))
    b = _worker(postgres_db, run_b, tmp_path, "--steps", "40", "--trials", "4")
    a.send_signal(signal.SIGKILL)
    a.communicate(timeout=60)
    killed = {n for n in range(3) if _mid_trial(run_a, n)} - {
        t.number
        for t in optuna.load_study(study_name="shared", storage=postgres_db).get_trials()
        if t.state is TrialState.COMPLETE
    }
    _, stderr = b.communicate(timeout=600)
    assert b.returncode == 0, stderr
    study = optuna.load_study(study_name="shared", storage=postgres_db)
    by_number = {t.number: t for t in study.get_trials()}
    assert len([t for t in by_number.values() if t.state is TrialState.COMPLETE]) >= 4
    (number,) = killed
    dead = by_number[number]
    if dead.state is TrialState.RUNNING:  # b may have finished before it went stale: look now
        time.sleep(3)
        optuna.storages.fail_stale_trials(study)
        dead = study._storage.get_trial(dead._trial_id)
    assert dead.state is TrialState.FAIL
    # Queued again with the same hyperparameters (and run by b unless b was already done).
    retries = [t for t in by_number.values() if t.system_attrs.get("failed_trial") == number]
    assert len(retries) <= 1 and all(t.params == dead.params for t in retries)
