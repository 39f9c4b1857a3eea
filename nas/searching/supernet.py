"""The inner search: a budget-constrained, single-path differentiable search in delta mode.

Each step draws two-frame clips (a key frame k and a frame t with t - k in 1..K-1), runs the
teacher on both (no grad; the key frame fills the caches, frame t gives every layer's target),
then the delta model on frame t with one sampled candidate per layer, and descends on

    layer loss + output loss (+ task loss with labels) + expected layer error + budget term

The first three train the sampled blocks (the layer loss from the teacher's own inputs, see
`nas.student.losses`). The architecture logits learn from the predicted output error,

    sum_l s_l * sum_i p_li * e_li  /  sum_l s_l

where e_li is a running estimate of candidate i's relative error at layer l (every candidate
measured once on the first frames, then updated whenever it is sampled) and s_l the layer's
output sensitivity: the output's error, relative to the teacher's change since the key frame,
when layer l alone predicts no change (e = 1) and every other layer runs exactly
(`measure_sensitivity`, once, on the first frames). To first order an error at layer l reaches
the output scaled by s_l, so sum_l s_l e_l predicts the output's relative error (1 - R); a
plain mean of layer errors cannot see that the stem's error is carried through everything
after it while a side branch's barely reaches the output. Measured errors, not a
straight-through gradient, because a gradient alone cannot tell `zero` from an exact `full`
(neither moves when its output is scaled). The normalisation by sum_l s_l keeps the term's
scale that of one layer's error, whatever the depth, so the budget's multiplier balances it
in the same number of steps for every teacher.

The budget is a constraint: with `penalty="constraint"` the budget term is lambda * (E[C] / B - 1),
where E[C] is the expected amortised cost per frame, and the multiplier lambda grows by dual
ascent while E[C] is over the budget B and relaxes (down to 0) while under it. `penalty="fixed"`
is the paper's fixed weight instead: beta * E[C] / B (beta per budget's worth of cost).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from nas.core.errors import NasError
from nas.cost.amortised import Constraint, CostTable, amortised, check_budget
from nas.cost.budget import Budget
from nas.delta.liveness import NO_CHANGE, Wiring, read_wiring
from nas.delta.model import DeltaModel, Phase
from nas.graph.layers import ConvLayer
from nas.searching.export import LayerChoice, Limit, export_choices
from nas.searching.mixed import MixedDelta
from nas.spec import SearchConfig
from nas.student.losses import (
    LossWeights,
    batches_r,
    change_energy,
    relative_error,
    student_losses,
)
from nas.teachers.base import Teacher


@dataclass
class Supernet:
    """The searchable delta model with what the search and export need to know of it."""

    model: DeltaModel
    layers: list[ConvLayer]
    mixed: dict[str, MixedDelta]
    table: CostTable
    # The wiring of the network (`nas.delta.liveness`), so that the export sees which blocks a
    # `zero` leaves with nothing to do and a timed delta frame skips what they leave unchanged
    # (`nas.delta.replay`); None where no layer can pass no change (per-frame modes).
    wiring: Wiring | None = None

    @property
    def sources(self) -> dict[str, tuple[str, ...]] | None:
        return None if self.wiring is None else self.wiring.layers

    def expected_delta(self, table: CostTable | None = None) -> torch.Tensor:
        """Expected delta-frame cost under the logits, in `table`'s unit (default: the search's
        own table)."""
        if table is None:
            return sum(m.expected_cost() for m in self.mixed.values()) + self.table.other
        total = torch.zeros((), dtype=torch.float64)
        for path, m in self.mixed.items():
            costs = torch.tensor([table.candidates[path][name] for name in m.names])
            total = total + (m.probs().double() * costs.to(m.logits.device, torch.float64)).sum()
        return total + table.other

    def export(
        self,
        budget: Budget,
        interval: int | None,
        limits: Sequence[Constraint] = (),
        *,
        table: CostTable | None = None,
    ) -> dict[str, str]:
        """The exported choice: within `budget` and every limit. `table`: the search's own
        table with a corrected key frame and fixed part (its candidates' costs are the logits')."""
        table = table or self.table
        return export_choices(
            self.choices(),
            keyframe_cost=table.keyframe,
            other_cost=table.other,
            interval=interval,
            budget=budget.value,
            limits=[
                Limit(table.candidates, table.keyframe, table.other, limit.value)
                for table, limit in limits
            ],
            sources=self.sources,
        )

    def choices(self) -> list[LayerChoice]:
        result = []
        for path, m in self.mixed.items():
            log_probs = torch.log_softmax(m.logits.detach().double(), 0).tolist()
            result.append(
                LayerChoice(path, tuple(m.names), tuple(m.costs.tolist()), tuple(log_probs))
            )
        return result

    def dearest(self) -> dict[str, str]:
        """Every layer's dearest candidate (`full`: the teacher's conv, exact)."""
        return {path: m.names[int(torch.argmax(m.costs))] for path, m in self.mixed.items()}

    def fix(self, picks: dict[str, str] | None) -> None:
        """Run every layer's named candidate (None: sample / most probable again)."""
        for path, m in self.mixed.items():
            m.fixed = None if picks is None else m.names.index(picks[path])

    def probabilities(self) -> dict[str, dict[str, float]]:
        return {
            path: dict(zip(m.names, m.probs().tolist(), strict=True))
            for path, m in self.mixed.items()
        }


