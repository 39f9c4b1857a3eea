"""From architecture logits to a spec that is never over budget.

Take the most probable candidate per layer; then, while the amortised cost is over budget,
downgrade the layer whose next cheaper candidate loses the least per unit of cost saved, where
the loss of a step is the drop in log-probability the search assigned (a layer the search was
sure about is downgraded last). Candidates of a layer are ordered by cost, cheapest first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nas.supernet import amortised


@dataclass(frozen=True)
class LayerChoice:
    """What export needs of one searched layer: its candidates (cheapest first) and beliefs."""

    path: str
    names: tuple[str, ...]
    cost: tuple[float, ...]  # per frame (all calls), in the budget unit, same order as names
    log_probs: tuple[float, ...]


def delta_frame_cost(choices: list[LayerChoice], picks: dict[str, int], other_cost: float) -> float:
    return other_cost + sum(c.cost[picks[c.path]] for c in choices)


def export_choices(
    choices: list[LayerChoice],
    *,
    keyframe_cost: float,
    other_cost: float,
    interval: int,
    budget: float,
) -> dict[str, str]:
    """The chosen candidate per layer path: most probable, then repaired to fit the budget."""
    picks = {
        c.path: max(range(len(c.names)), key=lambda i, c=c: (c.log_probs[i], -i)) for c in choices
    }

    def cost() -> float:
        return amortised(keyframe_cost, delta_frame_cost(choices, picks, other_cost), interval)

    while cost() > budget:
        best, best_score = None, math.inf
        for c in choices:
            i = picks[c.path]
            cheaper = [j for j in range(len(c.names)) if c.cost[j] < c.cost[i]]
            if not cheaper:
                continue
            j = max(cheaper, key=lambda j, c=c: c.cost[j])  # the next cheaper candidate
            saved = c.cost[i] - c.cost[j]
            score = (c.log_probs[i] - c.log_probs[j]) / saved
            if score < best_score:
                best, best_score = (c.path, j), score
        if best is None:
            break  # every layer at its cheapest: the caller refuses such budgets up front
        picks[best[0]] = best[1]
    return {c.path: c.names[picks[c.path]] for c in choices}
