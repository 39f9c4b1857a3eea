"""`nas eval`: the teacher and its delta student on one video, side by side, in one run.

Streams the video once. Every frame goes through the teacher and through the student's
`DeltaRunner` (key frames every K frames), each timed on the same device in the same loop, so
the latencies compare like with like. Reports, for teacher and student: GFLOPs per frame and
amortised, measured latency per frame and amortised, agreement with the teacher, temporal
consistency (TC: the prediction of frame t+1 warped to frame t by DIS optical flow, its mIoU with
the prediction of frame t), mIoU against labels when the video has labels that fit the teacher,
the student's agreement by distance from its key frame, and how many of its layers run a block
between key frames (none: the student repeats the key frame's output).
"""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass

import torch

from evaluators import ByDistance, SegmentationMetric, TemporalConsistency
from nas.data import open_video, resize_crop
from nas.layout import in_layout
from nas.runner import DeltaRunner
from nas.spec import Spec
from nas.student import idle_layers_of
from nas.supernet import DeltaModel, amortised
from nas.teachers import Teacher


@dataclass(frozen=True)
class EvalResult:
    rows: list[tuple[str, float | None, float | None]]  # metric, teacher, student
    by_distance: list[dict]
    frames: int
    key_frames: int


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(
    spec: Spec,
    teacher: Teacher,
    student: DeltaModel,
    video: str,
    *,
    interval: int,
    max_frames: int | None,
    device: torch.device,
    skip_frames: int = 0,
    channels_last: bool = False,
) -> EvalResult:
    """Run teacher and student over the video and measure both (see module docstring);
    `skip_frames` first frames are left out (say, those a student was trained on).
    `channels_last`: both models run in that layout (`nas.layout.layout_for`)."""
    limit = None if max_frames is None else skip_frames + max_frames
    source = open_video(video, max_frames=limit)
    kind, classes = teacher.output_kind, teacher.num_classes
    if channels_last:
        teacher.module.to(memory_format=torch.channels_last)
    runner = DeltaRunner(student, interval=interval, channels_last=channels_last)
    tc_teacher, tc_student = TemporalConsistency(kind, classes), TemporalConsistency(kind, classes)
    use_labels = source.has_labels and source.num_classes == classes
    seg_teacher = SegmentationMetric(classes) if use_labels else None
    seg_student = SegmentationMetric(classes) if use_labels else None
    by_distance = ByDistance()
    t_teacher: list[float] = []
    t_key: list[float] = []
    t_delta: list[float] = []
    previous = None
    for frame in itertools.islice(source.frames(), skip_frames, None):
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
        if not step.is_key:
            by_distance.update(step.distance, y_student, y_teacher, kind)
        if previous is not None:
            image0, teacher0, student0 = previous
            tc_teacher.update(teacher0.cpu(), y_teacher.cpu(), image0, frame.image)
            tc_student.update(student0.cpu(), y_student.cpu(), image0, frame.image)
        if use_labels and frame.label is not None:
            seg_teacher.update(y_teacher.cpu(), frame.label[None])
            seg_student.update(y_student.cpu(), frame.label[None])
        previous = (frame.image, y_teacher, y_student)

    teacher_ms = statistics.median(t_teacher) * 1e3
    delta_ms = statistics.median(t_delta) * 1e3 if t_delta else None
    key_ms = statistics.median(t_key) * 1e3 if t_key else delta_ms
    delta_ms = key_ms if delta_ms is None else delta_ms
    interval = spec.interval and interval  # no key frames in the per-frame modes
    totals = spec.totals
    delta_gflops = totals.delta_frame_macs / 1e9
    teacher_gflops = totals.teacher_macs / 1e9
    distance = by_distance.table()
    frames_between = sum(row["frames"] for row in distance)
    agreement = (
        sum(row["agreement"] * row["frames"] for row in distance) / frames_between
        if frames_between
        else 1.0
    )
    running = len(spec.layers) - len(idle_layers_of(spec, student))
    rows: list[tuple[str, float | None, float | None]] = [
        # A student whose every layer is idle repeats the key frame's output.
        ("layers that run between key frames", len(spec.layers), running),
        ("GFLOPs per frame (between key frames)", teacher_gflops, delta_gflops),
        ("GFLOPs amortised", teacher_gflops, amortised(teacher_gflops, delta_gflops, interval)),
        ("latency ms per frame (between key frames)", teacher_ms, delta_ms),
        ("latency ms amortised", teacher_ms, amortised(key_ms, delta_ms, interval)),
        ("agreement with the teacher (frames between key frames)", 1.0, agreement),
        ("temporal consistency TC", tc_teacher.compute(), tc_student.compute()),
    ]
    if use_labels:
        rows.append(
            ("mIoU against labels", seg_teacher.compute()["miou"], seg_student.compute()["miou"])
        )
    return EvalResult(rows, distance, len(t_teacher), len(t_key))
