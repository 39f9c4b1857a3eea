"""From architecture logits to a spec that is never over budget, and does not waste it.

1. Take the most probable candidate per layer.
2. Repair: while the amortised cost is over budget, downgrade the layer whose next cheaper
   candidate loses the least per unit of cost saved, where the loss of a step is the drop in
   log-probability the search assigned (a layer the search was sure about is downgraded last).
3. Fill: while some layer's next dearer candidate still fits the budget, upgrade the one that
   loses the least (gains the most) log-probability per unit of cost added. The constraint is
   an inequality: budget left unspent is accuracy left on the table.

Candidates of a layer are compared by cost; ties keep the search's order.

Extra `limits` (a latency limit beside a FLOPs budget) are further costs the choice must meet.
Their candidates are not ordered like the budget's (a `down2_` block saves multiply-adds but
may cost time), so with limits a step may go to any candidate of the layer: repair takes the
step that loses the least log-probability per unit saved of the violated costs (each relative
to its limit), never raising a violated cost nor breaking a met one; fill takes steps dearer
in the budget's cost that keep every cost within its limit, scored per unit of what they add.

Given the wiring between the layers, a choice is judged by what it runs (`nas.delta.liveness`): a
`zero` on a chain makes every layer behind it that sees no other change pass none on, so those
cost nothing and score as `zero`, and such layers are exported as `zero`. Without that, a spec
could pay for blocks whose input change is always exactly zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from nas.cost.amortised import amortised
from nas.delta.liveness import NO_CHANGE, idle_layers


@dataclass(frozen=True)
class LayerChoice:
    """What export needs of one searched layer: its candidates and the search's beliefs."""

    path: str
    names: tuple[str, ...]
    cost: tuple[float, ...]  # per frame (all calls), in the budget unit, same order as names
    log_probs: tuple[float, ...]


@dataclass(frozen=True)
class Limit:
    """A further cost limit: every layer's candidates' costs (path -> name -> cost), the key
    frame's and the fixed part's, and the limit, all per frame in one unit."""

    costs: dict[str, dict[str, float]]
    keyframe: float
    other: float
    limit: float


def delta_frame_cost(choices: list[LayerChoice], picks: dict[str, int], other_cost: float) -> float:
    return other_cost + sum(c.cost[picks[c.path]] for c in choices)


def _next(c: LayerChoice, i: int, *, dearer: bool) -> int | None:
    """The candidate just above (dearer) or below (cheaper) candidate i in cost."""
    if dearer:
        options = [j for j in range(len(c.names)) if c.cost[j] > c.cost[i]]
        return min(options, key=lambda j: c.cost[j]) if options else None
    options = [j for j in range(len(c.names)) if c.cost[j] < c.cost[i]]
    return max(options, key=lambda j: c.cost[j]) if options else None


@dataclass
class _Axis:
    """One cost the choice must meet: per layer (in `choices` order) the candidates' costs."""

    costs: list[tuple[float, ...]]
    keyframe: float
    other: float
    limit: float
    interval: int | None

    def fits(self, delta: float) -> bool:
        return amortised(self.keyframe, delta, self.interval) <= self.limit

    def scale(self) -> float:
        return abs(self.limit) or 1.0


