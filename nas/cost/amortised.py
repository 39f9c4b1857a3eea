"""Amortised cost: a key frame every K frames at the teacher's cost, the frames between at a delta
model's; the cost table a search draws from, and the check that a budget can be met at all."""

from __future__ import annotations

import math
from dataclasses import dataclass

from nas.core.errors import NasError
from nas.cost.budget import Budget, CostKind


def amortised(keyframe_cost: float, delta_cost, interval: int | None):
    """Per-frame cost of a key frame every `interval` frames: (teacher + (K-1) * delta) / K;
    `interval` None: no key frames at all (per-frame and resolution modes), every frame pays the
    student's cost."""
    if interval is None:
        return delta_cost
    return (keyframe_cost + (interval - 1) * delta_cost) / interval


def smallest_interval(keyframe_cost: float, min_delta_cost: float, budget: float) -> int | None:
    """The smallest key-frame interval K whose cheapest delta model meets the budget, if any."""
    if budget <= min_delta_cost:
        return None
    k = math.ceil((keyframe_cost - min_delta_cost) / (budget - min_delta_cost) - 1e-12)
    return max(k, 2)


@dataclass(frozen=True)
class CostTable:
    """Costs in the budget's unit (multiply-adds or seconds), per frame with all calls."""

    unit: CostKind
    keyframe: float  # the teacher on one full frame
    other: float  # outside the searched convs, paid on every frame
    candidates: dict[str, dict[str, float]]  # layer path -> candidate name -> cost

    def min_delta(self) -> float:
        return self.other + sum(min(costs.values()) for costs in self.candidates.values())

    def delta(self, picks: dict[str, str]) -> float:
        return self.other + sum(self.candidates[path][name] for path, name in picks.items())


def check_budget(table: CostTable, budget: Budget, interval: int | None) -> None:
    """Refuse, before any work, a budget that no delta model at this interval can meet
    (`interval` None: no key frames, the per-frame modes)."""
    floor = amortised(table.keyframe, table.min_delta(), interval)
    if budget.value >= floor:
        return

    def show(value: float) -> str:
        return str(Budget(budget.kind, value))

    if interval is None:
        raise NasError(
            f"budget {budget} is below the cheapest student of this search space, "
            f"{show(floor)} per frame: raise the budget, or use delta mode (--mode delta)"
        )

    k = smallest_interval(table.keyframe, table.min_delta(), budget.value)
    hint = (
        f"the smallest key-frame interval that could meet it is {k}"
        if k
        else ("no key-frame interval can meet it")
    )
    raise NasError(
        f"budget {budget} is below what key-frame interval {interval} allows: the key frame "
        f"alone costs {show(table.keyframe)} / {interval} = "
        f"{show(table.keyframe / interval)} per frame and the cheapest delta model "
        f"{show(floor)} amortised; {hint}"
    )


Constraint = tuple[CostTable, Budget]  # a further limit: its costs and its value
