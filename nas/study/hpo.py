"""The outer loop: an Optuna study over the inner search's hyperparameters.

Each trial samples the learning rates of the blocks and of the architecture logits, the temperature
schedule, the constraint's step size and the search-space preset (and the key-frame interval and
input scale where they are `auto`; with an `auto` interval a new study first measures every interval
the budget allows, `nas.searching.interval`, and its first trial runs the one chosen), runs the
inner search (`nas.searching.pipeline.search`), retrains the exported student briefly and measures
its agreement with the teacher on held-out frames. Objectives: agreement (up) and amortised GFLOPs
(down), plus measured amortised latency (down) under a latency budget. The budget is the trial's
constraint (`trial.set_constraint`), so infeasible trials never reach the Pareto front.

The study lives in a SQLite file in the run folder, or, with `storage`, in any database Optuna
takes (PostgreSQL for many workers on many machines: every worker runs the same command).
Workers beat a heartbeat; a trial whose worker died is failed by the next worker that looks and
queued again with the same hyperparameters (`RetryHeartbeatStaleTrialCallback`). A study stops
when it holds `trials` complete ones, so crashed or interrupted trials give their place back.
Every trial's spec is kept as a file in its folder (`nas.study.runs`) and in the study itself (user
attribute `spec`), so `nas export` works from any machine that reaches the storage.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import socket
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, Trial, TrialState
from pydantic import BaseModel, ConfigDict, Field

from nas.core.errors import NasError
from nas.core.io import atomic_write_json
from nas.core.registry import Registry
from nas.core.sizes import scaled_size
from nas.cost.budget import CostKind, parse_budget
from nas.searching.interval import (
    INTERVALS,
    IntervalScreen,
    feasible_intervals,
    screen_intervals,
    windows,
)
from nas.searching.options import SearchOptions
from nas.searching.pipeline import Prepared, prepare, search
from nas.searching.supernet import StepLog
from nas.spec import Mode, Spec, save_spec
from nas.student.baselines import repeat_interval
from nas.student.build import build_student
from nas.student.compare import baseline_metrics
from nas.student.holdout import held_out_agreement
from nas.student.losses import LossWeights
from nas.student.train import TrainConfig, has_blocks_to_train, train_student
from nas.study import runs

# Heartbeats and retries of stale trials are "experimental" in Optuna since 2.8: used on purpose.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

SAMPLERS: Registry[Callable[[int, int], optuna.samplers.BaseSampler]] = Registry("sampler")


@SAMPLERS.register("nsga2", aliases=("nsgaii",))
def _nsga2(seed: int, trials: int) -> optuna.samplers.BaseSampler:
    # Generations of half the study (at least 4, at most Optuna's 50): a short study still
    # breeds a second generation instead of spending every trial on the random first one.
    return optuna.samplers.NSGAIISampler(population_size=max(4, min(50, trials // 2)), seed=seed)


@SAMPLERS.register("tpe")
def _tpe(seed: int, trials: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(n_startup_trials=max(2, min(10, trials // 2)), seed=seed)


@SAMPLERS.register("random")
def _random(seed: int, trials: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


SCALES = (1.0, 0.75, 0.5, 0.375)  # the choices of an `auto` input scale
SCREEN_ATTR = "interval_screen"  # the study's user attribute holding `IntervalScreen.metrics()`


class StudyOptions(BaseModel):
    """`nas search` with its outer loop; written to the run folder as `config.json`."""

    model_config = ConfigDict(extra="forbid")

    search: SearchOptions  # the inner search; its `out` is the run folder
    # Complete trials the study should hold; None: `more` complete trials than it holds now, so
    # that rerunning the same command keeps the front growing.
    trials: int | None = Field(default=None, ge=1)
    more: int = Field(default=1, ge=1)
    timeout: float | None = Field(default=None, gt=0)  # seconds for this worker
    sampler: str = "nsga2"
    storage: str | None = None  # default: SQLite in the run folder
    study: str | None = None  # default: "nas"
    search_spaces: list[str] = Field(default_factory=lambda: ["default"], min_length=1)
    keyframe_interval_auto: bool = False
    input_scale: float | None = Field(default=1.0, gt=0, le=1)  # None: auto
    train_steps: int = Field(default=20, ge=0)  # brief retraining of each trial's student
    heartbeat: int = Field(default=30, ge=1)  # seconds between a worker's heartbeats

    @property
    def run(self) -> Path:
        return Path(self.search.out or "results/study")

    @property
    def study_name(self) -> str:
        return self.study or "nas"

    def storage_url(self) -> str:
        if self.storage is None:
            return f"sqlite:///{(self.run / runs.SQLITE).resolve()}"
        return normalise_url(self.storage)


def normalise_url(url: str) -> str:
    """PostgreSQL URLs go through psycopg 3 (SQLAlchemy's bare `postgresql://` means psycopg2)."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


def mask_url(url: str) -> str:
    """The URL with its password replaced by `***`."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a database URL: shown as given
        return url


# SQLSTATEs of a lost race to create Optuna's schema: a table, index or sequence (42P07) or a
# type (42710) that another worker created first. A unique violation (23505) comes as an
# IntegrityError.
CREATED_FIRST = {"42P07", "42710"}


def lost_creation_race(exc: Exception) -> bool:
    """Whether opening the storage failed because another worker created its schema first."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    if isinstance(exc, IntegrityError):
        return True
    return isinstance(exc, ProgrammingError) and (
        getattr(exc.orig, "sqlstate", None) in CREATED_FIRST
    )


def open_storage(url: str, heartbeat: int) -> optuna.storages.RDBStorage:
    """The RDB storage with heartbeats; a stale trial is failed and queued again (up to twice)."""
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    attempts = 5  # workers started together race to create Optuna's tables: the losers retry
    try:
        for attempt in range(attempts):
            try:
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat,
                    grace_period=2 * heartbeat,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=2
                    ),
                )
            except Exception as exc:
                if not lost_creation_race(exc) or attempt == attempts - 1:
                    raise
                time.sleep(0.5 * (attempt + 1))
    except Exception as exc:  # SQLAlchemy's errors span many lines: keep the first
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NasError(
            f"cannot open the study storage {mask_url(url)}: {first} (expected a reachable "
            "database URL such as postgresql://USER:PASSWORD@HOST:PORT/DB or sqlite:///FILE)"
        ) from exc


