"""Export: most probable candidate per layer, repaired until the spec is at or under budget."""

import itertools
import random

import pytest

from nas.cost.amortised import amortised
from nas.searching.export import LayerChoice, Limit, delta_frame_cost, export_choices


def _choices(rng: random.Random, n_layers: int) -> list[LayerChoice]:
    result = []
    for i in range(n_layers):
        costs = sorted(rng.sample(range(1, 1000), rng.randint(2, 5)))
        costs[0] = 0 if rng.random() < 0.5 else costs[0]
        log_probs = tuple(rng.uniform(-5, 0) for _ in costs)
        names = tuple(f"c{j}" for j in range(len(costs)))
        result.append(LayerChoice(f"layer{i}", names, tuple(costs), log_probs))
    return result


def _cost(choices, picks, key, other, k):
    index = {c.path: c.names.index(picks[c.path]) for c in choices}
    return amortised(key, delta_frame_cost(choices, index, other), k)


def test_keeps_most_probable_when_within_budget():
    rng = random.Random(0)
    choices = _choices(rng, 6)
    picks = export_choices(
        choices, keyframe_cost=10_000, other_cost=0, interval=3, budget=1e9, fill=False
    )
    for c in choices:
        assert picks[c.path] == c.names[max(range(len(c.names)), key=lambda i, c=c: c.log_probs[i])]


@pytest.mark.parametrize("seed", range(20))
def test_never_over_budget_and_not_wasteful(seed):
    rng = random.Random(seed)
    choices = _choices(rng, rng.randint(1, 6))
    key, other, k = 5000, rng.randint(0, 50), rng.choice([2, 3, 6])
    floor = amortised(key, other + sum(min(c.cost) for c in choices), k)
    ceiling = amortised(key, other + sum(max(c.cost) for c in choices), k)
    budget = rng.uniform(floor, ceiling)
    picks = export_choices(choices, keyframe_cost=key, other_cost=other, interval=k, budget=budget)
    assert _cost(choices, picks, key, other, k) <= budget
    # Not wasteful: no single layer can be upgraded one step and still fit.
    index = {c.path: c.names.index(picks[c.path]) for c in choices}
    spent = delta_frame_cost(choices, index, other)
    for c in choices:
        i = index[c.path]
        dearer = [c.cost[j] for j in range(len(c.names)) if c.cost[j] > c.cost[i]]
        if dearer:
            assert amortised(key, spent + min(dearer) - c.cost[i], k) > budget
    # Without filling, repair only ever downgrades from the most probable candidate.
    plain = export_choices(
        choices, keyframe_cost=key, other_cost=other, interval=k, budget=budget, fill=False
    )
    for c in choices:
        top = max(range(len(c.names)), key=lambda i, c=c: (c.log_probs[i], -i))
        assert c.cost[c.names.index(plain[c.path])] <= c.cost[top]


def test_downgrades_the_layer_that_loses_least_per_mac():
    sure = LayerChoice("sure", ("cheap", "full"), (0, 100), (-10.0, 0.0))
    unsure = LayerChoice("unsure", ("cheap", "full"), (0, 100), (-0.1, 0.0))
    picks = export_choices(
        [sure, unsure], keyframe_cost=0, other_cost=0, interval=2, budget=50
    )  # amortised = delta / 2; both full = 100 > 50, one downgrade fits
    assert picks == {"sure": "full", "unsure": "cheap"}


def test_fills_unused_budget_where_it_loses_least():
    a = LayerChoice("a", ("zero", "mid", "full"), (0, 40, 100), (0.0, -1.0, -3.0))
    b = LayerChoice("b", ("zero", "mid", "full"), (0, 40, 100), (0.0, -0.5, -9.0))
    # Most probable: both zero (cost 0). Budget 70 (delta, interval 2 -> amortised 35 with key 0)
    picks = export_choices([a, b], keyframe_cost=0, other_cost=0, interval=2, budget=35)
    assert picks == {"a": "zero", "b": "mid"}  # b's upgrade loses less per unit; a's no longer fits
    picks = export_choices([a, b], keyframe_cost=0, other_cost=0, interval=2, budget=40)
    assert picks == {"a": "mid", "b": "mid"}


def test_deterministic():
    rng = random.Random(3)
    choices = _choices(rng, 8)
    args = dict(keyframe_cost=3000, other_cost=10, interval=3, budget=1500)
    assert export_choices(choices, **args) == export_choices(choices, **args)


def test_exhaustive_small_case_is_feasible_when_possible():
    rng = random.Random(11)
    choices = _choices(rng, 3)
    for budget in range(0, 4000, 97):
        feasible = any(
            amortised(2000, sum(m), 3) <= budget
            for m in itertools.product(*[c.cost for c in choices])
        )
        picks = export_choices(choices, keyframe_cost=2000, other_cost=0, interval=3, budget=budget)
        assert (_cost(choices, picks, 2000, 0, 3) <= budget) == feasible


def _two_costs():
    """Layer a's `down2` saves multiply-adds but costs time; layer b's candidates agree."""
    a = LayerChoice(
        "a", ("zero", "down2", "lowrank", "full"), (0, 25, 40, 100), (-9, -0.1, -1.0, -3)
    )
    b = LayerChoice("b", ("lowrank", "full"), (50, 100), (-2.0, -0.2))
    seconds = {
        "a": {"zero": 1.0, "down2": 12.0, "lowrank": 5.0, "full": 10.0},
        "b": {"lowrank": 6.0, "full": 10.0},
    }
    return [a, b], seconds


def _seconds(picks, seconds):
    return sum(seconds[path][name] for path, name in picks.items())


def test_a_latency_limit_is_met_beside_the_budget():
    choices, seconds = _two_costs()
    args = {"keyframe_cost": 0, "other_cost": 0, "interval": 2, "budget": 65}
    alone = export_choices(choices, **args)
    assert alone == {"a": "down2", "b": "full"}  # within 65 FLOPs amortised, 22 s per frame
    limit = Limit(seconds, keyframe=0.0, other=0.0, limit=9.0)  # at most 18 s per delta frame
    both = export_choices(choices, **args, limits=[limit])
    index = {c.path: c.names.index(both[c.path]) for c in choices}
    assert amortised(0, delta_frame_cost(choices, index, 0), 2) <= 65
    assert amortised(0, _seconds(both, seconds), 2) <= 9.0
    # The repair swapped the slow down2 for a step that saves time, not multiply-adds first.
    assert both["a"] in ("lowrank", "zero") and both != alone


def test_a_limit_that_is_met_changes_nothing():
    choices, seconds = _two_costs()
    args = {"keyframe_cost": 0, "other_cost": 0, "interval": 2, "budget": 70}
    roomy = Limit(seconds, keyframe=0.0, other=0.0, limit=100.0)
    assert export_choices(choices, **args, limits=[roomy]) == export_choices(choices, **args)


def test_fill_with_a_limit_never_breaks_it():
    choices, seconds = _two_costs()
    args = {"keyframe_cost": 0, "other_cost": 0, "interval": 2, "budget": 1000}
    tight = Limit(seconds, keyframe=0.0, other=0.0, limit=6.0)  # 12 s per delta frame
    picks = export_choices(choices, **args, limits=[tight])
    assert amortised(0, _seconds(picks, seconds), 2) <= 6.0
    # The spare FLOPs went where time allows: no dearer candidate of any layer still fits.
    for c in choices:
        for name in c.names:
            trial = picks | {c.path: name}
            if c.cost[c.names.index(name)] > c.cost[c.names.index(picks[c.path])]:
                assert amortised(0, _seconds(trial, seconds), 2) > 6.0
