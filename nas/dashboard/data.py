"""The dashboard's data: a run folder read into plain values, one function per figure.

`load_run` reads the run folder (layout in `nas.study.runs`); every other function turns the
`RunData` into a small dataclass of lists (JSON-able: `dataclasses.asdict`) that exactly one
figure draws. Nothing here knows about plotly.

Units: the trials table and the Pareto figure use amortised GFLOPs per frame (multiply-adds /
1e9, the toolkit's convention); per-layer costs are MMACs (multiply-adds / 1e6) on a delta frame;
search curves are in GFLOPs for a multiply-add budget and in ms for a latency budget.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from nas.core.errors import NasError
from nas.graph.layers import conv_macs
from nas.searching.supernet import StepLog
from nas.spec import Spec, load_spec
from nas.study import runs
from search_spaces import decode

COMPLETE = "COMPLETE"
STEP_FIELDS = [f.name for f in dataclasses.fields(StepLog)]
_FLOAT_COLUMNS = ("agreement", "r", "gflops", "latency_ms", "speedup", "duration_s")
# R of the cheap answers at each trial's cost (`nas.student.compare`), with their front-table
# headers.
_BASELINE_R = {"repeat_r": "R key repeated", "lowres_r": "R low-res", "uniform_r": "R uniform"}
_BOOL_COLUMNS = ("feasible", "pareto")
_TEXT_COLUMNS = ("state", "spec_path", "started")
_TRUE = {"true", "1", "yes", "t", "y", "1.0"}
_FALSE = {"false", "0", "no", "f", "n", "0.0", "", "nan", "none", "<na>"}


# --- the run folder ------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialRow:
    """One row of the trials table (`nas.study.runs.COLUMNS`), hyperparameters without the
    prefix."""

    trial: int
    state: str
    agreement: float
    r: float  # the share of the teacher's change recovered on held-out frames (NaN: none)
    gflops: float
    latency_ms: float
    speedup: float  # measured, over the teacher (NaN: not measured)
    feasible: bool
    pareto: bool
    spec_path: str
    duration_s: float
    started: str
    params: dict[str, Any] = field(default_factory=dict)  # name -> value; unsampled left out
    # R of the cheap answers at this trial's cost (NaN: not scored), and whether it beats them
    # all ("yes", "no", or "" where not scored).
    baseline_r: dict[str, float] = field(default_factory=dict)
    beats_baselines: str = ""

    @property
    def complete(self) -> bool:
        return self.state == COMPLETE

    @property
    def on_front(self) -> bool:
        return self.complete and self.pareto


@dataclass
class RunData:
    """Everything the dashboard shows, as read from one run folder."""

    run: Path
    info: runs.StudyInfo
    trials: list[TrialRow]  # in trial-number order
    param_names: list[str]  # the hyperparameters, without `param_`, in table order
    specs: dict[int, Spec] = field(default_factory=dict)  # trial -> its exported spec
    logs: dict[int, dict[str, list[float]]] = field(default_factory=dict)  # trial -> StepLog cols
    probabilities: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)

    def trial(self, number: int) -> TrialRow:
        for row in self.trials:
            if row.trial == number:
                return row
        raise NasError(f"run folder '{self.run}' has no trial {number}")


def load_run(run: str | Path) -> RunData:
    """Read `study.json`, the trials table and each trial's spec, log and probabilities.

    A missing or invalid `study.json`, or a malformed trials table, is a `NasError` naming the
    file; a table not written yet means no trials; a trial's missing files mean that trial has
    no curves or map. A log.csv cut short mid-row (a search still writing) keeps its full rows.
    """
    run = Path(run)
    info = _study_info(run / runs.STUDY_INFO)
    trials, param_names = _trials(run)
    data = RunData(run=run, info=info, trials=trials, param_names=param_names)
    for row in trials:
        folder = runs.trial_dir(run, row.trial)
        spec_file = run / row.spec_path if row.spec_path else folder / runs.TRIAL_SPEC
        if spec_file.is_file():
            data.specs[row.trial] = load_spec(spec_file)
        log = _step_log(folder / runs.TRIAL_LOG)
        if log is not None:
            data.logs[row.trial] = log
        probabilities = _probabilities(folder / runs.TRIAL_PROBABILITIES)
        if probabilities is not None:
            data.probabilities[row.trial] = probabilities
    return data


def _study_info(path: Path) -> runs.StudyInfo:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise NasError(
            f"study file '{path}' does not exist; is this a study's run folder?"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NasError(f"study file '{path}' cannot be read ({exc})") from exc
    try:
        return runs.StudyInfo.model_validate_json(text)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        raise NasError(f"study file '{path}' is invalid: {where}: {error['msg']}") from None


def _read_table(run: Path) -> tuple[pd.DataFrame | None, Path]:
    parquet, text = run / runs.TRIALS_PARQUET, run / runs.TRIALS_CSV
    if parquet.is_file():
        try:
            return pd.read_parquet(parquet), parquet
        except Exception as exc:  # pyarrow raises several types for a damaged file
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise NasError(f"trials table '{parquet}' is not readable Parquet ({reason})") from None
    if text.is_file():
        try:
            frame = pd.read_csv(text, dtype={name: str for name in _TEXT_COLUMNS})
        except pd.errors.EmptyDataError:
            return None, text
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            reason = str(exc).splitlines()[0]
            raise NasError(f"trials table '{text}' is not readable CSV ({reason})") from None
        return frame, text
    return None, parquet


def _trials(run: Path) -> tuple[list[TrialRow], list[str]]:
    frame, path = _read_table(run)
    if frame is None:
        return [], []
    for name in runs.LATER_COLUMNS:
        if name not in frame.columns:
            frame[name] = "" if name == "beats_baselines" else math.nan
    missing = [name for name in runs.COLUMNS if name not in frame.columns]
    if missing:
        raise NasError(f"trials table '{path}' lacks the column(s) {', '.join(missing)}")
    params = [c for c in frame.columns if str(c).startswith(runs.PARAM_PREFIX)]
    try:
        numbers = [_as_int(v) for v in frame["trial"]]
    except ValueError:
        raise NasError(f"trials table '{path}': column 'trial' is not whole numbers") from None
    if len(set(numbers)) != len(numbers):
        raise NasError(f"trials table '{path}': column 'trial' repeats a trial number")
    floats = {}
    for name in _FLOAT_COLUMNS:
        try:
            floats[name] = pd.to_numeric(frame[name], errors="raise").astype(float).tolist()
        except (ValueError, TypeError):
            raise NasError(f"trials table '{path}': column '{name}' is not numeric") from None
    flags = {}
    for name in _BOOL_COLUMNS:
        try:
            flags[name] = [_as_bool(v) for v in frame[name]]
        except ValueError as exc:
            raise NasError(f"trials table '{path}': column '{name}' {exc}") from None
    for name in _BASELINE_R:
        try:
            floats[name] = pd.to_numeric(frame[name], errors="raise").astype(float).tolist()
        except (ValueError, TypeError):
            raise NasError(f"trials table '{path}': column '{name}' is not numeric") from None
    texts = {name: [_as_text(v) for v in frame[name]] for name in _TEXT_COLUMNS}
    texts["beats_baselines"] = [_as_text(v) for v in frame["beats_baselines"]]
    rows = []
    for i, number in enumerate(numbers):
        values = {p[len(runs.PARAM_PREFIX) :]: _as_value(frame[p].iloc[i]) for p in params}
        rows.append(
            TrialRow(
                trial=number,
                state=texts["state"][i].upper(),
                **{name: floats[name][i] for name in _FLOAT_COLUMNS},
                **{name: flags[name][i] for name in _BOOL_COLUMNS},
                spec_path=texts["spec_path"][i],
                started=texts["started"][i],
                params={k: v for k, v in values.items() if v is not None},
                baseline_r={name: floats[name][i] for name in _BASELINE_R},
                beats_baselines=texts["beats_baselines"][i],
            )
        )
    rows.sort(key=lambda row: row.trial)
    return rows, [p[len(runs.PARAM_PREFIX) :] for p in params]


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _as_int(value: Any) -> int:
    if _missing(value) or isinstance(value, bool):
        raise ValueError(value)
    number = float(value)
    if not number.is_integer():
        raise ValueError(value)
    return int(number)


def _as_bool(value: Any) -> bool:
    if _missing(value):
        return False
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"holds {value!r}, not true/false")


def _as_text(value: Any) -> str:
    return "" if _missing(value) else str(value)


def _as_value(value: Any) -> Any:
    """A hyperparameter as a plain Python value (None where the trial did not sample it)."""
    if _missing(value):
        return None
    return value.item() if hasattr(value, "item") else value  # numpy scalars to Python


def _step_log(path: Path) -> dict[str, list[float]] | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise NasError(f"search log '{path}' cannot be read ({exc})") from exc
    lines = text.splitlines()
    if not lines:
        return None  # created, header not written yet
    reader = csv.DictReader(lines)
    missing = [name for name in STEP_FIELDS if name not in (reader.fieldnames or [])]
    if missing:
        raise NasError(f"search log '{path}' lacks the column(s) {', '.join(missing)}")
    columns: dict[str, list[float]] = {name: [] for name in STEP_FIELDS}
    for row in reader:
        try:
            values = [float(row[name]) for name in STEP_FIELDS]
        except (TypeError, ValueError):
            continue  # a row cut short while the search is still writing
        for name, value in zip(STEP_FIELDS, values, strict=True):
            columns[name].append(value)
    return columns


def _probabilities(path: Path) -> dict[str, dict[str, float]] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NasError(f"probabilities file '{path}' is not readable JSON ({exc})") from exc
    bad = NasError(f"probabilities file '{path}' is not {{layer path: {{candidate: probability}}}}")
    if not isinstance(data, dict):
        raise bad
    result = {}
    for layer, probs in data.items():
        if not isinstance(probs, dict):
            raise bad
        try:
            result[str(layer)] = {str(name): float(p) for name, p in probs.items()}
        except (TypeError, ValueError):
            raise bad from None
    return result


# --- formatting ------------------------------------------------------------------------------


def format_value(value: Any) -> str:
    """A hyperparameter or metric for people: floats to 4 significant digits."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.4g}"
    return str(value)