def objectives(budget_kind: CostKind) -> tuple[list[str], list[str]]:
    """Column names and Optuna directions of the study's objectives."""
    if budget_kind is CostKind.LATENCY:
        return ["agreement", "gflops", "latency_ms"], ["maximize", "minimize", "minimize"]
    return ["agreement", "gflops"], ["maximize", "minimize"]


def suggest(trial: Trial, options: StudyOptions) -> dict:
    """This trial's outer hyperparameters, as updates of the inner search's options."""
    params = {
        "lr_weights": trial.suggest_float("lr_weights", 1e-5, 1e-3, log=True),
        "lr_arch": trial.suggest_float("lr_arch", 5e-3, 0.2, log=True),
        "tau_start": trial.suggest_float("tau_start", 1.0, 4.0),
        "tau_end": trial.suggest_float("tau_end", 0.05, 0.5, log=True),
        "dual_lr": trial.suggest_float("dual_lr", 0.05, 2.0, log=True),
        "search_space": trial.suggest_categorical("search_space", options.search_spaces),
    }
    if options.keyframe_interval_auto:
        params["keyframe_interval"] = trial.suggest_int(
            "keyframe_interval", min(INTERVALS), max(INTERVALS)
        )
    if options.input_scale is None:
        params["input_scale"] = trial.suggest_categorical("input_scale", SCALES)
    return params


