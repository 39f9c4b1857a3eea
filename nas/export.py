"""From architecture logits to a spec that is never over budget, and does not waste it.

1. Take the most probable candidate per layer.
2. Repair: while the amortised cost is over budget, downgrade the layer whose next cheaper
   candidate loses the least per unit of cost saved, where the loss of a step is the drop in
   log-probability the search assigned (a layer the search was sure about is downgraded last).
3. Fill: while some layer's next dearer candidate still fits the budget, upgrade the one that
   loses the least (gains the most) log-probability per unit of cost added. The constraint is
   an inequality: budget left unspent is accuracy left on the table.

Candidates of a layer are compared by cost; ties keep the search's order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nas.supernet import amortised


@dataclass(frozen=True)
class LayerChoice:
    """What export needs of one searched layer: its candidates and the search's beliefs."""

    path: str
    names: tuple[str, ...]
    cost: tuple[float, ...]  # per frame (all calls), in the budget unit, same order as names
    log_probs: tuple[float, ...]


def delta_frame_cost(choices: list[LayerChoice], picks: dict[str, int], other_cost: float) -> float:
    return other_cost + sum(c.cost[picks[c.path]] for c in choices)


def _next(c: LayerChoice, i: int, *, dearer: bool) -> int | None:
    """The candidate just above (dearer) or below (cheaper) candidate i in cost."""
    if dearer:
        options = [j for j in range(len(c.names)) if c.cost[j] > c.cost[i]]
        return min(options, key=lambda j: c.cost[j]) if options else None
    options = [j for j in range(len(c.names)) if c.cost[j] < c.cost[i]]
    return max(options, key=lambda j: c.cost[j]) if options else None


def export_choices(
    choices: list[LayerChoice],
    *,
    keyframe_cost: float,
    other_cost: float,
    interval: int,
    budget: float,
    fill: bool = True,
) -> dict[str, str]:
    """The chosen candidate per layer path (see the module docstring for the three steps)."""
    picks = {
        c.path: max(range(len(c.names)), key=lambda i, c=c: (c.log_probs[i], -i)) for c in choices
    }
    delta = delta_frame_cost(choices, picks, other_cost)

    def fits(delta_cost: float) -> bool:
        return amortised(keyframe_cost, delta_cost, interval) <= budget

    while not fits(delta):
        best, best_score = None, math.inf
        for c in choices:
            i = picks[c.path]
            j = _next(c, i, dearer=False)
            if j is None:
                continue
            score = (c.log_probs[i] - c.log_probs[j]) / (c.cost[i] - c.cost[j])
            if score < best_score:
                best, best_score = (c, j), score
        if best is None:
            break  # every layer at its cheapest: the caller refuses such budgets up front
        c, j = best
        delta += c.cost[j] - c.cost[picks[c.path]]
        picks[c.path] = j

    while fill:
        best, best_score = None, -math.inf
        for c in choices:
            i = picks[c.path]
            j = _next(c, i, dearer=True)
            if j is None or not fits(delta + c.cost[j] - c.cost[i]):
                continue
            score = (c.log_probs[j] - c.log_probs[i]) / (c.cost[j] - c.cost[i])
            if score > best_score:
                best, best_score = (c, j), score
        if best is None:
            break
        c, j = best
        delta += c.cost[j] - c.cost[picks[c.path]]
        picks[c.path] = j
    return {c.path: c.names[picks[c.path]] for c in choices}