def hover_text(row: TrialRow, param_names: list[str]) -> str:
    """Trial number and hyperparameters, one per line (HTML line breaks, as plotly wants)."""
    lines = [f"<b>trial {row.trial}</b>"]
    lines += [
        f"{escape(name)} = {escape(format_value(row.params[name]), quote=False)}"
        for name in param_names
        if name in row.params
    ]
    return "<br>".join(lines)


# --- the Pareto figure -----------------------------------------------------------------------


@dataclass
class ParetoData:
    """Completed trials in (GFLOPs, agreement), the teacher, the budget and the front."""

    trials: list[int]
    gflops: list[float]
    agreement: list[float]
    feasible: list[bool]
    on_front: list[bool]
    hover: list[str]
    teacher_gflops: float
    teacher_agreement: float  # 1.0: the teacher agrees with itself
    budget_gflops: float | None  # None for a latency budget (no GFLOPs line)
    budget_text: str
    budget_note: str  # what the budget means on this figure
    front_trials: list[int]  # the on-front trials, by GFLOPs
    front_gflops: list[float]
    front_agreement: list[float]
    staircase_gflops: list[float]  # the front drawn as steps: best agreement at most x GFLOPs
    staircase_agreement: list[float]
    left_out: list[int]  # completed trials without finite GFLOPs and agreement


