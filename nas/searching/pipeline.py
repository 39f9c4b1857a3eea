"""`nas search` as one function: teacher, video and budget in; a run folder with a spec out.

    result = search(SearchOptions(teacher="deeplabv3", budget="5GFLOPs", out="results/demo"))
    result.spec.totals.amortised_macs          # <= 5e9

The run folder holds `config.json` (the resolved options, written first), `log.csv` (one row
per search step, written as the search goes) and `spec.json` (written last, atomically, only
when the search succeeded: a folder without it is not a result).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from nas.core.errors import NasError
from nas.core.io import atomic_write_text
from nas.core.layout import layout_for
from nas.core.sizes import check_multiple, parse_size, scaled_size
from nas.cost.amortised import CostTable, amortised, check_budget
from nas.cost.budget import Budget, CostKind, RelativeBudget, parse_budget, resolve_budget
from nas.cost.latency import (
    default_threads,
    resolve_device,
)
from nas.cost.macs import count_macs
from nas.data import VideoClips, open_videos
from nas.delta.liveness import NO_CHANGE
from nas.delta.model import DeltaModel
from nas.graph.layers import ConvLayer, layer_graph
from nas.searching.end_to_end import fit_measured_latency
from nas.searching.make_spec import make_spec
from nas.searching.options import SearchOptions
from nas.searching.supernet import (
    StepLog,
    Supernet,
    build_supernet,
    knapsack_picks,
    measure_errors,
    output_r,
    run_search,
)
from nas.searching.tables import latency_table, macs_table
from nas.searching.validation import validate
from nas.spec import (
    DeltaForm,
    Mode,
    Spec,
    save_spec,
)
from nas.student.build import build_student
from nas.student.clips import calibration_stats, clip_batches, video_clips
from nas.student.speed import measure_speedup, speedup_metrics, time_student, timing_frames
from nas.teachers import Teacher, load_teacher
from search_spaces import (
    InputStats,
    build_candidate,
    load_preset,
    resolve_candidates,
)


@dataclass
class RunResult:
    spec: Spec
    out: Path
    log: list[StepLog]
    probabilities: dict[str, dict[str, float]]


class _StepWriter:
    """Appends one CSV row per step, flushed, so an interrupted run keeps its log."""

    def __init__(self, path: Path) -> None:
        self.handle = open(path, "w", newline="")  # noqa: SIM115 (closed in close())
        self.writer = csv.DictWriter(self.handle, [f.name for f in dataclasses.fields(StepLog)])
        self.writer.writeheader()

    def __call__(self, row: StepLog) -> None:
        self.writer.writerow(dataclasses.asdict(row))
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


@dataclass
class Prepared:
    """Everything a search needs, resolved from the options and checked before any training."""

    options: SearchOptions
    budget: Budget
    device: torch.device
    threads: int
    teacher: Teacher
    size: tuple[int, int]  # the frames' size: the teacher's input
    student_size: tuple[int, int]  # the student's input (smaller in resolution mode)
    layers: list[ConvLayer]  # at the student's size
    macs: CostTable  # exact multiply-adds (what the spec records)
    costs: CostTable  # in the budget's unit (multiply-adds, or measured seconds)
    train: VideoClips
    val: VideoClips
    limit: Budget | None = None  # --max-latency, beside a FLOPs budget
    limit_costs: CostTable | None = None  # measured seconds, with `limit`
    teacher_macs: int | None = None  # the teacher on full-size frames, where not `macs`'s

    @property
    def channels_last(self) -> bool:
        """Whether latencies are measured channels-last (`SearchOptions.layout`)."""
        return layout_for(self.device, self.options.layout)

    @property
    def limits(self) -> list[tuple[CostTable, Budget]]:
        return [] if self.limit is None else [(self.limit_costs, self.limit)]

    def to_input(self, frames: torch.Tensor) -> torch.Tensor:
        return self.teacher.input_spec.normalize(frames.to(self.device))

    @cached_property
    def next_batch(self) -> Callable[[torch.Generator], tuple]:
        return clip_batches(
            self.train, self.teacher, batch_size=self.options.batch_size, device=self.device
        )

    def timing_frames(self) -> list[torch.Tensor]:
        """Real frames to time the student on as it ships (`nas.student.speed`): the first
        validation clip's, two key-frame intervals of them, normalised, one at a time."""
        images = next(iter(self.val.span_frames()), None)
        if images is None:  # no validation clip: the first training clip's frames
            images = next(iter(self.train.span_frames()))
        frames = (self.to_input(image[None]) for image in images)
        return timing_frames(frames, self.options.interval or 1)

    def val_batches(self) -> list:
        batches = self.val.validation_batches(self.options.batch_size)
        return [
            (self.to_input(b.key), self.to_input(b.frame), None)
            for b in itertools.islice(batches, self.options.val_batches)
        ]

    @cached_property
    def stats(self) -> dict[str, InputStats]:
        """Each dense layer's measured input-change statistics (for data-aware starts of delta
        blocks; the per-frame modes start from the plain SVD)."""
        if self.options.mode != Mode.DELTA:
            return {}
        return calibration_stats(
            self.teacher,
            self.layers,
            self.train,
            batches=self.options.calibration_batches,
            batch_size=self.options.batch_size,
            device=self.device,
            seed=self.options.seed,
        )

    def supernet(self, costs: CostTable | None = None) -> Supernet:
        """The searchable delta model over `costs`' candidates (default: all of the preset's)."""
        stats = self.stats
        net = build_supernet(
            self.teacher,
            self.layers,
            costs or self.costs,
            lambda name, layer, w: build_candidate(
                name, layer, weight=w, stats=stats.get(layer.path)
            ),
            per_frame=self.options.mode != Mode.DELTA,
            student_size=self.student_size if self.student_size != self.size else None,
            size=self.student_size,
        )
        net.model.to(self.device)
        return net


