"""A latency budget checked end to end: the exported student timed, the table corrected.

The per-candidate table predicts a delta frame's time from its blocks; the student as it ships
(built from the spec, run by `DeltaRunner` on real frames) also pays for the recurrence's
elementwise work and whatever runs outside the blocks. The measured gap is moved into the
table's fixed part and the choice repaired again, until the measured amortised latency meets
the budget.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from nas.core.errors import NasError
from nas.cost.amortised import CostTable, amortised
from nas.cost.budget import Budget
from nas.delta.model import DeltaModel
from nas.searching.supernet import Supernet
from nas.student.speed import time_student


def measure_delta_latency(
    build: Callable[[dict[str, str]], DeltaModel],
    picks: dict[str, str],
    frames: Sequence[torch.Tensor],
    interval: int | None,
    *,
    device: torch.device,
    threads: int,
    channels_last: bool = False,
) -> tuple[float, float]:
    """Measured seconds of a key frame and of a delta frame of the student with `picks`, as it
    ships: `build(picks)` (`nas.build_student` of their spec), run by `DeltaRunner` over the
    real `frames` (`nas.student.speed.time_student`)."""
    student = build(picks).to(device)
    times = time_student(
        student,
        None,
        frames,
        interval,
        device=device,
        threads=threads,
        channels_last=channels_last,
    )
    return times["keyframe_s"], times["delta_frame_s"]


def fit_measured_latency(
    net: Supernet,
    build: Callable[[dict[str, str]], DeltaModel],
    picks: dict[str, str],
    budget: Budget,
    interval: int | None,
    frames: Sequence[torch.Tensor],
    *,
    device: torch.device,
    threads: int,
    rounds: int = 5,
    margin: float = 0.02,
    limited: Budget | None = None,
    table: CostTable | None = None,
    channels_last: bool = False,
) -> tuple[dict[str, str], dict[str, float]]:
    """Check a latency budget end to end; where the table was optimistic, correct it, re-export.

    The correction moves the gap between measured and tabled delta-frame time into the table's
    fixed part (what runs outside the blocks), then repairs the choice again, each time aiming
    `margin` further below the limit, so that timing noise cannot keep a choice that fills the
    corrected table exactly just over it.

    `limited`: the latency is a limit beside the FLOPs `budget` (the search's own table), with
    `table` its measured latencies; each export then meets both.
    """
    latency = limited or budget
    table = table or net.table
    best = float("inf")
    for attempt in range(1, rounds + 1):
        key, delta = measure_delta_latency(
            build,
            picks,
            frames,
            interval,
            device=device,
            threads=threads,
            channels_last=channels_last,
        )
        measured = amortised(key, delta, interval)
        best = min(best, measured)
        if measured <= latency.value:
            break
        table = dataclasses.replace(
            table, keyframe=key, other=max(0.0, table.other + delta - table.delta(picks))
        )
        aim = dataclasses.replace(latency, value=latency.value * (1 - margin * attempt))
        if limited is None:
            picks = net.export(aim, interval, table=table)
        else:
            picks = net.export(budget, interval, limits=[(table, aim)])
    else:
        what = "latency limit" if limited else "latency budget"
        raise NasError(
            f"no delta model found within the {what} {latency} when measured end to end "
            f"(best {best * 1e3:.2f} ms per frame): raise it or the key-frame interval"
        )
    return picks, {
        "keyframe_ms": key * 1e3,
        "delta_frame_ms": delta * 1e3,
        "amortised_ms": measured * 1e3,
    }