class Objective:
    """One trial: inner search, brief retraining, evaluation on held-out frames."""

    def __init__(
        self,
        options: StudyOptions,
        *,
        on_trial_start: Callable[[int, dict], None] | None = None,
        on_step: Callable[[StepLog], None] | None = None,
    ) -> None:
        self.options = options
        self.budget = parse_budget(options.search.budget)  # its kind; `prepare` resolves it
        self.on_trial_start = on_trial_start
        self.on_step = on_step
        self.interval_screen: IntervalScreen | None = None  # `screen()`'s, with an auto interval
        # Prepared runs (teacher, costs, decoded clips) of the latest few points of the space.
        self._prepared: OrderedDict[tuple, Prepared] = OrderedDict()

    def prepare(self, inner: SearchOptions, scale: float) -> tuple[Prepared, Prepared]:
        """The run at full size (held-out reference) and at the student's size, for `inner`."""
        key = (inner.search_space, inner.keyframe_interval, inner.input_scale, scale)
        if key not in self._prepared:
            full = prepare(inner)
            run = full
            if scale != 1.0:
                size = scaled_size(full.size, scale, full.teacher.input_spec.size_multiple)
                # A relative budget stays the fraction of the teacher at full size.
                update = {"input_size": f"{size[0]}x{size[1]}"}
                run = prepare(inner.model_copy(update=update), reference=full)
            self._prepared[key] = (full, run)
            while len(self._prepared) > 2:  # each holds decoded clips (a bounded number)
                self._prepared.popitem(last=False)
        full, run = self._prepared[key]
        inner = inner.model_copy(update={"input_size": run.options.input_size})
        return dataclasses.replace(full, options=inner), dataclasses.replace(run, options=inner)

    def check(self) -> None:
        """Refuse at once what no trial could run: a bad video, teacher or preset, or a budget
        that the most lenient point of the space (longest interval, smallest scale) misses."""
        options = self.options
        lenient = {"keyframe_interval": max(INTERVALS)} if options.keyframe_interval_auto else {}
        scale = min(SCALES) if options.input_scale is None else options.input_scale
        if options.search.mode == Mode.RESOLUTION:
            lenient, scale = lenient | {"input_scale": scale}, 1.0
        first_error: NasError | None = None
        for space in options.search_spaces:
            inner = options.search.model_copy(update=lenient | {"search_space": space})
            try:
                self.prepare(inner, scale)
                return
            except NasError as exc:
                first_error = first_error or exc
        raise first_error

    def screen(self) -> IntervalScreen:
        """The key-frame interval measured (`nas.searching.interval`) at the study's search space,
        among the intervals the budget and any latency limit allow."""
        options = self.options
        inner = options.search.model_copy(update={"keyframe_interval": max(INTERVALS)})
        _, run = self.prepare(inner, 1.0)
        feasible = set(feasible_intervals(run.costs, run.budget))
        for table, limit in run.limits:
            feasible &= set(feasible_intervals(table, limit))
        if not feasible:
            raise NasError(
                f"budget {run.budget} is met by no key-frame interval from {min(INTERVALS)} to "
                f"{max(INTERVALS)}: raise the budget"
            )
        length = max(max(feasible), repeat_interval(run.costs.keyframe, run.budget.value))
        self.interval_screen = screen_intervals(
            run.supernet(),
            windows(run.train.span_frames(), length),
            run.teacher.input_spec.normalize,
            budget=run.budget,
            intervals=sorted(feasible),
            limits=run.limits,
        )
        return self.interval_screen

    def __call__(self, trial: Trial) -> tuple[float, ...]:
        options = self.options
        params = suggest(trial, options)
        if self.on_trial_start is not None:
            self.on_trial_start(trial.number, params)
        folder = runs.trial_dir(options.run, trial.number)
        scale = params.pop("input_scale", options.input_scale)
        inner = options.search.model_copy(update=params | {"out": str(folder)})
        if inner.mode == Mode.RESOLUTION:  # the student downscales; the teacher stays at full size
            inner, scale = inner.model_copy(update={"input_scale": scale}), 1.0
        trial.set_user_attr("host", socket.gethostname())
        try:
            full, run = self.prepare(inner, scale)
        except NasError as exc:  # this point of the space cannot meet the budget: pruned
            trial.set_user_attr("error", str(exc))
            raise optuna.TrialPruned(str(exc)) from exc
        result = search(run.options, on_step=self.on_step, prepared=run)
        atomic_write_json(folder / runs.TRIAL_PROBABILITIES, result.probabilities)
        spec = result.spec

        student = build_student(spec, run.teacher, stats=run.stats).to(run.device)
        # A spec of `zero`s only (the key frame repeated) has nothing to retrain.
        if options.train_steps > 0 and has_blocks_to_train(student):
            config = TrainConfig(
                steps=options.train_steps,
                lr=params["lr_weights"],
                checkpoint_every=options.train_steps,
                seed=options.search.seed,
                weights=LossWeights.of(run.options),
                tc_weight=run.options.tc_weight,
            )
            scratch = folder / "train"
            train_student(student, run.teacher, run.next_batch, out=scratch, config=config)
            shutil.rmtree(scratch, ignore_errors=True)  # trainers retrain from the spec
        scores = held_out_agreement(
            full.teacher,
            student,
            full.val.span_frames(),
            interval=spec.keyframe_interval,
            student_size=tuple(spec.input_size),
            device=run.device,
        )
        frames_size = tuple(spec.teacher_input_size or spec.input_size)
        found = {} if self.interval_screen is None else self.interval_screen.metrics()
        if not run.teacher.is_random and frames_size == tuple(full.size):
            # Beside the student, every cheap answer at its cost on the same held-out frames
            # (a random teacher's outputs say nothing of quality: not scored).
            found |= baseline_metrics(
                run.teacher,
                spec,
                student,
                run.layers,
                full.val.span_frames(),
                stats=run.stats,
                size=full.size,
                device=run.device,
            )
        if found:
            spec = spec.model_copy(update={"metrics": spec.metrics | found})
            save_spec(spec, folder / runs.TRIAL_SPEC)
        values = {"agreement": scores["agreement"], "gflops": spec.totals.amortised_macs / 1e9}
        if self.budget.kind is CostKind.LATENCY:
            values["latency_ms"] = spec.metrics["amortised_ms"]
            used = spec.metrics["amortised_ms"] / 1e3
        else:
            used = spec.totals.amortised_macs
        trial.set_constraint("budget", used / run.budget.value - 1.0)  # resolved: 50% in GFLOPs
        trial.set_user_attr("spec_path", str(folder.relative_to(options.run) / runs.TRIAL_SPEC))
        trial.set_user_attr("spec", spec.to_json())
        trial.set_user_attr("probabilities", result.probabilities)
        trial.set_user_attr("held_out_mae", scores["mae"])
        trial.set_user_attr("held_out_r", scores["r"])
        trial.set_user_attr("held_out_frames", int(scores["frames"]))
        trial.set_user_attr("search_agreement", spec.metrics.get("val_agreement", math.nan))
        names, _ = objectives(self.budget.kind)
        return tuple(values[name] for name in names)