def pareto_points(data: RunData) -> ParetoData:
    complete = [row for row in data.trials if row.complete]
    shown = [row for row in complete if math.isfinite(row.gflops) and math.isfinite(row.agreement)]
    info = data.info
    if info.budget_kind == "macs":
        budget_gflops = info.budget_value / 1e9
        note = f"budget {info.budget_text} (dashed line)"
    else:
        budget_gflops = None
        note = f"budget {info.budget_text} is a latency: no GFLOPs line (see latency figure)"
    front = sorted(
        (row for row in shown if row.pareto), key=lambda row: (row.gflops, -row.agreement)
    )
    xs: list[float] = []
    ys: list[float] = []
    for row in front:
        if xs:
            xs.append(row.gflops)
            ys.append(ys[-1])
        xs.append(row.gflops)
        ys.append(row.agreement)
    return ParetoData(
        trials=[row.trial for row in shown],
        gflops=[row.gflops for row in shown],
        agreement=[row.agreement for row in shown],
        feasible=[row.feasible for row in shown],
        on_front=[row.pareto for row in shown],
        hover=[hover_text(row, data.param_names) for row in shown],
        teacher_gflops=info.teacher_gflops,
        teacher_agreement=1.0,
        budget_gflops=budget_gflops,
        budget_text=info.budget_text,
        budget_note=note,
        front_trials=[row.trial for row in front],
        front_gflops=[row.gflops for row in front],
        front_agreement=[row.agreement for row in front],
        staircase_gflops=xs,
        staircase_agreement=ys,
        left_out=sorted({row.trial for row in complete} - {row.trial for row in shown}),
    )