def prepare(options: SearchOptions, *, reference: Prepared | None = None) -> Prepared:
    """Resolve teacher, input size, candidates, costs and data; refuse a budget that cannot fit.

    A relative budget (`50%`, `2x`) is resolved against the teacher at this input size (its
    multiply-adds, or for `--max-latency` its measured time per frame), or against `reference`'s
    where given: the study's run at its full input size, for the points it downscales."""
    parsed = parse_budget(options.budget)
    if parsed.kind is CostKind.LATENCY and options.mode != Mode.DELTA:
        raise NasError(
            f"latency budgets are measured on delta models only so far: give --mode "
            f"{options.mode} a FLOPs budget (e.g. 5GFLOPs)"
        )
    parsed_limit = check_latency_limit(options.max_latency, parsed, options.mode)
    source = None  # videos named are opened (every file checked) before any work
    if options.video:
        source = open_videos(options.video, max_frames=options.max_frames)
    device = resolve_device(options.device)
    threads = options.threads or default_threads()
    if device.type == "cpu":
        torch.set_num_threads(threads)
    teacher = load_teacher(
        options.teacher,
        weights=options.teacher_weights,
        num_classes=options.num_classes,
        device=str(device),
    )
    size = parse_size(options.input_size) if options.input_size else teacher.input_spec.default_size
    multiple = teacher.input_spec.size_multiple
    check_multiple(size, multiple, who=f"teacher {teacher.name}")
    student_size = size
    if options.mode == Mode.RESOLUTION:
        student_size = scaled_size(size, options.input_scale, multiple)
    layers = layer_graph(teacher.module, student_size)
    preset = load_preset(options.search_space)
    names = {layer.path: resolve_candidates(preset, layer) for layer in layers}
    if options.mode != Mode.DELTA:  # no key frame to fall back on: `zero` would predict nothing
        names = {path: [n for n in found if n != NO_CHANGE] for path, found in names.items()}
    macs = macs_table(teacher, layers, names, student_size)
    teacher_macs = count_macs(teacher.module, size) if student_size != size else None
    budget = resolve_budget(parsed, teacher_macs=teacher_macs or macs.keyframe)
    if reference is not None:  # a downscaled point of a study: the budget at full size
        budget = reference.budget
    timed = {
        "device": device,
        "threads": threads,
        "channels_last": layout_for(device, options.layout),
    }
    if budget.kind is CostKind.LATENCY:
        costs = latency_table(teacher, layers, names, student_size, **timed)
    else:
        costs = macs
    check_budget(costs, budget, options.interval)
    limit = limit_costs = None
    if parsed_limit is not None:
        limit_costs = latency_table(teacher, layers, names, student_size, **timed)
        limit = resolve_budget(parsed_limit, teacher_seconds=limit_costs.keyframe)
        if reference is not None:
            limit = reference.limit
        check_budget(limit_costs, limit, options.interval)

    train, val = video_clips(
        teacher,
        options.video,
        size=size,
        interval=options.keyframe_interval,
        max_frames=options.max_frames,
        val_fraction=options.val_fraction,
        draws=options.steps * options.batch_size,
        source=source,
    )
    return Prepared(
        options=options,
        budget=budget,
        device=device,
        threads=threads,
        teacher=teacher,
        size=size,
        student_size=student_size,
        layers=layers,
        macs=macs,
        costs=costs,
        train=train,
        val=val,
        limit=limit,
        limit_costs=limit_costs,
        teacher_macs=teacher_macs,
    )


