"""A study's results as files in its run folder: the trials table (CSV and Parquet, pandas) and
the reference values the figures need (`study.json`); and the way back from a run folder to its
study, for `nas report`, `nas export` and `nas dashboard`.

Specs of trials that other workers ran (on other machines) are written into this run folder from
the study's own record, so every complete trial's spec is a file here.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from nas.core.errors import NasError
from nas.core.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from nas.cost.budget import parse_budget, resolve_budget
from nas.spec import save_spec
from nas.student.compare import BASELINES, beaten_by
from nas.study import runs
from nas.study.hpo import StudyOptions, mask_url, objectives, open_storage, trial_spec


def _feasible(trial: FrozenTrial) -> bool:
    return trial.state is TrialState.COMPLETE and all(v <= 0 for v in trial.constraints.values())


def _metrics(trial: FrozenTrial) -> dict[str, float]:
    """The metrics of a trial's spec, as the study stores it (empty before it has one)."""
    return json.loads(trial.user_attrs.get("spec", "{}")).get("metrics", {})


def trials_table(study: optuna.Study, run: Path) -> pd.DataFrame:
    """One row per trial: `nas.study.runs.COLUMNS`, then `param_<name>` for each hyperparameter."""
    names, _ = objectives(parse_budget(study.user_attrs["identity"]["budget"]).kind)
    front = {t.number for t in study.best_trials}
    rows = []
    for trial in study.get_trials(deepcopy=False):
        values = dict(zip(names, trial.values, strict=True)) if trial.values else {}
        spec_path = trial.user_attrs.get("spec_path", "")
        if spec_path and "spec" in trial.user_attrs and not (run / spec_path).is_file():
            save_spec(trial_spec(study, trial), run / spec_path)  # run by another worker
            probabilities = trial.user_attrs.get("probabilities")
            if probabilities is not None:
                atomic_write_json(
                    (run / spec_path).parent / runs.TRIAL_PROBABILITIES, probabilities
                )
        measured = _metrics(trial)
        done = trial.datetime_complete
        start = trial.datetime_start
        rows.append(
            {
                "trial": trial.number,
                "state": trial.state.name,
                "agreement": values.get("agreement", math.nan),
                "r": trial.user_attrs.get("held_out_r", math.nan),
                **{f"{key}_r": measured.get(f"baseline_{key}_r", math.nan) for key in BASELINES},
                "beats_baselines": (
                    ("no" if beaten_by(measured) else "yes") if "heldout_r" in measured else ""
                ),
                "gflops": values.get("gflops", math.nan),
                "latency_ms": values.get("latency_ms", math.nan),
                "speedup": measured.get("speedup", math.nan),
                "feasible": _feasible(trial),
                "pareto": trial.number in front,
                "spec_path": spec_path,
                "duration_s": (done - start).total_seconds() if done and start else math.nan,
                "started": start.isoformat(timespec="seconds") if start else "",
            }
            | {runs.PARAM_PREFIX + k: v for k, v in trial.params.items()}
        )
    if not rows:
        return pd.DataFrame(columns=list(runs.COLUMNS))
    return pd.DataFrame(rows).sort_values("trial", ignore_index=True)


def write_results(study: optuna.Study, run: Path) -> pd.DataFrame:
    """The trials table as `trials.csv` and `trials.parquet`, each written atomically."""
    table = trials_table(study, run)
    _note_teacher_latency(study, run)
    atomic_write_text(run / runs.TRIALS_CSV, table.to_csv(index=False))
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    atomic_write_bytes(run / runs.TRIALS_PARQUET, buffer.getvalue())
    return table


def _note_teacher_latency(study: optuna.Study, run: Path) -> None:
    """Under a latency budget, `study.json` gains the teacher's measured ms per frame (the
    median of what the trials measured on their key frames), for the latency figure."""
    path = run / runs.STUDY_INFO
    if not path.is_file():
        return
    info = runs.StudyInfo.model_validate_json(path.read_text())
    if info.budget_kind != "latency":
        return
    metrics = (_metrics(t) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    measured = sorted(m["keyframe_ms"] for m in metrics if "keyframe_ms" in m)
    if measured:
        info = info.model_copy(update={"teacher_latency_ms": measured[len(measured) // 2]})
        atomic_write_json(path, json.loads(info.model_dump_json()))


def write_study_info(study: optuna.Study, options: StudyOptions) -> runs.StudyInfo:
    """`study.json`: the teacher's cost at full size, the budget and the objectives."""
    from nas.core.sizes import parse_size
    from nas.cost.macs import count_macs
    from nas.teachers import load_teacher

    search = options.search
    teacher = load_teacher(
        search.teacher,
        weights=search.teacher_weights,
        num_classes=search.num_classes,
        device="meta",  # teachers that cannot be counted on meta stay on the CPU
    )
    size = parse_size(search.input_size) if search.input_size else teacher.input_spec.default_size
    teacher_macs = count_macs(teacher.module, size)
    budget = resolve_budget(search.budget, teacher_macs=teacher_macs)  # `50%` of the teacher
    names, directions = objectives(budget.kind)
    info = runs.StudyInfo(
        study=study.study_name,
        storage=(  # the run folder's own file needs no absolute path
            f"sqlite:///{runs.SQLITE} (in the run folder)"
            if options.storage is None
            else mask_url(options.storage_url())
        ),
        teacher=teacher.name,
        input_size=size,
        teacher_gflops=teacher_macs / 1e9,
        budget_kind=budget.kind.value,
        budget_value=budget.value,
        budget_text=str(budget),  # as given, and where relative its value: `50% = 1.5MFLOPs`
        objectives=names,
        directions=directions,
    )
    atomic_write_json(options.run / runs.STUDY_INFO, json.loads(info.model_dump_json()))
    return info


def open_run_study(run: str | Path) -> tuple[StudyOptions, optuna.Study]:
    """The options a run folder was made with and its study, opened from its storage."""
    run = Path(run)
    config = run / runs.CONFIG
    if not config.is_file():
        raise NasError(f"{run} is not a study run folder: it has no {runs.CONFIG}")
    try:
        options = StudyOptions.model_validate_json(config.read_text())
    except ValueError as exc:
        raise NasError(
            f"{config} is not a study configuration: {str(exc).splitlines()[0]}"
        ) from exc
    options = options.model_copy(
        update={"search": options.search.model_copy(update={"out": str(run)})}
    )
    storage = open_storage(options.storage_url(), options.heartbeat)
    try:
        study = optuna.load_study(study_name=options.study_name, storage=storage)
    except KeyError as exc:
        raise NasError(
            f"no study '{options.study_name}' in {mask_url(options.storage_url())}"
        ) from exc
    return options, study