def build_supernet(
    teacher: Teacher,
    layers: list[ConvLayer],
    table: CostTable,
    build_block: Callable[[str, ConvLayer, torch.Tensor], nn.Module],
    *,
    per_frame: bool = False,
    student_size: tuple[int, int] | None = None,
    size: tuple[int, int] | None = None,
) -> Supernet:
    """Every searched conv becomes a mixed layer over the table's candidates (cheapest first);
    `per_frame` and `student_size` as in `DeltaModel.build`. `size`: the frames' size, to read
    the wiring between the layers where some candidate passes no change (`nas.delta.liveness`)."""
    mixed: dict[str, MixedDelta] = {}

    def make_block(layer: ConvLayer, conv: nn.Conv2d) -> nn.Module:
        costs = table.candidates[layer.path]
        names = sorted(costs, key=lambda name: (costs[name], name))
        blocks = [build_block(name, layer, conv.weight.detach()) for name in names]
        mixed[layer.path] = MixedDelta(names, blocks, [costs[name] for name in names])
        return mixed[layer.path]

    model = DeltaModel.build(
        teacher.module,
        layers,
        make_block,
        output_key=teacher.output_key,
        per_frame=per_frame,
        student_size=student_size,
    )
    wiring = None
    if size is not None and any(NO_CHANGE in m.names for m in mixed.values()):
        wiring = read_wiring(model, student_size or size)
    return Supernet(model, layers, mixed, table, wiring)


@dataclass
class StepLog:
    step: int
    loss: float
    layer_loss: float
    output_loss: float
    task_loss: float
    expected_cost: float  # expected amortised cost per frame, in the budget's unit
    budget: float
    tau: float
    multiplier: float
    tc_loss: float = 0.0  # temporal consistency (per-frame modes)


@dataclass
class SearchOutcome:
    picks: dict[str, str]
    log: list[StepLog] = field(default_factory=list)


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]  # key frames, frames t, labels t


def _trainable(net: Supernet) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Block weights and architecture logits; the teacher's own parameters stay frozen."""
    arch = [m.logits for m in net.mixed.values()]
    weights = [p for m in net.mixed.values() for p in m.blocks.parameters()]
    for p in net.model.parameters():
        p.requires_grad_(False)
    for p in (*arch, *weights):
        p.requires_grad_(True)
    return weights, arch


def candidate_errors(net: Supernet) -> list[list[float]]:
    """Per layer, every candidate's layer error on the frames the model holds now
    (`nas.student.losses.relative_error`)."""
    found = []
    for layer, m in zip(net.layers, net.mixed.values(), strict=True):
        conv = net.model.net.get_submodule(layer.path)
        found.append([float(relative_error(block, conv)) for block in m.blocks])
    return found


def measure_all_candidates(net: Supernet) -> None:
    """Every candidate's layer error on the current frames (once, to seed the estimates)."""
    for m, errors in zip(net.mixed.values(), candidate_errors(net), strict=True):
        for index, error in enumerate(errors):
            m.record_error(index, error)