def check_latency_limit(
    text: str | None, budget: Budget | RelativeBudget, mode: str
) -> Budget | RelativeBudget | None:
    """`--max-latency`, parsed and checked against the budget and mode (None: no limit); a
    relative one (`2x`) is a fraction of the teacher's measured time, resolved by `prepare`."""
    if text is None:
        return None
    limit = parse_budget(text, relative_kind=CostKind.LATENCY)
    if limit.kind is not CostKind.LATENCY:
        raise NasError(
            f"invalid --max-latency {text}: expected a time per frame, e.g. 90ms or 2x (the "
            "FLOPs budget is --budget)"
        )
    if budget.kind is CostKind.LATENCY:
        raise NasError(
            f"--max-latency {text} limits the time beside a FLOPs budget, but --budget {budget} "
            "is a time already: give one of them"
        )
    if mode != Mode.DELTA:
        raise NasError(
            f"latency limits are measured on delta models only so far: drop --max-latency for "
            f"--mode {mode}"
        )
    return limit


ALLOCATION_BATCHES = 8  # training batches to measure the knapsack's errors, and as many to judge


def better_allocation(
    net: Supernet, picks: dict[str, str], run: Prepared
) -> tuple[dict[str, str], dict[str, float]]:
    """The search's choice, or the knapsack's on the same blocks
    (`nas.searching.supernet.knapsack_picks`, errors measured on training batches) where that
    recovers more of the output's change (R) on other training batches; both within the budget.
    Returns the picks kept and the R of each (docs/quality.md has what each is worth)."""
    generator = torch.Generator().manual_seed(run.options.seed + 11)
    batches = [run.next_batch(generator) for _ in range(2 * ALLOCATION_BATCHES)]
    errors = measure_errors(net, batches[:ALLOCATION_BATCHES])
    other = knapsack_picks(net, errors, run.budget, run.options.interval, run.limits)
    judged = batches[ALLOCATION_BATCHES:]
    r_search = output_r(net, picks, judged)
    r_knapsack = r_search if other == picks else output_r(net, other, judged)
    knapsack = r_knapsack > r_search  # False where R is undefined (frames that never change)
    found = {"allocation_r_search": r_search, "allocation_r_knapsack": r_knapsack}
    found = {k: v for k, v in found.items() if math.isfinite(v)}  # a spec holds numbers only
    return other if knapsack else picks, found | {"allocation_knapsack": float(knapsack)}


def choose_form(
    spec: Spec,
    student: DeltaModel,
    run: Prepared,
    frames: list[torch.Tensor],
    recurrence: dict[str, float],
) -> tuple[DeltaForm, dict[str, float]]:
    """The form a delta spec ships in (`nas.spec.DeltaForm`), and its measured figures.

    `recurrence` holds the recurrence's figures (`nas.student.speed.speedup_metrics`). The
    linear form saves each delta frame a subtraction pass and costs each key frame one call of
    every block: it is timed the same way (the teacher beside it), and chosen where its
    measured speed-up is the larger and its multiply-adds, key frames' extra calls counted,
    still meet a multiply-add budget (a latency budget: its time, faster, does). The figures of
    both are kept (`speedup_recurrence`, `speedup_linear`, `linear_form_fits`)."""
    linear = spec.in_form(DeltaForm.LINEAR)
    fits = run.budget.kind is CostKind.LATENCY or (linear.totals.amortised_macs <= run.budget.value)
    found = {
        "speedup_recurrence": recurrence["speedup"],
        "linear_form_fits": float(fits),
    }
    if not fits or linear.totals.keyframe_extra_macs == 0:
        return DeltaForm.RECURRENCE, found
    timed = measure_speedup(
        student.use_linear(True),
        run.teacher,
        frames,
        spec.keyframe_interval,
        spec.totals.teacher_macs / linear.totals.amortised_macs,
        device=run.device,
        threads=run.threads,
        channels_last=run.channels_last,
    )
    found["speedup_linear"] = timed["speedup"]
    if timed["speedup"] <= recurrence["speedup"]:
        return DeltaForm.RECURRENCE, found
    return DeltaForm.LINEAR, found | timed