def open_study(options: StudyOptions) -> optuna.Study:
    """Create the study, or load it to continue; refuse one made for another teacher or budget."""
    budget = parse_budget(options.search.budget)
    _, directions = objectives(budget.kind)
    url = options.storage_url()
    if options.storage is None:
        options.run.mkdir(parents=True, exist_ok=True)
    storage = open_storage(url, options.heartbeat)
    # Our own progress and trials table say it all, failed trials' reasons included.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    identity = {
        "teacher": options.search.teacher,
        "teacher_weights": options.search.teacher_weights,
        "budget": str(budget),
        "max_latency": options.search.max_latency,
        "video": options.search.video,
        "input_size": options.search.input_size,
        "mode": options.search.mode,
    }
    study = optuna.create_study(
        storage=storage,
        study_name=options.study_name,
        directions=directions,
        load_if_exists=True,
    )
    found = study.user_attrs.get("identity")
    if found is not None and isinstance(found.get("video"), str):  # before --video repeated
        found = found | {"video": [found["video"]]}
    if found is None:
        study.set_user_attr("identity", identity)
    elif changed := ", ".join(  # a key a study predates counts as None
        f"{k} {found.get(k)!r} -> {v!r}" for k, v in identity.items() if found.get(k) != v
    ):
        raise NasError(
            f"study '{options.study_name}' in {mask_url(url)} was made for other settings "
            f"({changed}): use another --study name or --out folder"
        )
    planned = options.trials or count(study, TrialState.COMPLETE) + options.more
    study.sampler = SAMPLERS.get(options.sampler)(worker_seed(study, options), planned)
    return study


