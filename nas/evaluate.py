"""`nas eval`: the teacher and its delta student on one or more videos, side by side, in one run.

Streams the videos once, sequence after sequence (each starts with a key frame). Every frame
goes through the teacher and through the student's `DeltaRunner` (key frames every K frames),
each timed on the same device in the same loop, so the latencies compare like with like.
Reports, for teacher and student: GFLOPs per frame and amortised, measured latency per frame and
amortised, agreement with the teacher, temporal consistency (TC: the prediction of frame t+1
warped to frame t by DIS optical flow, its mIoU with the prediction of frame t), mIoU against
labels when the video has labels that fit the teacher, the student's agreement by distance from
its key frame, and how many of its layers run a block between key frames (none: the student
repeats the key frame's output).

Beside them, the cheap answer at the student's amortised cost (DESIGN.md, "What a student must
beat"): the teacher every K' = max(1, round(teacher / amortised)) frames, its output repeated in
between, counted from the first frame of each sequence. It is read off the teacher outputs the
loop computes anyway (no extra teacher runs); its latency is derived (teacher ms / K'), not
measured. Every column gets R (`evaluators.Recovered`) over the frames between its own key
frames, and "R against the key frame repeated": 1 - sum|y_hat - y|^2 / sum|y_rep - y|^2 over all
frames, y_rep the cheap answer's output, the share of its error a column removes (> 0: the
student beats it on the outputs). `verdict` says in one line whether the student beats it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from evaluators import ByDistance, Recovered, SegmentationMetric, TemporalConsistency, dis_flow
from nas.data import open_videos, resize_crop, videos_or_default
from nas.layout import in_layout
from nas.runner import DeltaRunner
from nas.spec import Spec
from nas.student import idle_layers_of
from nas.supernet import DeltaModel, amortised
from nas.teachers import OutputKind, Teacher

# R within this of 0 is a tie with the key frame repeated (an all-`zero` student repeats its key
# frame, whose output matches the teacher's only to float precision).
R_TIE = 1e-6


@dataclass(frozen=True)
class EvalResult:
    """`rows`: (metric, one value per column of `columns`), None where a value does not apply.
    `by_distance`: the student's agreement per distance from its key frame; `repeat_interval`:
    K' of the third column; `verdict`: one line, does the student beat it."""

    rows: list[tuple[str, float | None, float | None, float | None]]
    by_distance: list[dict]
    frames: int
    key_frames: int
    repeat_interval: int = 1
    verdict: str = ""

    @property
    def columns(self) -> tuple[str, str, str]:
        return ("teacher", "student", f"key frame repeated, every {self.repeat_interval}")


def repeat_interval(teacher_macs: float, amortised_macs: float) -> int:
    """K' of the key frame repeated at an amortised cost: the teacher's cost over K' is nearest
    to it, and K' >= 1 (a student costing as much as the teacher gets the teacher itself)."""
    return max(1, round(teacher_macs / amortised_macs)) if amortised_macs > 0 else 1


class RepeatedKey:
    """The key frame repeated every `interval` frames, from outputs the teacher gave anyway:
    `step(starts, teacher_out)` per frame (`starts`: the frame starts a sequence, and so is a key
    frame) returns the prediction, the teacher's output at the last key frame, and the distance
    from it (0 on a key frame)."""

    def __init__(self, interval: int) -> None:
        self.interval = interval
        self.key: torch.Tensor | None = None
        self.distance = 0

    def step(self, starts: bool, teacher_out: torch.Tensor) -> tuple[torch.Tensor, int]:
        if starts or self.key is None or self.distance + 1 >= self.interval:
            self.key, self.distance = teacher_out, 0
        else:
            self.distance += 1
        return self.key, self.distance


def _mean_agreement(tables: list[list[dict]], between: bool) -> float | None:
    """Mean agreement over the frames of `ByDistance` tables (`between`: distance > 0 only)."""
    rows = [r for table in tables for r in table if r["distance"] > 0 or not between]
    frames = sum(r["frames"] for r in rows)
    return sum(r["agreement"] * r["frames"] for r in rows) / frames if frames else None