def measure_sensitivity(net: Supernet, batch: Batch) -> dict[str, float]:
    """Each layer's output sensitivity on `batch`, stored in its mixed layer and returned.

    Every layer runs its dearest candidate (`full`: the teacher's conv, exact); then, one layer
    at a time, that layer predicts no change (its key output; in the per-frame modes its bias)
    and the output's squared error against the reference, over the energy of the teacher's
    output change since the key frame (`nas.student.losses.change_energy`), is its sensitivity: 1
    where the layer's change is all the output's, 0 where it never reaches it. One forward pass
    of a delta frame per layer, without gradients, on the batch's first pair (the property is
    the network's; one pair keeps it cheap on large teachers). A layer with one candidate has no
    choice to weigh and is not measured (it keeps its weight)."""
    x_key, x_t = batch[0][:1], batch[1][:1]
    model = net.model
    sampled = [m.last_choice for m in net.mixed.values()]  # this step's draw, kept
    net.fix(net.dearest())

    def no_change(conv, args, out):
        if conv.phase is not Phase.DELTA:
            return None
        return torch.zeros_like(out).add_(conv.z_key)

    found = {}
    try:
        with torch.no_grad():
            y_teacher = model.teacher_frame(x_t)
            y_key = torch.zeros_like(y_teacher) if model.per_frame else model.key_frame(x_key)
            energy = change_energy(y_teacher, y_key)
            reference = model.delta_frame(x_t).clone()
            for (layer, conv), m in zip(model.delta_convs(), net.mixed.values(), strict=True):
                if len(m.names) == 1:
                    continue
                handle = conv.register_forward_hook(no_change)
                try:
                    y = model.delta_frame(x_t)
                finally:
                    handle.remove()
                found[layer.path] = float((y - reference).pow(2).mean() / energy)
                m.sensitivity.fill_(found[layer.path])
    finally:
        net.fix(None)
        for m, choice in zip(net.mixed.values(), sampled, strict=True):
            m.last_choice = choice
    return found


def measure_errors(net: Supernet, batches: Sequence[Batch]) -> torch.Tensor:
    """Every candidate's layer error (`nas.student.losses.relative_error`), averaged over `batches`:
    layers x candidates (in each mixed layer's order, padded with NaN). The student runs at
    its dearest meanwhile; the running estimates of the search are left as they were."""
    model = net.model
    widest = max(len(m.names) for m in net.mixed.values())
    total = torch.zeros(len(net.mixed), widest, dtype=torch.float64)
    net.fix(net.dearest())
    try:
        with torch.no_grad():
            for x_key, x_t, _ in batches:
                model.clear()
                model.key_frame(x_key)
                model.teacher_frame(x_t)
                model.delta_frame(x_t)
                for row, errors in enumerate(candidate_errors(net)):
                    total[row, : len(errors)] += torch.tensor(errors, dtype=total.dtype)
    finally:
        net.fix(None)
        model.clear()
    found = total / len(batches)
    for row, m in enumerate(net.mixed.values()):
        found[row, len(m.names) :] = float("nan")
    return found


def knapsack_picks(
    net: Supernet,
    errors: torch.Tensor,
    budget: Budget,
    interval: int | None,
    limits: Sequence[Constraint] = (),
) -> dict[str, str]:
    """The allocation that gives up the least predicted output error per unit of cost saved: the
    export stage (`nas.searching.export`) run on the scores -s_l * e_l(c) in place of the logits,
    with `errors` from `measure_errors` and each layer's measured sensitivity s_l (a plain sum where
    none reaches the output). A multiple-choice knapsack solved greedily from the exact student;
    like every export, never over budget. The logits are left as they were."""
    weights = torch.stack([m.sensitivity for m in net.mixed.values()]).clamp(min=0).double()
    if not bool(weights.sum() > 0):
        weights = torch.ones_like(weights)
    saved = [m.logits.detach().clone() for m in net.mixed.values()]
    try:
        with torch.no_grad():
            for row, (m, weight) in enumerate(zip(net.mixed.values(), weights, strict=True)):
                score = -weight * torch.nan_to_num(errors[row, : len(m.names)], nan=1.0)
                m.logits.copy_(score.to(m.logits.dtype))
        return net.export(budget, interval, limits)
    finally:
        with torch.no_grad():
            for m, logits in zip(net.mixed.values(), saved, strict=True):
                m.logits.copy_(logits)


def output_r(net: Supernet, picks: dict[str, str], batches: Sequence[Batch]) -> float:
    """R of the delta model with `picks` on `batches` (`nas.student.losses.batches_r`)."""
    net.fix(picks)
    try:
        return batches_r(net.model, batches)
    finally:
        net.fix(None)