# --- the architecture of one trial -----------------------------------------------------------


def default_trial(data: RunData) -> int | None:
    """The trial to show in detail: the on-front trial with the highest agreement (with a spec);
    failing that the completed trial with the highest agreement; None if no trial has a spec."""
    for pool in (
        [row for row in data.trials if row.on_front],
        [row for row in data.trials if row.complete],
    ):
        pool = [r for r in pool if r.trial in data.specs and math.isfinite(r.agreement)]
        if pool:
            return max(pool, key=lambda row: (row.agreement, -row.gflops, -row.trial)).trial
    return None


def _chosen_trial(data: RunData, trial: int | None) -> int | None:
    if trial is None:
        return default_trial(data)
    data.trial(trial)  # an unknown number is an error
    if trial not in data.specs:
        raise NasError(f"trial {trial} of run folder '{data.run}' has no spec yet")
    return trial


_KIND_ORDER = {"lowrank": 0, "sep": 1, "full": 2}


def candidate_order(name: str) -> tuple:
    """Sort key for candidate names, roughly cheapest first: zero, then half-resolution kinds,
    then full-resolution ones; within a kind by rank."""
    candidate = decode(name)
    if candidate.kind == "zero":
        return (0,)
    return (1, -candidate.down, _KIND_ORDER.get(candidate.kind, 1.5), candidate.rank or 0, name)


def candidate_kind(name: str) -> str:
    """`down2_lowrank_r16` -> `down2_lowrank`: the kind with its downsampling, without the rank."""
    candidate = decode(name)
    return f"down{candidate.down}_{candidate.kind}" if candidate.down != 1 else candidate.kind


@dataclass
class ArchMap:
    """Per layer of one trial (spec order): the chosen candidate and every probability."""

    trial: int
    agreement: float
    gflops: float
    layers: list[str]
    candidates: list[str]  # every candidate name of any layer, roughly cheapest first
    kinds: list[str]  # per candidate: its kind (with `down2_`), without rank
    probabilities: list[list[float]]  # layers x candidates; NaN where a layer lacks the candidate
    has_probabilities: bool  # False: the trial wrote no probabilities.json (matrix all NaN)
    chosen: list[str]  # per layer
    chosen_kind: list[str]
    chosen_rank: list[int | None]
    chosen_index: list[int]  # per layer: the chosen candidate's column


