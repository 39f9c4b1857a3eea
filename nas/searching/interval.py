"""The key-frame interval for an amortised budget, measured (`--keyframe-interval auto`).

For one budget B a longer interval K leaves each delta frame more to spend,
(K * B - teacher) / (K - 1), but the frames between key frames drift further from it. Which
wins depends on the teacher and the video, so it is measured, cheaply, before the search:

1. On the first frames of the training clips (a key frame and the frame two after it, the
   student at its dearest, exact), every candidate's layer error e_l(c) and every layer's
   output sensitivity s_l are measured once, as the search's first step measures them
   (`nas.searching.supernet.measure_all_candidates`, `nas.searching.supernet.measure_sensitivity`).
2. For each K whose cheapest delta frame fits (`feasible_intervals`), an allocation: the
   export stage (`nas.searching.export`) run on the scores -s_l * e_l(c) in place of the search's
   log-probabilities. From the exact student it gives up the least predicted output error per
   unit of cost saved until the delta frame fits K's budget (a multiple-choice knapsack solved
   greedily), and, like every export, never goes over budget.
3. That allocation measured where it counts, on the output: from each window's first frame as
   the key frame, the student (data-aware start, untrained) predicts the frames d = 1..K-1
   after it; err_K(d) is the mean squared error against the teacher. Amortised over the K
   frames (key frames are exact): E(K) = sum_{d<K} err_K(d) / K.

The interval with the least E(K) is chosen, among those whose allocation predicts some change (one
of `zero`s alone is the key frame repeated, not a student). Beside it, the cheap answer at the same
cost: the key frame repeated every K' frames (`nas.student.baselines.repeat_interval`) scores
sum_{d<K'} D(d) / K', where D(d) is the teacher's own change over d frames.

Every frame is measured, nothing is trained: the screen costs a few dozen forward passes, so a
study of one trial still weighs every interval. What the search then trains and exports is a
better student than the screen's; the screen ranks intervals, it does not score students.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch

from nas.core.errors import NasError
from nas.cost.amortised import Constraint, CostTable, amortised
from nas.cost.budget import Budget
from nas.delta.liveness import NO_CHANGE
from nas.searching.supernet import Supernet, knapsack_picks, measure_errors, measure_sensitivity
from nas.student.baselines import repeat_interval

INTERVALS = range(2, 9)  # the intervals an `auto` search weighs (the study's range too)
WINDOWS_PER_CLIP = 2
FORCED_DISTANCE = 2  # frames from the key frame at which the layer errors are measured


@dataclass(frozen=True)
class IntervalScreen:
    """E(K) per feasible interval, the chosen K, and the key frame repeated at the same cost."""

    errors: dict[int, float]  # K -> mean squared output error per frame, key frames included
    chosen: int
    repeat_interval: int  # K' of the key frame repeated at the budget's cost
    repeat_error: float  # its error per frame, on the same frames
    # K -> the allocation measured (not kept in `metrics()`: the search makes its own)
    allocations: dict[int, dict[str, str]] = field(default_factory=dict, compare=False)

    def metrics(self) -> dict[str, float]:
        """Flat values for a spec's metrics."""
        found = {f"interval_error_k{k}": e for k, e in self.errors.items()}
        return found | {
            "interval_chosen": float(self.chosen),
            "interval_repeat_k": float(self.repeat_interval),
            "interval_repeat_error": self.repeat_error,
        }

    @classmethod
    def from_metrics(cls, metrics: dict[str, float]) -> IntervalScreen:
        """The screen `metrics()` describes."""
        prefix = "interval_error_k"
        errors = {int(k[len(prefix) :]): v for k, v in metrics.items() if k.startswith(prefix)}
        return cls(
            dict(sorted(errors.items())),
            int(metrics["interval_chosen"]),
            int(metrics["interval_repeat_k"]),
            metrics["interval_repeat_error"],
        )

    def summary(self) -> str:
        """One line: each interval's measured error per frame, relative to the key frame
        repeated at the same cost (below 1: the untrained student already beats it)."""
        relative = self.repeat_error > 0
        shown = ", ".join(
            f"K={k} {e / self.repeat_error if relative else e:.3g}"
            f"{' (chosen)' if k == self.chosen else ''}"
            for k, e in self.errors.items()
        )
        unit = (
            f"relative to the key frame repeated every {self.repeat_interval}, the same cost"
            if relative
            else "mean squared output error"
        )
        return f"key-frame interval measured (error per frame, {unit}): {shown}"


