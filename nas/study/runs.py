"""Where things live in a study's run folder, and the trials table's columns.

    RUN/
      config.json            the study's options (written first)
      study.json             the reference values every figure needs (see `StudyInfo`)
      study.db               the Optuna study, when stored in SQLite (the default)
      trials.csv             one row per trial (`COLUMNS`, then `param_*` hyperparameters)
      trials.parquet         the same table, typed
      dashboard.html         the self-contained dashboard
      trials/0007/           one folder per trial number:
        config.json            the inner search's options
        log.csv                one row per search step (nas.searching.supernet.StepLog)
        probabilities.json     {layer path: {candidate: probability}} at the end of the search
        spec.json              the trial's exported spec (written last)

The table is read back by `nas report`, `nas export` and the dashboard; nothing else has to know
these names.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

CONFIG = "config.json"
STUDY_INFO = "study.json"
SQLITE = "study.db"
TRIALS_CSV = "trials.csv"
TRIALS_PARQUET = "trials.parquet"
DASHBOARD = "dashboard.html"
TRIALS_DIR = "trials"
TRIAL_LOG = "log.csv"
TRIAL_SPEC = "spec.json"
TRIAL_PROBABILITIES = "probabilities.json"

# The trials table: these columns, then one `param_<name>` column per sampled hyperparameter.
COLUMNS = {
    "trial": "int: Optuna's trial number",
    "state": "str: COMPLETE, FAIL, RUNNING, PRUNED or WAITING",
    "agreement": "float: agreement with the teacher on held-out frames (up; NaN if not done)",
    "r": "float: R on held-out frames, the share of the teacher's change recovered (NaN: none)",
    "repeat_r": "float: R of the key frame repeated at the same cost (NaN: not scored)",
    "lowres_r": "float: R of the teacher on smaller frames at the same cost (NaN: none)",
    "uniform_r": "float: R of the uniform student at the same cost (NaN: none)",
    "beats_baselines": "str: yes, no (beaten by a cheap answer at its cost), or empty",
    "gflops": "float: amortised GFLOPs per frame (multiply-adds / 1e9; down)",
    "latency_ms": "float: measured amortised ms per frame (NaN unless the budget is a latency)",
    "speedup": "float: measured amortised speed-up over the teacher (delta mode; NaN otherwise)",
    "feasible": "bool: within the budget",
    "pareto": "bool: on the front of the COMPLETE feasible trials (Optuna's best_trials)",
    "spec_path": "str: the trial's spec, relative to the run folder ('' if none)",
    "duration_s": "float: wall-clock seconds of the trial (NaN while running)",
    "started": "str: ISO time the trial started",
}
# Columns added after the first tables were written: a table without them reads as NaN there.
# Read as NaN (or empty) from tables written before them.
LATER_COLUMNS = ("speedup", "r", "repeat_r", "lowres_r", "uniform_r", "beats_baselines")
PARAM_PREFIX = "param_"  # empty where a trial did not sample it (pruned before, or not `auto`)


class StudyInfo(BaseModel):
    """What the figures compare against, written once per run folder as `study.json`."""

    model_config = ConfigDict(extra="forbid")

    study: str  # the Optuna study name
    storage: str  # the storage URL, password masked
    teacher: str
    input_size: tuple[int, int]
    teacher_gflops: float  # the teacher on one frame
    teacher_latency_ms: float | None = None  # measured, where the budget is a latency
    budget_kind: str  # "macs" or "latency"
    budget_value: float  # multiply-adds, or seconds
    budget_text: str  # as the user wrote it: "5GFLOPs", "40ms"
    objectives: list[str]  # column names, e.g. ["agreement", "gflops"]
    directions: list[str]  # "maximize" / "minimize", one per objective


def trial_dir(run: str | Path, number: int) -> Path:
    return Path(run) / TRIALS_DIR / f"{number:04d}"