def predicted_error(net: Supernet) -> torch.Tensor:
    """The sensitivity-weighted mean of the layers' expected errors (module docstring),
    differentiable in the logits; a plain mean where no layer's change reaches the output."""
    errors = torch.stack([m.expected_error() for m in net.mixed.values()])
    weights = torch.stack([m.sensitivity for m in net.mixed.values()]).to(errors)
    total = weights.sum()
    if not bool(total > 0):
        return errors.mean()
    return (weights * errors).sum() / total


def run_search(
    net: Supernet,
    teacher: Teacher,
    next_batch: Callable[[torch.Generator], Batch],
    *,
    budget: Budget,
    interval: int | None,
    config: SearchConfig,
    on_step: Callable[[StepLog], None] | None = None,
    limits: Sequence[Constraint] = (),
) -> SearchOutcome:
    """Search the architecture; returns the exported (never over budget) choice and the log.

    `limits`: further costs to meet (a latency limit beside a FLOPs budget), each with its own
    multiplier in the constraint penalty and met by the export as the budget is.
    """
    check_budget(net.table, budget, interval)
    for table, limit in limits:
        check_budget(table, limit, interval)
    generator = torch.Generator().manual_seed(config.seed)
    weights, arch = _trainable(net)
    optimisers = [torch.optim.Adam(arch, lr=config.lr_arch)]
    if weights:
        optimisers.append(torch.optim.Adam(weights, lr=config.lr_weights))
    for m in net.mixed.values():
        m.generator = generator
    net.model.train()
    multiplier = 0.0
    limit_multipliers = [0.0] * len(limits)
    outcome = SearchOutcome(picks={})
    for step in range(config.steps):
        progress = step / max(1, config.steps - 1)
        tau = config.tau_start * (config.tau_end / config.tau_start) ** progress
        for m in net.mixed.values():
            m.tau = tau
            m.sample()  # one candidate per layer for this step
        batch = next_batch(generator)
        distill, parts = student_losses(
            net.model,
            batch,
            teacher,
            LossWeights.of(config),
            tc_weight=config.tc_weight,
            blockwise=progress < config.blockwise_fraction,
        )
        if step == 0:
            measure_all_candidates(net)
        for m, error in zip(net.mixed.values(), parts["layer_errors"].detach(), strict=True):
            m.record_error(m.last_choice, float(error))
        if step == 0 and config.sensitivity:
            measure_sensitivity(net, batch)  # new tensors only: this step's graph stays valid
        arch = predicted_error(net)
        expected = amortised(net.table.keyframe, net.expected_delta(), interval)
        ratio = (expected / budget.value).float()
        fixed = config.penalty == "fixed"
        budget_term = config.beta * ratio if fixed else multiplier * (ratio - 1)
        limit_ratios = [
            (amortised(table.keyframe, net.expected_delta(table), interval) / limit.value).float()
            for table, limit in limits
        ]
        for weight, limit_ratio in zip(limit_multipliers, limit_ratios, strict=True):
            budget_term = budget_term + weight * (limit_ratio - 1)
        loss = distill + config.layer_weight * arch + budget_term
        if not torch.isfinite(loss):
            raise NasError(
                f"the search diverged at step {step} (loss {float(loss.detach())}): lower the "
                "learning rates or check the teacher's weights; nothing was exported"
            )
        for opt in optimisers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in optimisers:
            opt.step()
        if config.penalty != "fixed":
            multiplier = max(0.0, multiplier + config.dual_lr * (float(ratio.detach()) - 1))
        limit_multipliers = [  # limits are constraints whatever the budget's penalty
            max(0.0, weight + config.dual_lr * (float(limit_ratio.detach()) - 1))
            for weight, limit_ratio in zip(limit_multipliers, limit_ratios, strict=True)
        ]
        row = StepLog(
            step=step,
            loss=float(loss.detach()),
            layer_loss=float(parts["layer_loss"].detach()),
            output_loss=float(parts["output_loss"].detach()),
            task_loss=float(parts["task_loss"].detach()),
            expected_cost=float(expected.detach()),
            budget=budget.value,
            tau=tau,
            multiplier=multiplier,
            tc_loss=float(parts.get("tc_loss", torch.zeros(())).detach()),
        )
        outcome.log.append(row)
        if on_step is not None:
            on_step(row)
    net.model.clear()
    net.model.eval()
    outcome.picks = net.export(budget, interval, limits)
    return outcome
