"""`nas eval`: the teacher, its delta student and the cheap answers at the student's cost, side
by side on one or more videos, in one run.

Streams the videos once, sequence after sequence (each starts with a key frame). Every frame
goes through the teacher and through the student's `DeltaRunner` (key frames every K frames),
each timed on the same device in the same loop, so the latencies compare like with like.
Reports, per column: GFLOPs per frame and amortised, measured latency per frame and amortised,
agreement with the teacher, temporal consistency (TC: the prediction of frame t+1 warped to
frame t by DIS optical flow, its mIoU with the prediction of frame t), mIoU against labels when
the video has labels that fit the teacher, and how many of the spec's layers run a block between
key frames (none: the student repeats the key frame's output); and the student's agreement by
distance from its key frame.

Beside them, the cheap answers at the student's amortised cost (DESIGN.md, "What a student must
beat"; `nas.student.baselines`), the columns after the student's:

- **the key frame repeated**, every K' = max(1, round(teacher / amortised)) frames, counted from
  the first frame of each sequence. It is read off the teacher outputs the loop computes anyway
  (no extra teacher runs); its latency is derived (teacher ms / K'), not measured.
- **the teacher at HxW**: the teacher on the frames downscaled to the largest size of their
  aspect ratio, in its size multiple, that costs no more than the student amortised, its output
  upsampled back (`LowResTeacher`); timed in the loop like the teacher.
- **the uniform student**: the spec's delta model with one rank fraction for every dense conv,
  the largest that fits the student's amortised cost (`uniform_spec`), from the data-aware start
  (input-change statistics of the first 80% of the same videos, as `nas train` gathers them for
  a student; frames it is then scored on may be among them, which can only help it), untrained,
  run by a `DeltaRunner` with the student's key frames; timed in the loop like the student.

A column that does not exist at the student's cost (the teacher costs more even at the smallest
size; the grouped convs alone cost more) is left out, and `EvalResult.left_out` says so.

Every column gets R (`evaluators.Recovered`) over the frames between its own key frames, and "R
against the key frame repeated": 1 - sum|y_hat - y|^2 / sum|y_rep - y|^2 over all frames, y_rep
the key frame repeated every K', the share of its error a column removes; every column against
one denominator, so a column's R against it above another's means outputs closer to the
teacher's. `verdict` names, in one line, every cheap answer the student does not beat.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from evaluators import ByDistance, Recovered, SegmentationMetric, TemporalConsistency, dis_flow
from nas.core.errors import NasError
from nas.core.layout import in_layout
from nas.cost.amortised import amortised
from nas.cost.latency import sync
from nas.cost.macs import count_macs
from nas.data import Video, open_videos, resize_crop, videos_or_default
from nas.delta.model import DeltaModel, resize
from nas.delta.runner import DeltaRunner
from nas.graph.layers import layer_graph
from nas.spec import Mode, Spec
from nas.student.baselines import LowResTeacher, lowres_size, repeat_interval, uniform_spec
from nas.student.build import build_student, idle_layers_of
from nas.student.clips import start_stats, video_clips
from nas.student.compare import Repeated, beats
from nas.teachers import OutputKind, Teacher

# The data-aware start of the uniform student as `nas train` makes a student's, by its defaults:
# clips per batch, the seed of their draws, and the share of each video's end left out of them.
START_BATCH_SIZE = 2
START_SEED = 0
START_VAL_FRACTION = 0.2

LAYERS = "layers that run between key frames"
GFLOPS = "GFLOPs per frame (between key frames)"
GFLOPS_AMORTISED = "GFLOPs amortised"
LATENCY = "latency ms per frame (between key frames)"
LATENCY_AMORTISED = "latency ms amortised"
AGREEMENT = "agreement with the teacher (frames between key frames)"
AGREEMENT_ALL = "agreement with the teacher (all frames)"
R = "R, share of the teacher's change recovered (frames between key frames)"
R_AGAINST = "R against the key frame repeated (all frames)"
TC = "temporal consistency TC"
MIOU = "mIoU against labels"
METRICS = (
    LAYERS,
    GFLOPS,
    GFLOPS_AMORTISED,
    LATENCY,
    LATENCY_AMORTISED,
    AGREEMENT,
    AGREEMENT_ALL,
    R,
    R_AGAINST,
    TC,
    MIOU,
)

UNIFORM = "uniform student"


@dataclass(frozen=True)
class EvalResult:
    """`columns`: teacher, student, the key frame repeated, then the teacher at HxW and the
    uniform student where they exist at the student's cost. `rows`: (metric, one value per
    column), None where a value does not apply. `by_distance`: the student's agreement per
    distance from its key frame; `repeat_interval`: K' of the key frame repeated; `lowres_size`
    and `uniform_fraction`: what the other two columns ran at (None: not run); `left_out`: one
    line per cheap answer with no column, and why; `verdict`: one line, whom the student does
    not beat."""

    columns: list[str]
    rows: list[tuple[str | float | None, ...]]
    by_distance: list[dict]
    frames: int
    key_frames: int
    repeat_interval: int = 1
    verdict: str = ""
    lowres_size: tuple[int, int] | None = None
    uniform_fraction: float | None = None
    left_out: list[str] = field(default_factory=list)

    def row(self, metric: str) -> dict[str, float | None]:
        """One metric's values by column name."""
        for name, *values in self.rows:
            if name == metric:
                return dict(zip(self.columns, values, strict=True))
        raise KeyError(metric)