def architecture_map(data: RunData, trial: int | None = None) -> ArchMap | None:
    """The map of `trial` (default: `default_trial`); None when no trial has a spec yet."""
    trial = _chosen_trial(data, trial)
    if trial is None:
        return None
    spec = data.specs[trial]
    probs = data.probabilities.get(trial, {})
    names = {layer.candidate for layer in spec.layers}
    for layer in spec.layers:
        names.update(probs.get(layer.path, {}))
    candidates = sorted(names, key=candidate_order)
    column = {name: i for i, name in enumerate(candidates)}
    matrix = []
    for layer in spec.layers:
        row = [math.nan] * len(candidates)
        for name, p in probs.get(layer.path, {}).items():
            row[column[name]] = p
        matrix.append(row)
    chosen = [decode(layer.candidate) for layer in spec.layers]
    row = data.trial(trial)
    return ArchMap(
        trial=trial,
        agreement=row.agreement,
        gflops=row.gflops,
        layers=[layer.path for layer in spec.layers],
        candidates=candidates,
        kinds=[candidate_kind(name) for name in candidates],
        probabilities=matrix,
        has_probabilities=any(layer.path in probs for layer in spec.layers),
        chosen=[layer.candidate for layer in spec.layers],
        chosen_kind=[candidate_kind(layer.candidate) for layer in spec.layers],
        chosen_rank=[c.rank for c in chosen],
        chosen_index=[column[layer.candidate] for layer in spec.layers],
    )


@dataclass
class LayerMacs:
    """Per layer of one trial: the teacher conv's and the student block's MMACs per delta frame."""

    trial: int
    layers: list[str]
    candidates: list[str]
    calls: list[int]
    teacher_mmacs: list[float]  # conv multiply-adds from the layer's shape, all calls
    student_mmacs: list[float]  # the spec's layer macs (the chosen block, all calls)
    outside_mmacs: float  # the teacher's multiply-adds outside the searched convs
    keyframe_interval: int
    teacher_frame_gmacs: float  # spec totals: a key frame
    delta_frame_gmacs: float  # spec totals: a frame between key frames
    amortised_gmacs: float


def layer_macs(data: RunData, trial: int | None = None) -> LayerMacs | None:
    """Multiply-adds per layer of `trial` (default: `default_trial`); None without any spec."""
    trial = _chosen_trial(data, trial)
    if trial is None:
        return None
    spec = data.specs[trial]
    teacher = [
        conv_macs(
            c_in=layer.shape.c_in,
            c_out=layer.shape.c_out,
            kernel=layer.shape.kernel,
            out_hw=layer.shape.out_hw,
            groups=layer.shape.groups,
        )
        * layer.calls
        for layer in spec.layers
    ]
    return LayerMacs(
        trial=trial,
        layers=[layer.path for layer in spec.layers],
        candidates=[layer.candidate for layer in spec.layers],
        calls=[layer.calls for layer in spec.layers],
        teacher_mmacs=[macs / 1e6 for macs in teacher],
        student_mmacs=[layer.macs / 1e6 for layer in spec.layers],
        outside_mmacs=(spec.totals.teacher_macs - sum(teacher)) / 1e6,
        keyframe_interval=spec.keyframe_interval,
        teacher_frame_gmacs=spec.totals.teacher_macs / 1e9,
        delta_frame_gmacs=spec.totals.delta_frame_macs / 1e9,
        amortised_gmacs=spec.totals.amortised_macs / 1e9,
    )


# --- search curves and latency ---------------------------------------------------------------


@dataclass
class Curves:
    """One trial's inner search, step by step; costs in `unit` (GFLOPs or ms)."""

    trial: int
    unit: str
    step: list[float]
    loss: list[float]
    expected_cost: list[float]
    budget: list[float]
    tau: list[float]
    multiplier: list[float]


def cost_unit(budget_kind: str) -> tuple[str, float]:
    """The unit the curves show a budget's costs in, and the factor from the budget's unit."""
    return ("GFLOPs", 1e-9) if budget_kind == "macs" else ("ms", 1e3)


def search_curves(data: RunData) -> list[Curves]:
    unit, scale = cost_unit(data.info.budget_kind)
    return [
        Curves(
            trial=trial,
            unit=unit,
            step=log["step"],
            loss=log["loss"],
            expected_cost=[v * scale for v in log["expected_cost"]],
            budget=[v * scale for v in log["budget"]],
            tau=log["tau"],
            multiplier=log["multiplier"],
        )
        for trial, log in sorted(data.logs.items())
        if log["step"]
    ]