def verdict(interval: int, agreement: tuple[float, float], r_against: float | None) -> str:
    """One line: does the student beat the key frame repeated every `interval` frames at the same
    cost? `agreement`: the student's and the repeated key frame's over all frames; `r_against`:
    the student's R against the repeated key frame (None: the teacher's output never moved). It
    beats it when it is better on one and worse on neither; a tie does not beat it."""
    cheap = (
        "running the teacher on every frame"
        if interval == 1
        else f"repeating the key frame every {interval} frames"
    )
    student, repeated = agreement
    wins, losses = student > repeated, student < repeated
    said = f"agreement with the teacher over all frames {student:.4f} against {repeated:.4f}"
    if r_against is not None:
        wins, losses = wins or r_against > R_TIE, losses or r_against < -R_TIE
        said += f", R against it {r_against:.4f}"
    beats = "beats" if wins and not losses else "does not beat"
    return f"the student {beats} {cheap} at the same cost ({said})"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    on_frame: Callable[[int], None] | None = None,
) -> EvalResult:
    """Run teacher and student over the videos (None: the teacher's default clips) and measure
    both (see module docstring). Each sequence starts with a key frame, and TC pairs no frames of
    two sequences. `skip_frames` first frames of each sequence are left out (say, those a
    student was trained on), `max_frames` of each are evaluated. `channels_last`: both models
    run in that layout (`nas.layout.layout_for`). `on_frame(n)` after each frame, n done."""
    limit = None if max_frames is None else skip_frames + max_frames
    source = open_videos(videos_or_default(video, teacher.output_kind), max_frames=limit)
    kind, classes = teacher.output_kind, teacher.num_classes
    if channels_last:
        teacher.module.to(memory_format=torch.channels_last)
    runner = DeltaRunner(student, interval=interval, channels_last=channels_last)
    tc_teacher, tc_student = TemporalConsistency(kind, classes), TemporalConsistency(kind, classes)
    use_labels = source.has_labels and source.num_classes == classes
    seg_teacher = SegmentationMetric(classes) if use_labels else None
    seg_student = SegmentationMetric(classes) if use_labels else None
    by_distance = ByDistance()
    # The cheap answer at the student's amortised cost, and R of the student and of it.
    totals = spec.totals
    student_macs = amortised(
        totals.teacher_macs, totals.delta_frame_macs, spec.interval and interval
    )
    repeated = RepeatedKey(repeat_interval(totals.teacher_macs, student_macs))
    repeated_by_distance, student_keys = ByDistance(), ByDistance()
    tc_repeated = TemporalConsistency(kind, classes)
    seg_repeated = SegmentationMetric(classes) if use_labels else None
    r_student, r_repeated, r_against = Recovered(), Recovered(), Recovered()
    student_key = None  # the teacher's output on the student's key frame
    t_teacher: list[float] = []
    t_key: list[float] = []
    t_delta: list[float] = []
    previous = None
    for starts, frame in source.frames_with_starts(skip_frames):
        if starts:  # a new sequence: a new key frame, and no TC pair across the cut
            runner.reset()
            previous = None
        frame = resize_crop(frame, tuple(spec.teacher_input_size or spec.input_size))
        x = in_layout(teacher.input_spec.normalize(frame.image[None].to(device)), channels_last)
        with torch.inference_mode():
            _sync(device)
            start = time.perf_counter()
            y_teacher = teacher(x)
            _sync(device)
            t_teacher.append(time.perf_counter() - start)
            start = time.perf_counter()
            step = runner.step(x)
            _sync(device)
            (t_key if step.is_key else t_delta).append(time.perf_counter() - start)
        y_student = step.prediction
        y_repeated, repeat_distance = repeated.step(starts, y_teacher)
        repeated_by_distance.update(repeat_distance, y_repeated, y_teacher, kind)
        r_against.update(y_student, y_repeated, y_teacher)
        if repeat_distance:
            r_repeated.update(y_repeated, y_repeated, y_teacher)  # 0 by construction
        if step.is_key:
            student_key = y_teacher
            student_keys.update(0, y_student, y_teacher, kind)
        else:
            by_distance.update(step.distance, y_student, y_teacher, kind)
            if student_key is not None:  # per-frame modes have no key frame
                r_student.update(y_student, student_key, y_teacher)
        if previous is not None:
            image0, teacher0, student0, repeated0 = previous
            flow = None
            if kind is not OutputKind.IMAGE_LOGITS:  # one flow for the three columns
                flow = dis_flow(image0, frame.image, preset=tc_teacher.preset)
            for tc, before, now in (
                (tc_teacher, teacher0, y_teacher),
                (tc_student, student0, y_student),
                (tc_repeated, repeated0, y_repeated),
            ):
                tc.update(before.cpu(), now.cpu(), image0, frame.image, flow=flow)
        if use_labels and frame.label is not None:
            seg_teacher.update(y_teacher.cpu(), frame.label[None])
            seg_student.update(y_student.cpu(), frame.label[None])
            seg_repeated.update(y_repeated.cpu(), frame.label[None])
        previous = (frame.image, y_teacher, y_student, y_repeated)
        if on_frame is not None:
            on_frame(len(t_teacher))

    teacher_ms = statistics.median(t_teacher) * 1e3
    delta_ms = statistics.median(t_delta) * 1e3 if t_delta else None
    key_ms = statistics.median(t_key) * 1e3 if t_key else delta_ms
    delta_ms = key_ms if delta_ms is None else delta_ms
    interval = spec.interval and interval  # no key frames in the per-frame modes
    k = repeated.interval
    delta_gflops = totals.delta_frame_macs / 1e9
    teacher_gflops = totals.teacher_macs / 1e9
    distance = by_distance.table()
    student_all = [distance, student_keys.table()]
    repeated_all = [repeated_by_distance.table()]
    against_repeated = r_against.compute()  # None: the teacher's output never left y_rep
    changed = against_repeated is not None
    student_agreement = _mean_agreement(student_all, between=False)
    repeated_agreement = _mean_agreement(repeated_all, between=False)
    running = len(spec.layers) - len(idle_layers_of(spec, student))
    rows: list[tuple[str, float | None, float | None, float | None]] = [
        # A student whose every layer is idle repeats the key frame's output.
        ("layers that run between key frames", len(spec.layers), running, 0),
        ("GFLOPs per frame (between key frames)", teacher_gflops, delta_gflops, 0.0),
        (
            "GFLOPs amortised",
            teacher_gflops,
            amortised(teacher_gflops, delta_gflops, interval),
            teacher_gflops / k,
        ),
        ("latency ms per frame (between key frames)", teacher_ms, delta_ms, None),
        (
            "latency ms amortised",  # the key frame repeated: derived, teacher ms / K'
            teacher_ms,
            amortised(key_ms, delta_ms, interval),
            teacher_ms / k,
        ),
        (
            "agreement with the teacher (frames between key frames)",
            1.0,
            _mean_agreement([distance], between=False),  # per-frame modes: every frame
            _mean_agreement(repeated_all, between=True),
        ),
        (
            "agreement with the teacher (all frames)",
            1.0,
            student_agreement,
            repeated_agreement,
        ),
        (
            "R, share of the teacher's change recovered (frames between key frames)",
            1.0,
            r_student.compute(),
            r_repeated.compute(),
        ),
        (
            "R against the key frame repeated (all frames)",
            1.0 if changed else None,
            against_repeated,
            0.0 if changed else None,
        ),
        (
            "temporal consistency TC",
            tc_teacher.compute(),
            tc_student.compute(),
            tc_repeated.compute(),
        ),
    ]
    if use_labels:
        rows.append(
            (
                "mIoU against labels",
                seg_teacher.compute()["miou"],
                seg_student.compute()["miou"],
                seg_repeated.compute()["miou"],
            )
        )
    said = verdict(k, (student_agreement, repeated_agreement), against_repeated)
    return EvalResult(rows, distance, len(t_teacher), len(t_key), k, said)