def _mean_agreement(tables: list[list[dict]], between: bool) -> float | None:
    """Mean agreement over the frames of `ByDistance` tables (`between`: distance > 0 only)."""
    rows = [r for table in tables for r in table if r["distance"] > 0 or not between]
    frames = sum(r["frames"] for r in rows)
    return sum(r["agreement"] * r["frames"] for r in rows) / frames if frames else None


def repeated_phrase(interval: int) -> str:
    """How the verdict names the key frame repeated every `interval` frames."""
    if interval == 1:
        return "running the teacher on every frame"
    return f"repeating the key frame every {interval} frames"


def verdict(
    student: tuple[float, float | None], cheap: dict[str, tuple[float, float | None]]
) -> str:
    """One line: which cheap answers at the same cost does the student not beat? `student` and
    each of `cheap` (keyed by how the line names it): (agreement with the teacher over all
    frames, R against the key frame repeated over all frames; None: the teacher's output never
    moved). Every column is measured against the same reference, so both compare directly
    (`nas.student.compare.beats`)."""
    r = student[1]
    lost = [name for name, other in cheap.items() if not beats(student, other)]

    def shown(pair: tuple[float, float | None]) -> str:
        if r is None:
            return f"{pair[0]:.4f}"
        return f"{pair[0]:.4f}, " + ("-" if pair[1] is None else f"{pair[1]:.4f}")

    measured = "agreement with the teacher over all frames"
    if r is not None:
        measured += ", R against the key frame repeated"
    scores = "; ".join(
        f"{name} {shown(pair)}" for name, pair in {"the student": student, **cheap}.items()
    )
    if lost:
        return f"the student does not beat: {', '.join(lost)} ({measured}: {scores})"
    return f"the student beats every cheap answer at the same cost ({measured}: {scores})"


def _timed(device: torch.device, run: Callable, x: torch.Tensor):
    """`run(x)` and the seconds it took, synchronised on the device on both sides."""
    sync(device)
    start = time.perf_counter()
    out = run(x)
    sync(device)
    return out, time.perf_counter() - start


class _Column:
    """What one column gathers over the frames: agreement with the teacher on its key frames and
    by distance from them (a column without key frames: every frame, at distance 0, as for a
    per-frame student), R over the frames between its key frames, R against the key frame
    repeated over all frames, TC, mIoU, and the time each frame took (key frames apart)."""

    def __init__(self, name: str, teacher: Teacher, labels: bool) -> None:
        self.name = name
        self.keys, self.between = ByDistance(), ByDistance()
        self.recovered, self.against = Recovered(), Recovered()
        self.tc = TemporalConsistency(teacher.output_kind, teacher.num_classes)
        self.seg = SegmentationMetric(teacher.num_classes) if labels else None
        self.key_times: list[float] = []
        self.delta_times: list[float] = []
        self.key_output: torch.Tensor | None = None  # the teacher's, on this column's key frame

    def took(self, seconds: float, *, key: bool = False) -> None:
        (self.key_times if key else self.delta_times).append(seconds)

    def score(
        self,
        y: torch.Tensor,
        y_teacher: torch.Tensor,
        y_repeated: torch.Tensor,
        *,
        is_key: bool,
        distance: int,
        kind: OutputKind,
    ) -> None:
        """Agreement and R of one frame's prediction `y`."""
        if is_key:
            self.key_output = y_teacher
            self.keys.update(0, y, y_teacher, kind)
        else:
            self.between.update(distance, y, y_teacher, kind)
            if self.key_output is not None:  # columns without key frames have no such R
                self.recovered.update(y, self.key_output, y_teacher)
        self.against.update(y, y_repeated, y_teacher)

    def milliseconds(self) -> tuple[float | None, float | None]:
        """Median ms of a key frame and of a frame between key frames (each the other's where
        this column has none of one)."""
        key = statistics.median(self.key_times) * 1e3 if self.key_times else None
        delta = statistics.median(self.delta_times) * 1e3 if self.delta_times else None
        return (delta if key is None else key), (key if delta is None else delta)

    def agreement(self, *, between: bool) -> float | None:
        """Mean agreement over the frames between key frames (every frame of a column without
        key frames), or over all frames."""
        tables = [self.between.table()] + ([] if between else [self.keys.table()])
        return _mean_agreement(tables, between=False)