@dataclass
class LatencyPoints:
    """Measured latency against GFLOPs for the completed trials that were timed."""

    trials: list[int]
    gflops: list[float]
    latency_ms: list[float]
    feasible: list[bool]
    hover: list[str]
    teacher_gflops: float
    teacher_latency_ms: float | None
    budget_ms: float | None  # the budget, when it is a latency

    @property
    def empty(self) -> bool:
        return not self.trials


def latency_points(data: RunData) -> LatencyPoints:
    rows = [
        row
        for row in data.trials
        if row.complete and math.isfinite(row.latency_ms) and math.isfinite(row.gflops)
    ]
    info = data.info
    return LatencyPoints(
        trials=[row.trial for row in rows],
        gflops=[row.gflops for row in rows],
        latency_ms=[row.latency_ms for row in rows],
        feasible=[row.feasible for row in rows],
        hover=[hover_text(row, data.param_names) for row in rows],
        teacher_gflops=info.teacher_gflops,
        teacher_latency_ms=info.teacher_latency_ms,
        budget_ms=info.budget_value * 1e3 if info.budget_kind == "latency" else None,
    )


# --- the page's header and table ---------------------------------------------------------------


@dataclass
class Summary:
    """The page header and the table of Pareto-optimal trials."""

    study: str
    storage: str
    teacher: str
    input_size: tuple[int, int]
    budget_text: str
    budget_kind: str
    objectives: list[str]  # e.g. ["agreement (maximize)", "gflops (minimize)"]
    teacher_gflops: float
    teacher_latency_ms: float | None
    trials: int
    states: dict[str, int]  # state -> count
    columns: list[str]  # of the front table
    front: list[list[str]]  # rows of the front table, formatted, by GFLOPs


def summary(data: RunData) -> Summary:
    info = data.info
    states: dict[str, int] = {}
    for row in data.trials:
        states[row.state] = states.get(row.state, 0) + 1
    front = sorted((row for row in data.trials if row.on_front), key=lambda row: row.gflops)
    timed = any(math.isfinite(row.latency_ms) for row in front)
    sped = any(math.isfinite(row.speedup) for row in front)
    recovered = any(math.isfinite(row.r) for row in front)
    cheap = [n for n in _BASELINE_R if any(math.isfinite(r.baseline_r[n]) for r in front)]
    columns = ["trial", "agreement", *(["R"] if recovered else [])]
    columns += [*(_BASELINE_R[n] for n in cheap), *(["beats them"] if cheap else []), "GFLOPs"]
    columns += [*(["latency ms"] if timed else []), *(["speed-up"] if sped else [])]
    columns += [*data.param_names, "spec"]
    rows = []
    for row in front:
        cells = [str(row.trial), f"{row.agreement:.4f}"]
        if recovered:
            cells.append(format_value(row.r))
        cells += [format_value(row.baseline_r[n]) for n in cheap]
        if cheap:
            cells.append(row.beats_baselines)
        cells.append(f"{row.gflops:.4g}")
        if timed:
            cells.append(format_value(row.latency_ms))
        if sped:
            cells.append(format_value(row.speedup))
        cells += [format_value(row.params[n]) if n in row.params else "" for n in data.param_names]
        cells.append(row.spec_path)
        rows.append(cells)
    return Summary(
        study=info.study,
        storage=info.storage,
        teacher=info.teacher,
        input_size=info.input_size,
        budget_text=info.budget_text,
        budget_kind=info.budget_kind,
        objectives=[f"{o} ({d})" for o, d in zip(info.objectives, info.directions, strict=False)],
        teacher_gflops=info.teacher_gflops,
        teacher_latency_ms=info.teacher_latency_ms,
        trials=len(data.trials),
        states=states,
        columns=columns,
        front=rows,
    )
