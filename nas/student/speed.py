"""What an exported delta model's saving is worth in time, timed as it ships.

A FLOPs budget counts multiply-adds; a device spends time also on what they do not count (the
recurrence's memory traffic, activations, small convs that run below the dense convs' pace).
After every delta-mode search the teacher as shipped and the student as `nas eval` and
`nas infer` run it (the model `nas.build_student` returns, run frame by frame by
`nas.delta.runner.DeltaRunner`, in the search's layout) are timed on the same real frames, taking
turns round by round so that a drift of the machine's speed hits both alike. The spec records
the measured amortised speed-up and its share of the multiply-add ratio: 1 where every
multiply-add saved is time saved, well below 1 where the saving exists on paper only.
`nas search` warns below `SPEED_TARGET`; `--max-latency` makes a search pay for time as well.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch

from nas.core.layout import in_layout
from nas.cost.amortised import amortised
from nas.cost.latency import fixed_threads, sync
from nas.delta.model import DeltaModel
from nas.delta.runner import DeltaRunner
from nas.teachers import Teacher

# A measured speed-up below this share of the multiply-add ratio is called a saving on paper.
SPEED_TARGET = 0.8
ROUNDS = 5  # timed rounds over the frames (after one that warms up)
CYCLES = 2  # key-frame intervals of frames per round


def speedup_metrics(
    teacher_ms: float, keyframe_ms: float, delta_frame_ms: float, interval: int, macs_ratio: float
) -> dict[str, float]:
    """The spec's measured figures: ms per frame of the teacher, of a key frame and of a delta
    frame, amortised over `interval`, the speed-up and its share of `macs_ratio`."""
    amortised_ms = amortised(keyframe_ms, delta_frame_ms, interval)
    speedup = teacher_ms / amortised_ms
    return {
        "teacher_ms": teacher_ms,
        "keyframe_ms": keyframe_ms,
        "delta_frame_ms": delta_frame_ms,
        "amortised_ms": amortised_ms,
        "speedup": speedup,
        "speedup_share": speedup / macs_ratio,
    }


def time_student(
    student: DeltaModel | None,
    teacher: Teacher | None,
    frames: Sequence[torch.Tensor],
    interval: int | None,
    *,
    device: torch.device,
    threads: int,
    channels_last: bool = False,
    rounds: int = ROUNDS,
) -> dict[str, float]:
    """Seconds of a key frame and of a delta frame of `student` run by `DeltaRunner` over
    `frames` (normalised 1 x 3 x H x W, in order; key frames every `interval`, None: the
    per-frame modes, none), and of the teacher's module on the same frames: medians over
    `rounds` of each round's mean, the models taking turns within every round after one that
    warms up. Either model may be None (not timed). Both are left in NCHW."""
    module = None if teacher is None else teacher.module.eval()
    frames = [in_layout(x.to(device), channels_last) for x in frames]
    runner = None
    if student is not None:
        runner = DeltaRunner(student, interval=interval or 1, channels_last=channels_last)
    if module is not None and channels_last:
        module.to(memory_format=torch.channels_last)
    times: dict[str, list[float]] = {"teacher_s": [], "keyframe_s": [], "delta_frame_s": []}
    try:
        with fixed_threads(threads), torch.inference_mode():
            for _ in range(rounds + 1):
                if module is not None:
                    sync(device)
                    start = time.perf_counter()
                    for x in frames:
                        module(x)
                    sync(device)
                    times["teacher_s"].append((time.perf_counter() - start) / len(frames))
                if runner is None:
                    continue
                runner.reset()
                spent = {True: [], False: []}
                for x in frames:
                    sync(device)
                    start = time.perf_counter()
                    step = runner.step(x)
                    sync(device)
                    spent[step.is_key].append(time.perf_counter() - start)
                for name, key in (("keyframe_s", True), ("delta_frame_s", False)):
                    times[name].append(statistics.mean(spent[key]) if spent[key] else 0.0)
    finally:
        if runner is not None:
            runner.reset()
        if channels_last:
            for model in (student, module):
                if model is not None:
                    model.to(memory_format=torch.contiguous_format)
    return {name: statistics.median(found[1:]) for name, found in times.items() if found}


def timing_frames(stream, interval: int, cycles: int = CYCLES) -> list[torch.Tensor]:
    """`cycles` key-frame intervals of frames from `stream` (normalised 1 x 3 x H x W tensors),
    repeated from the start where the stream is shorter."""
    frames = []
    for x in stream:
        frames.append(x)
        if len(frames) == interval * cycles:
            break
    if not frames:
        raise ValueError("no frames to time the student on")
    found = len(frames)
    while len(frames) < interval * cycles:
        frames.append(frames[len(frames) % found])
    return frames


def measure_speedup(
    student: DeltaModel,
    teacher: Teacher,
    frames: Sequence[torch.Tensor],
    interval: int,
    macs_ratio: float,
    *,
    device: torch.device,
    threads: int,
    channels_last: bool = False,
) -> dict[str, float]:
    """`speedup_metrics` of the shipped `student` against `teacher`, timed side by side on
    `frames` (`time_student`)."""
    times = time_student(
        student,
        teacher,
        frames,
        interval,
        device=device,
        threads=threads,
        channels_last=channels_last,
    )
    return speedup_metrics(
        times["teacher_s"] * 1e3,
        times["keyframe_s"] * 1e3,
        times["delta_frame_s"] * 1e3,
        interval,
        macs_ratio,
    )