def feasible_intervals(
    table: CostTable, budget: Budget, intervals: Iterable[int] = INTERVALS
) -> list[int]:
    """The intervals at which the cheapest delta frame meets `budget`."""
    floor = table.min_delta()
    return [k for k in intervals if amortised(table.keyframe, floor, k) <= budget.value]


def windows(
    sequences: Iterable[Iterable[torch.Tensor]], length: int, per_sequence: int = WINDOWS_PER_CLIP
) -> torch.Tensor:
    """`per_sequence` runs of `length` consecutive frames from each sequence (fewer where it is
    short), spread evenly over it, stacked: windows x length x 3 x H x W (uint8, as given).
    The first frames of a clip alone are a poor sample of it: its motion changes along it."""
    found = []
    for frames in sequences:
        taken = list(frames)
        fits = len(taken) - length + 1
        if fits < 1:
            continue
        starts = sorted(
            {round(i * (fits - 1) / max(1, per_sequence - 1)) for i in range(per_sequence)}
        )
        found += [torch.stack(taken[start : start + length]) for start in starts]
    if not found:
        raise NasError(
            f"no clip holds the {length} frames needed to weigh key-frame intervals: give longer "
            "videos or --max-frames, or a fixed --keyframe-interval"
        )
    return torch.stack(found)


def screen_intervals(
    net: Supernet,
    frames: torch.Tensor,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    *,
    budget: Budget,
    intervals: Sequence[int],
    limits: Sequence[Constraint] = (),
) -> IntervalScreen:
    """Measure E(K) for every interval of `intervals` (each feasible) on `frames` (windows x
    length x 3 x H x W from `windows`, length at least the largest interval and the repeated
    key frame's K' at the budget's cost) and choose; see the module
    docstring. `normalize` turns frames into the teacher's input. The supernet is left as
    it was found: its logits, no fixed choice, no cached frames."""
    if not intervals:
        raise ValueError("no interval to screen")
    model = net.model
    device = next(model.parameters()).device
    length = max(max(intervals), repeat_interval(net.table.keyframe, budget.value))
    if frames.shape[1] < length:
        raise ValueError(f"windows of {frames.shape[1]} frames; {length} needed")
    inputs = [normalize(frames[:, d].to(device).float()) for d in range(length)]
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            y_teacher = [model.teacher_frame(x) for x in inputs]
        first = (inputs[0], inputs[min(FORCED_DISTANCE, length - 1)], None)
        errors = measure_errors(net, [first])
        measure_sensitivity(net, first)
        found, allocations = {}, {}
        for k in intervals:
            allocations[k] = knapsack_picks(net, errors, budget, k, limits)
            net.fix(allocations[k])
            model.clear()
            with torch.no_grad():
                model.key_frame(inputs[0])
                total = sum(
                    float((model.delta_frame(inputs[d]) - y_teacher[d]).pow(2).mean())
                    for d in range(1, k)
                )
            found[k] = total / k
    finally:
        net.fix(None)
        model.clear()
        model.train(training)
        for m in net.mixed.values():
            m.sensitivity.fill_(1.0)
    k_repeat = repeat_interval(net.table.keyframe, budget.value)
    change = [float((y - y_teacher[0]).pow(2).mean()) for y in y_teacher]
    repeat = sum(change[:k_repeat]) / k_repeat
    # An allocation of `zero`s alone is the key frame repeated, not a student: chosen only if
    # nothing else fits.
    students = [k for k in found if any(v != NO_CHANGE for v in allocations[k].values())]
    chosen = min(students or found, key=found.get)
    return IntervalScreen(found, chosen, k_repeat, repeat, allocations)
