"""Cost budgets: a multiply-add count or a latency, parsed from what a user types.

Grammar (case-insensitive, spaces allowed between number and unit)::

    5GFLOPs   5 GFLOPs   5GMACs   500MFLOPs   1.2TFLOPs   2.5e9      -> multiply-adds
    40ms      0.04s      800us                                        -> latency
    50%       50 %       2x       2X                                  -> relative to the teacher

"FLOPs" means multiply-adds, as torchvision, fvcore and the Delta Distillation paper count
them; "MACs" is a synonym. A bare number is a multiply-add count.

A relative budget is a fraction of the teacher's cost: `50%` is half of it, and `2x` the same
said as a speed-up. Only a saving makes sense, so a percentage is below 100 and a speed-up above
1. Its kind depends on the option (`parse_budget(..., relative_kind=...)`): for `--budget` it is
the teacher's multiply-adds per frame at the search's input size (the teacher at full size in
resolution mode), for `--max-latency` the teacher's measured time per frame on the search's
device. It stays a `RelativeBudget` until that cost is known; `resolve_budget` then turns it into
an absolute `Budget` that remembers how it was given (shown as `50% = 9.878GFLOPs`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum

from nas.core.errors import NasError


class CostKind(str, Enum):
    MACS = "macs"
    LATENCY = "latency"


_PREFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
_PATTERN = re.compile(
    r"^\s*(?P<num>[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*"
    r"(?P<unit>(?:[kmgt]?(?:flops?|macs?))|s|ms|us|%|x)?\s*$",
    re.IGNORECASE,
)
EXAMPLES = "5GFLOPs, 5 GFLOPs, 5GMACs, 500MFLOPs, 2.5e9, 40ms, 50% or 2x"


@dataclass(frozen=True)
class RelativeBudget:
    """A budget given as a fraction of the teacher's cost (`50%`, `2x`), unknown in absolute
    units until that cost is: `resolve` it then."""

    kind: CostKind  # what the fraction is of: the teacher's multiply-adds, or measured time
    fraction: float  # 0.5 for `50%` and for `2x`
    text: str  # as given, normalised: `50%`, `2x`

    def resolve(self, teacher_cost: float) -> Budget:
        """The absolute budget: `fraction` of `teacher_cost` (in the budget's unit)."""
        return Budget(self.kind, self.fraction * teacher_cost, relative=self)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Budget:
    """A cost limit: `value` is multiply-adds (kind MACS) or seconds (kind LATENCY);
    `relative` is how it was given where that was a fraction of the teacher."""

    kind: CostKind
    value: float
    relative: RelativeBudget | None = None

    @property
    def absolute(self) -> str:
        """The value in its unit: `5GFLOPs`, `40ms`."""
        if self.kind is CostKind.LATENCY:
            return f"{self.value * 1e3:g}ms"
        for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
            if self.value >= scale:
                return f"{self.value / scale:g}{prefix}FLOPs"
        return f"{self.value:g}FLOPs"

    @property
    def given(self) -> str:
        """The budget as the user gave it, normalised: `50%`, `2x`, `5GFLOPs`."""
        return self.relative.text if self.relative is not None else self.absolute

    def __str__(self) -> str:
        if self.relative is None:
            return self.absolute
        return f"{self.relative} = {self.absolute}"


def parse_budget(text: str, *, relative_kind: CostKind = CostKind.MACS) -> Budget | RelativeBudget:
    """Parse a budget string; raise `NasError` with examples for anything else. A relative one
    (`50%`, `2x`) is a fraction of the teacher's cost of `relative_kind`, resolved later."""
    match = _PATTERN.match(text)
    if match is None:
        raise NasError(f"invalid budget '{text}': expected a cost such as {EXAMPLES}")
    number = float(match["num"])
    unit = (match["unit"] or "").lower()
    if unit in ("%", "x"):
        return _relative(text, number, unit, relative_kind)
    if unit in _TIME:
        budget = Budget(CostKind.LATENCY, number * _TIME[unit])
    else:
        prefix = unit[:1] if unit[:1] in "kmgt" and unit else ""
        budget = Budget(CostKind.MACS, number * _PREFIX[prefix])
    _check_positive(text, budget.value)
    return budget


def _relative(text: str, number: float, unit: str, kind: CostKind) -> RelativeBudget:
    """`number`% or `number`x of the teacher, refused where it saves nothing."""
    _check_positive(text, number)
    if unit == "%":
        if number >= 100:
            raise NasError(
                f"invalid budget '{text}': a budget of {number:g}% of the teacher is no saving: "
                "give less than 100%, e.g. 50%"
            )
        return RelativeBudget(kind, number / 100, f"{number:g}%")
    if number <= 1:
        why = (
            "a speed-up below 1 is not a saving" if number < 1 else "a speed-up of 1x is no saving"
        )
        raise NasError(
            f"invalid budget '{text}': {why}: give more than 1x, e.g. 2x (half the teacher's cost)"
        )
    return RelativeBudget(kind, 1 / number, f"{number:g}x")


def _check_positive(text: str, value: float) -> None:
    if not math.isfinite(value) or value <= 0:
        raise NasError(f"invalid budget '{text}': it must be positive, e.g. {EXAMPLES}")


def resolve_budget(
    budget: str | Budget | RelativeBudget,
    *,
    relative_kind: CostKind = CostKind.MACS,
    teacher_macs: float | None = None,
    teacher_seconds: float | None = None,
) -> Budget:
    """An absolute budget: text is parsed (`parse_budget`), a relative budget becomes its
    fraction of the teacher's multiply-adds or measured seconds per frame (by its kind)."""
    if isinstance(budget, str):
        budget = parse_budget(budget, relative_kind=relative_kind)
    if isinstance(budget, Budget):
        return budget
    teacher = teacher_macs if budget.kind is CostKind.MACS else teacher_seconds
    if teacher is None:  # a caller's mistake, not the user's
        raise ValueError(f"a budget of {budget} needs the teacher's {budget.kind.value}")
    return budget.resolve(teacher)


def recorded_budget(text: str, value: float, kind: CostKind) -> Budget:
    """A resolved budget back from what a spec records of it: the text as given, the value."""
    given = parse_budget(text, relative_kind=kind)
    return Budget(kind, value, relative=given if isinstance(given, RelativeBudget) else None)