@dataclass
class _Uniform:
    """The uniform student's spec at the student's cost and its model (None: not built, and
    `why` says why)."""

    spec: Spec | None = None
    model: DeltaModel | None = None
    why: str = ""


def _uniform_student(
    spec: Spec,
    teacher: Teacher,
    source: Video,
    *,
    interval: int | None,
    student_macs: float,
    device: torch.device,
) -> _Uniform:
    """The uniform student at the student's amortised cost with key frames every `interval`
    (None: the per-frame modes), from the data-aware start on `source`'s frames."""
    at_cost = spec
    if interval is not None:  # an overridden -k moves the student's cost, and the target with it
        totals = spec.totals.model_copy(update={"amortised_macs": student_macs})
        at_cost = spec.model_copy(update={"keyframe_interval": interval, "totals": totals})
    uniform = uniform_spec(at_cost, layer_graph(teacher.module, tuple(spec.input_size)))
    if uniform is None:
        return _Uniform(
            why=f"{UNIFORM} left out: no rank fraction fits the student's amortised "
            f"{student_macs / 1e9:.4f} GFLOPs (even rank 1 on every dense conv, beside the grouped "
            "convs kept full, costs more)"
        )
    stats = {}
    if spec.mode == Mode.DELTA:
        try:
            clips, _ = video_clips(
                teacher,
                None,
                size=tuple(spec.teacher_input_size or spec.input_size),
                interval=spec.keyframe_interval,
                max_frames=None,
                val_fraction=START_VAL_FRACTION,
                source=source,
            )
        except NasError as exc:  # sequences too short to split
            return _Uniform(
                why=f"{UNIFORM} left out: its data-aware start draws on the first "
                f"{1 - START_VAL_FRACTION:.0%} of each video, as `nas train`'s does, and these "
                f"are too short for it ({exc})"
            )
        stats = start_stats(
            spec, teacher, clips, batch_size=START_BATCH_SIZE, device=device, seed=START_SEED
        )
    return _Uniform(uniform, build_student(uniform, teacher, stats=stats).to(device))


