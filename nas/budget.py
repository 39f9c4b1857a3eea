"""Cost budgets: a multiply-add count or a latency, parsed from what a user types.

Grammar (case-insensitive, spaces allowed between number and unit)::

    5GFLOPs   5 GFLOPs   5GMACs   500MFLOPs   1.2TFLOPs   2.5e9      -> multiply-adds
    40ms      0.04s      800us                                        -> latency

"FLOPs" means multiply-adds, as torchvision, fvcore and the Delta Distillation paper count
them; "MACs" is a synonym. A bare number is a multiply-add count.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum

from nas.errors import NasError


class CostKind(str, Enum):
    MACS = "macs"
    LATENCY = "latency"


_PREFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
_PATTERN = re.compile(
    r"^\s*(?P<num>[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(?P<unit>(?:[kmgt]?(?:flops?|macs?))|s|ms|us)?\s*$",
    re.IGNORECASE,
)
EXAMPLES = "5GFLOPs, 5 GFLOPs, 5GMACs, 500MFLOPs, 2.5e9 or 40ms"


@dataclass(frozen=True)
class Budget:
    """A cost limit: `value` is multiply-adds (kind MACS) or seconds (kind LATENCY)."""

    kind: CostKind
    value: float

    def __str__(self) -> str:
        if self.kind is CostKind.LATENCY:
            return f"{self.value * 1e3:g}ms"
        for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
            if self.value >= scale:
                return f"{self.value / scale:g}{prefix}FLOPs"
        return f"{self.value:g}FLOPs"


def parse_budget(text: str) -> Budget:
    """Parse a budget string; raise `NasError` with examples for anything else."""
    match = _PATTERN.match(text)
    if match is None:
        raise NasError(f"invalid budget '{text}': expected a cost such as {EXAMPLES}")
    number = float(match["num"])
    unit = (match["unit"] or "").lower()
    if unit in _TIME:
        budget = Budget(CostKind.LATENCY, number * _TIME[unit])
    else:
        prefix = unit[:1] if unit[:1] in "kmgt" and unit else ""
        budget = Budget(CostKind.MACS, number * _PREFIX[prefix])
    if not math.isfinite(budget.value) or budget.value <= 0:
        raise NasError(f"invalid budget '{text}': it must be positive, e.g. {EXAMPLES}")
    return budget