def worker_seed(study: optuna.Study, options: StudyOptions) -> int:
    """The sampler's seed: `--seed` for a new study, so a run is repeatable; moved on by the
    trials already there, so a continued study does not draw its first points again; and, on
    shared storage, by the process, so workers started together do not draw the same points."""
    seed = options.search.seed + len(study.get_trials(deepcopy=False))
    if options.storage is not None:
        seed += 7919 * os.getpid()
    return seed % 2**32


def count(study: optuna.Study, *states: TrialState) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def run_study(
    options: StudyOptions,
    *,
    on_trial_start: Callable[[int, dict], None] | None = None,
    on_step: Callable[[StepLog], None] | None = None,
    on_trial_end: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    on_screen: Callable[[IntervalScreen], None] | None = None,
) -> optuna.Study:
    """Run (or continue) the study until it holds `options.trials` complete trials (or
    `options.more` more than it held at the start).

    With an `auto` key-frame interval, the intervals are first measured (`nas.searching.interval`,
    once per study: kept in the study) and a new study's first trial runs the one chosen; the trials
    after it draw the interval like every other hyperparameter."""
    from nas.study.results import write_results, write_study_info

    objective = Objective(options, on_trial_start=on_trial_start, on_step=on_step)
    objective.check()  # before anything is written
    run = options.run
    study = open_study(options)
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run / runs.CONFIG, json.loads(options.model_dump_json()))
    write_study_info(study, options)
    optuna.storages.fail_stale_trials(study)
    target = options.trials
    if target is None:
        target = count(study, TrialState.COMPLETE) + options.more
    attempts_left = 4 * target  # pruned or failed trials do not run forever

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal attempts_left
        attempts_left -= 1
        write_results(study, run)
        if on_trial_end is not None:
            on_trial_end(study, trial)
        if count(study, TrialState.COMPLETE) >= target or attempts_left <= 0:
            study.stop()

    if options.keyframe_interval_auto and count(study, TrialState.COMPLETE) < target:
        stored = study.user_attrs.get(SCREEN_ATTR)
        if stored is None:
            study.set_user_attr(SCREEN_ATTR, objective.screen().metrics())
        else:
            objective.interval_screen = IntervalScreen.from_metrics(stored)
        if not study.get_trials(deepcopy=False):
            study.enqueue_trial({"keyframe_interval": objective.interval_screen.chosen})
        if on_screen is not None:
            on_screen(objective.interval_screen)
    if count(study, TrialState.COMPLETE) < target:
        study.optimize(
            objective,
            timeout=options.timeout,
            callbacks=[after_trial],
            catch=(NasError,),
        )
    write_results(study, run)
    if count(study, TrialState.COMPLETE) == 0:
        reasons = {
            t.user_attrs.get("error") or t.system_attrs.get("fail_reason", "")
            for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.PRUNED, TrialState.FAIL)
        }
        raise NasError(
            "no trial completed: " + ("; ".join(sorted(filter(None, reasons)))[:500] or "none ran")
        )
    return study


def trial_spec(study: optuna.Study, trial: FrozenTrial) -> Spec:
    """A trial's spec, from the study itself."""
    if "spec" not in trial.user_attrs:
        raise NasError(f"trial {trial.number} has no spec (state {trial.state.name})")
    return Spec.model_validate_json(trial.user_attrs["spec"])


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The feasible Pareto-optimal trial with the highest agreement with the teacher."""
    front = study.best_trials
    if not front:
        raise NasError(
            f"study '{study.study_name}' has no feasible complete trial yet: run more trials "
            "or raise the budget"
        )
    return max(front, key=lambda t: (t.values[0], -t.values[1]))


def export_trial(
    study: optuna.Study, trial_number: int | None, out: Path
) -> tuple[FrozenTrial, Path]:
    """Write the spec of trial `trial_number` (default: `best_trial`) to `out`."""
    if trial_number is None:
        trial = best_trial(study)
    else:
        matches = [t for t in study.get_trials(deepcopy=False) if t.number == trial_number]
        if not matches:
            numbers = [t.number for t in study.get_trials(deepcopy=False)]
            raise NasError(
                f"no trial {trial_number} in study '{study.study_name}': trials are "
                f"{min(numbers, default=0)}..{max(numbers, default=-1)}"
            )
        trial = matches[0]
    save_spec(trial_spec(study, trial), out)
    return trial, out