def evaluate(
    spec: Spec,
    teacher: Teacher,
    student: DeltaModel,
    video: str | Sequence[str] | None,
    *,
    interval: int,
    max_frames: int | None,
    device: torch.device,
    skip_frames: int = 0,
    channels_last: bool = False,
    baselines: bool = True,
    on_frame: Callable[[int], None] | None = None,
) -> EvalResult:
    """Run teacher, student and the cheap answers over the videos (None: the teacher's default
    clips) and measure them (see module docstring). Each sequence starts with a key frame, and
    TC pairs no frames of two sequences. `skip_frames` first frames of each sequence are left
    out (say, those a student was trained on), `max_frames` of each are evaluated.
    `channels_last`: every model runs in that layout (`nas.core.layout.layout_for`). `baselines`:
    also the teacher at HxW and the uniform student, which cost time (False: the key frame
    repeated only, which costs none). `on_frame(n)` after each frame, n done."""
    limit = None if max_frames is None else skip_frames + max_frames
    source = open_videos(videos_or_default(video, teacher.output_kind), max_frames=limit)
    runner = DeltaRunner(student, interval=interval, channels_last=channels_last)  # checks -k
    kind = teacher.output_kind
    use_labels = source.has_labels and source.num_classes == teacher.num_classes
    frame_size = tuple(spec.teacher_input_size or spec.input_size)
    key_interval = spec.interval and interval  # None: no key frames (per-frame modes)
    totals = spec.totals
    student_macs = amortised(totals.teacher_macs, totals.delta_frame_macs, key_interval)
    k = repeat_interval(totals.teacher_macs, student_macs)
    repeated = Repeated(k)

    left_out: list[str] = []
    small = uniform = None
    if baselines:  # sized, and built, before the teacher changes layout
        small = lowres_size(teacher, frame_size, student_macs)
        if small is None:
            left_out.append(
                "teacher on smaller frames left out: it costs more than the student's amortised "
                f"{student_macs / 1e9:.4f} GFLOPs at every size of the frames' aspect ratio in "
                f"multiples of {teacher.input_spec.size_multiple}"
            )
        uniform = _uniform_student(
            spec, teacher, source, interval=key_interval, student_macs=student_macs, device=device
        )
        if uniform.model is None:
            left_out.append(uniform.why)
    if channels_last:
        teacher.module.to(memory_format=torch.channels_last)

    def column(name: str) -> _Column:
        return _Column(name, teacher, use_labels)

    teacher_column, repeated_column = column("teacher"), column(f"key frame repeated, every {k}")
    # The delta models, each with its column: the student, then the uniform student.
    student_column = column("student")
    runners = [(student_column, runner)]
    lowres = lowres_column = None
    if small is not None:
        lowres, lowres_column = (
            LowResTeacher(teacher, small),
            column(f"teacher at {small[0]}x{small[1]}"),
        )
    if uniform is not None and uniform.model is not None:
        model = uniform.model
        runners.append(
            (column(UNIFORM), DeltaRunner(model, interval=interval, channels_last=channels_last))
        )
    columns = [teacher_column, student_column, repeated_column]
    columns += [c for c in (lowres_column, *(c for c, _ in runners[1:])) if c is not None]

    frames = 0
    previous = None  # the last frame's image and every column's prediction
    for starts, frame in source.frames_with_starts(skip_frames):
        if starts:  # a new sequence: a new key frame, and no TC pair across the cut
            for _, each in runners:
                each.reset()
            repeated.reset()
            previous = None
        frame = resize_crop(frame, frame_size)
        x = in_layout(teacher.input_spec.normalize(frame.image[None].to(device)), channels_last)
        with torch.inference_mode():
            y_teacher, seconds = _timed(device, teacher, x)
            teacher_column.took(seconds)
            y_repeated = repeated(x, y_teacher)
            outputs = {teacher_column: y_teacher, repeated_column: y_repeated}
            for each_column, each in runners:
                step, seconds = _timed(device, each.step, x)
                each_column.took(seconds, key=step.is_key)
                outputs[each_column] = step.prediction
                each_column.score(
                    step.prediction, y_teacher, y_repeated,
                    is_key=step.is_key, distance=step.distance, kind=kind,
                )  # fmt: skip
            if lowres is not None:
                y_low, seconds = _timed(device, lowres, x)
                lowres_column.took(seconds)
                outputs[lowres_column] = y_low = resize(y_low, tuple(y_teacher.shape[-2:]))
                lowres_column.score(
                    y_low, y_teacher, y_repeated, is_key=False, distance=0, kind=kind
                )
        distance = repeated.distance
        repeated_column.score(
            y_repeated, y_teacher, y_repeated, is_key=distance == 0, distance=distance, kind=kind
        )
        if previous is not None:
            image0, before = previous
            flow = None
            if kind is not OutputKind.IMAGE_LOGITS:  # one flow for every column
                flow = dis_flow(image0, frame.image, preset=teacher_column.tc.preset)
            for each_column, y in outputs.items():
                each_column.tc.update(
                    before[each_column].cpu(), y.cpu(), image0, frame.image, flow=flow
                )
        if use_labels and frame.label is not None:
            for each_column, y in outputs.items():
                each_column.seg.update(y.cpu(), frame.label[None])
        previous = (frame.image, outputs)
        frames += 1
        if on_frame is not None:
            on_frame(frames)
    if frames == 0:
        raise NasError(
            f"no frame to evaluate in {source.name}: every sequence ends before frame "
            f"{skip_frames + 1} (--skip-frames {skip_frames}); skip fewer"
        )
    return _result(
        spec,
        student,
        columns,
        interval=key_interval,
        k=k,
        lowres=(small, count_macs(teacher.module, small)) if small is not None else None,
        uniform=uniform.spec if uniform is not None else None,
        labels=use_labels,
        frames=frames,
        left_out=left_out,
    )