def export_choices(
    choices: list[LayerChoice],
    *,
    keyframe_cost: float,
    other_cost: float,
    interval: int | None,
    budget: float,
    fill: bool = True,
    limits: Sequence[Limit] = (),
    sources: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, str]:
    """The chosen candidate per layer path (see the module docstring for the three steps).

    `sources`: the wiring between the layers (`nas.delta.liveness.layer_sources`). With it, a choice
    is judged by what it runs: a layer that passes no change to the output (behind a `zero`, or
    feeding only `zero`s) is a `zero` itself, costs what `zero` costs and scores the
    log-probability of `zero`; the export returns it as `zero`.
    """
    axes = [_Axis([c.cost for c in choices], keyframe_cost, other_cost, budget, interval)]
    axes += [
        _Axis(
            [tuple(limit.costs[c.path][name] for name in c.names) for c in choices],
            limit.keyframe,
            limit.other,
            limit.limit,
            interval,
        )
        for limit in limits
    ]
    picks = [max(range(len(c.names)), key=lambda i, c=c: (c.log_probs[i], -i)) for c in choices]
    zero = [c.names.index(NO_CHANGE) if NO_CHANGE in c.names else None for c in choices]

    def effective(picks: list[int]) -> list[int]:
        """What each layer runs: `zero` where it passes no change to the output."""
        if sources is None:
            return picks
        blocking = {c.path for c, i, z in zip(choices, picks, zero, strict=True) if i == z}
        idle = idle_layers(sources, blocking)
        return [
            z if z is not None and c.path in idle else i
            for c, i, z in zip(choices, picks, zero, strict=True)
        ]

    def evaluate(runs: list[int]) -> tuple[list[float], float]:
        totals = [axis.other + sum(axis.costs[n][i] for n, i in enumerate(runs)) for axis in axes]
        return totals, sum(c.log_probs[i] for c, i in zip(choices, runs, strict=True))

    def settle(picks: list[int], fill: bool) -> tuple[bool, float, list[int], list[int]]:
        """Repair (then fill) from `picks`: whether it fits, its score, the picks and what each
        layer runs."""
        picks = picks.copy()
        runs = effective(picks)
        totals, score = evaluate(runs)

        def candidates(*, dearer: bool):
            """Every step (layer n to candidate j) with its totals and score after it."""
            for n, c in enumerate(choices):
                i = picks[n]
                if not limits:  # one cost: a step goes to the neighbour in cost
                    j = _next(c, i, dearer=dearer)
                    options = [] if j is None else [j]
                elif dearer:
                    options = [j for j, cost in enumerate(c.cost) if cost > c.cost[i]]
                else:
                    options = [j for j in range(len(c.names)) if j != i]
                for j in options:
                    if zero[n] is not None and sources is not None and zero[n] in (i, j):
                        after = picks.copy()  # a zero opens or closes paths: judge the whole
                        after[n] = j
                        yield n, j, *evaluate(effective(after))
                    elif runs[n] != i:
                        continue  # an idle layer: any block it runs changes nothing
                    else:
                        yield (
                            n,
                            j,
                            [
                                t + axis.costs[n][j] - axis.costs[n][i]
                                for t, axis in zip(totals, axes, strict=True)
                            ],
                            score + c.log_probs[j] - c.log_probs[i],
                        )

        while True:  # repair
            violated = [k for k, axis in enumerate(axes) if not axis.fits(totals[k])]
            if not violated:
                break
            best, best_score = None, math.inf
            for n, j, after, after_score in candidates(dearer=False):
                change = [a - t for a, t in zip(after, totals, strict=True)]
                if any(change[k] > 0 for k in violated) or any(
                    not axis.fits(after[k]) for k, axis in enumerate(axes) if k not in violated
                ):
                    continue
                saved = -sum(change[k] / axes[k].scale() for k in violated)
                if saved <= 0:
                    continue
                loss = (score - after_score) / saved
                if loss < best_score:
                    best, best_score = (n, j, after, after_score), loss
            if best is None:
                break  # nothing cheaper fits: the caller refuses such budgets up front
            n, j, totals, score = best
            picks[n] = j
            runs = effective(picks)

        while fill:
            best, best_score = None, -math.inf
            for n, j, after, after_score in candidates(dearer=True):
                # Every step adds to the budget's cost (so filling ends) and fits every limit.
                if after[0] <= totals[0] or not all(
                    axis.fits(after[k]) for k, axis in enumerate(axes)
                ):
                    continue
                added = sum(
                    max(0.0, (a - t)) / axis.scale()
                    for a, t, axis in zip(after, totals, axes, strict=True)
                )
                gain = (after_score - score) / added
                if gain > best_score:
                    best, best_score = (n, j, after, after_score), gain
            if best is None:
                break
            n, j, totals, score = best
            picks[n] = j
            runs = effective(picks)
        fits = all(axis.fits(t) for axis, t in zip(axes, totals, strict=True))
        return fits, score, picks, runs

    # A greedy step cannot open a path that two `zero`s close (backbone.13's depthwise conv and
    # projection, say), so with the wiring the export also starts from no `zero` at all and
    # fills the better of the two repaired starts (one that fits; the higher score; the first).
    starts = [picks]
    if sources is not None:
        starts.append(
            [
                max(
                    (j for j in range(len(c.names)) if j != z or len(c.names) == 1),
                    key=lambda j, c=c: (c.log_probs[j], -j),
                )
                for c, z in zip(choices, zero, strict=True)
            ]
        )
    repaired = max((settle(start, fill=False) for start in starts), key=lambda found: found[:2])
    _, _, _, runs = settle(repaired[2], fill)
    return {c.path: c.names[i] for c, i in zip(choices, runs, strict=True)}