def search(
    options: SearchOptions,
    *,
    on_step: Callable[[StepLog], None] | None = None,
    prepared: Prepared | None = None,
) -> RunResult:
    """Run one delta-distillation search and write its run folder (see module docstring).

    `prepared`: `prepare(options)` done already (the study reuses it to retrain and evaluate).
    """
    run = prepared or prepare(options)
    out = Path(options.out or Path("results") / f"search-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").unlink(missing_ok=True)  # a rerun's old result must not pass for this one
    atomic_write_text(out / "config.json", options.model_dump_json(indent=2) + "\n")

    net = run.supernet()
    writer = _StepWriter(out / "log.csv")
    started = time.perf_counter()
    try:

        def step(row: StepLog) -> None:
            writer(row)
            if on_step is not None:
                on_step(row)

        outcome = run_search(
            net,
            run.teacher,
            run.next_batch,
            budget=run.budget,
            interval=options.interval,
            config=options.search_config(),
            on_step=step,
            limits=run.limits,
        )
    finally:
        writer.close()
    picks = outcome.picks
    metrics = {"search_seconds": time.perf_counter() - started}
    if options.interval is not None:
        picks, chosen = better_allocation(net, picks, run)
        metrics |= chosen

    def spec_of(picks: dict[str, str], metrics: dict[str, float]) -> Spec:
        return make_spec(
            run.teacher,
            run.layers,
            picks,
            run.macs,
            run.budget,
            run.size,
            options,
            metrics,
            student_size=run.student_size,
            teacher_macs=run.teacher_macs,  # the reference is the teacher on full-size frames
            limit=run.limit,
        )

    def build(picks: dict[str, str]) -> DeltaModel:  # the student as it ships
        return build_student(spec_of(picks, {}), run.teacher).to(run.device)

    timed = run.budget.kind is CostKind.LATENCY or run.limit is not None
    if timed or options.interval is not None:
        frames = run.timing_frames()
    if timed:
        picks, measured = fit_measured_latency(
            net,
            build,
            picks,
            run.budget,
            options.interval,
            frames,
            device=run.device,
            threads=run.threads,
            limited=run.limit,
            table=run.limit_costs,
            channels_last=run.channels_last,
        )
        metrics |= measured
    if options.interval is not None:  # delta mode: what the saving is worth in time
        macs = run.macs
        ratio = macs.keyframe / amortised(macs.keyframe, macs.delta(picks), options.interval)
        shipped = build(picks)  # timed in the recurrence here, in the linear form below
        if timed:  # timed already, as it ships: the teacher beside it
            teacher_s = time_student(
                None,
                run.teacher,
                frames,
                None,
                device=run.device,
                threads=run.threads,
                channels_last=run.channels_last,
            )["teacher_s"]
            metrics |= speedup_metrics(
                teacher_s * 1e3,
                metrics["keyframe_ms"],
                metrics["delta_frame_ms"],
                options.interval,
                ratio,
            )
        else:
            metrics |= measure_speedup(
                shipped,
                run.teacher,
                frames,
                options.interval,
                ratio,
                device=run.device,
                threads=run.threads,
                channels_last=run.channels_last,
            )
        form, measured = choose_form(spec_of(picks, {}), shipped, run, frames, metrics)
        metrics |= measured
    metrics |= validate(net, run.teacher, run.val_batches(), picks)
    if run.limit is not None and run.limit.relative is not None:  # what `2x` was a fraction of
        metrics["max_latency_teacher_ms"] = run.limit.value / run.limit.relative.fraction * 1e3
    spec = spec_of(picks, metrics)
    if options.interval is not None:
        spec = spec.in_form(form)
    save_spec(spec, out / "spec.json")
    return RunResult(spec, out, outcome.log, net.probabilities())
