"""What an exported delta model's saving is worth in time on the search's device.

A FLOPs budget counts multiply-adds; a device spends time also on what they do not count (the
recurrence's memory traffic, activations, small convs that run below the dense convs' pace).
After every delta-mode search the teacher as shipped and the exported delta model are timed end
to end, on the same device, in the same layout, one after the other, and the spec records the
measured amortised speed-up and its share of the multiply-add ratio: 1 where every multiply-add
saved is time saved, well below 1 where the saving exists on paper only. `nas search` warns below
`SPEED_TARGET`; `--max-latency` makes a search pay for time as well.
"""

from __future__ import annotations

import torch

from nas.inner import Supernet
from nas.latency import time_module
from nas.latency_check import measure_delta_latency
from nas.supernet import amortised
from nas.teachers import Teacher

# A measured speed-up below this share of the multiply-add ratio is called a saving on paper.
SPEED_TARGET = 0.8


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


def measure_speedup(
    net: Supernet,
    picks: dict[str, str],
    teacher: Teacher,
    size: tuple[int, int],
    interval: int,
    macs_ratio: float,
    *,
    device: torch.device,
    threads: int,
    channels_last: bool = False,
    measured: dict[str, float] | None = None,
) -> dict[str, float]:
    """`speedup_metrics` of the delta model with `picks` against `teacher` at `size`, both timed
    here (the key and delta frames taken from `measured` where an end-to-end latency check has
    timed them already); both models are put back in NCHW after."""
    module = teacher.module.eval()
    try:
        teacher_s = time_module(
            module, (1, 3, *size), device=device, channels_last=channels_last, threads=threads
        ).median
    finally:
        if channels_last:
            module.to(memory_format=torch.contiguous_format)
    if measured is not None:
        key_ms, delta_ms = measured["keyframe_ms"], measured["delta_frame_ms"]
    else:
        key_s, delta_s = measure_delta_latency(
            net, picks, size, device=device, threads=threads, channels_last=channels_last
        )
        key_ms, delta_ms = key_s * 1e3, delta_s * 1e3
    return speedup_metrics(teacher_s * 1e3, key_ms, delta_ms, interval, macs_ratio)