def _result(
    spec: Spec,
    student: DeltaModel,
    columns: list[_Column],
    *,
    interval: int | None,
    k: int,
    lowres: tuple[tuple[int, int], int] | None,
    uniform: Spec | None,
    labels: bool,
    frames: int,
    left_out: list[str],
) -> EvalResult:
    """The table, column by column, and the verdict, from what the loop gathered. `lowres`: the
    teacher at HxW's size and multiply-adds; `uniform`: the uniform student's spec."""
    teacher, student_column, repeated, *others = columns
    teacher_ms, _ = teacher.milliseconds()
    teacher_gflops = spec.totals.teacher_macs / 1e9
    changed = student_column.against.compute() is not None  # the teacher's output moved
    layers = len(spec.layers)

    def scored(column: _Column) -> dict[str, float | None]:
        return {
            AGREEMENT: column.agreement(between=True),  # per-frame modes: every frame
            AGREEMENT_ALL: column.agreement(between=False),
            R: column.recovered.compute(),
            R_AGAINST: column.against.compute(),
            TC: column.tc.compute(),
            MIOU: column.seg.compute()["miou"] if column.seg is not None else None,
        }

    def measured(column: _Column, macs: float, amortised_macs: float) -> dict:
        key_ms, delta_ms = column.milliseconds()
        return {
            GFLOPS: macs / 1e9,
            GFLOPS_AMORTISED: amortised_macs / 1e9,
            LATENCY: delta_ms,
            LATENCY_AMORTISED: amortised(key_ms, delta_ms, interval),
        }

    delta_macs = spec.totals.delta_frame_macs
    student_macs = amortised(spec.totals.teacher_macs, delta_macs, interval)
    table = {
        teacher.name: {
            LAYERS: layers,
            GFLOPS: teacher_gflops,
            GFLOPS_AMORTISED: teacher_gflops,
            LATENCY: teacher_ms,
            LATENCY_AMORTISED: teacher_ms,
            AGREEMENT: 1.0,
            AGREEMENT_ALL: 1.0,
            R: 1.0,
            R_AGAINST: 1.0 if changed else None,
            TC: teacher.tc.compute(),
            MIOU: teacher.seg.compute()["miou"] if teacher.seg is not None else None,
        },
        student_column.name: {
            # A student whose every layer is idle repeats the key frame's output.
            LAYERS: layers - len(idle_layers_of(spec, student)),
            **measured(student_column, delta_macs, student_macs),
            **scored(student_column),
        },
        repeated.name: {
            LAYERS: 0,
            GFLOPS: 0.0,
            GFLOPS_AMORTISED: teacher_gflops / k,
            LATENCY: None,
            LATENCY_AMORTISED: teacher_ms / k,  # derived, teacher ms / K', not measured
            **scored(repeated),
        },
    }
    for column in others:
        if column.name == UNIFORM:  # no `zero`: every layer runs
            totals = uniform.totals
            found = {LAYERS: len(uniform.layers)}
            found |= measured(column, totals.delta_frame_macs, totals.amortised_macs)
        else:  # the teacher at HxW, on every frame: no key frames to amortise over
            _, macs = lowres
            found = {LAYERS: layers, **measured(column, macs, macs)}
            found[LATENCY_AMORTISED] = found[LATENCY]
        table[column.name] = found | scored(column)
    metrics = METRICS if labels else tuple(m for m in METRICS if m != MIOU)
    rows = [(metric, *(values[metric] for values in table.values())) for metric in metrics]

    def standing(column: _Column) -> tuple[float, float | None]:
        return table[column.name][AGREEMENT_ALL], table[column.name][R_AGAINST]

    cheap = {repeated_phrase(k): standing(repeated)}
    cheap |= {f"the {column.name}": standing(column) for column in others}
    built = any(column.name == UNIFORM for column in others)
    return EvalResult(
        columns=list(table),
        rows=rows,
        by_distance=student_column.between.table(),
        frames=frames,
        key_frames=len(student_column.key_times),
        repeat_interval=k,
        verdict=verdict(standing(student_column), cheap),
        lowres_size=lowres[0] if lowres is not None else None,
        uniform_fraction=uniform.metrics["uniform_fraction"] if built else None,
        left_out=left_out,
    )
