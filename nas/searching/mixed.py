"""One searched layer's candidate blocks with their architecture logits: the search's only state
inside a delta model (`nas.delta.model.DeltaConv.block` is a `MixedDelta` while searching, the
chosen block once built from a spec)."""

from __future__ import annotations

import torch
from torch import nn


class MixedDelta(nn.Module):
    """Candidate blocks of one layer with architecture logits (single-path sampling).

    `costs` are in the budget's unit (multiply-adds, or seconds for a latency budget).

    In training mode `sample()` draws one candidate i from Gumbel-softmax(logits / tau) (the
    search calls it once per step), and every forward until the next sample returns
    `w_i * block_i(x)`, where `w` is the hard one-hot sample carrying the soft sample's gradient
    (straight-through); in eval mode the most probable candidate runs.
    `all_paths = True` runs every candidate and mixes them by softmax(logits) instead (DARTS),
    kept only to measure what single-path sampling saves.
    """

    def __init__(self, names: list[str], blocks: list[nn.Module], costs: list[float]) -> None:
        super().__init__()
        if not (len(names) == len(blocks) == len(costs) > 0):
            raise ValueError("a mixed layer needs as many names, blocks and costs, at least one")
        self.names = list(names)
        self.blocks = nn.ModuleList(blocks)
        self.register_buffer("costs", torch.tensor(costs, dtype=torch.float64), persistent=False)
        self.logits = nn.Parameter(torch.zeros(len(names)))
        self.tau = 1.0
        self.generator: torch.Generator | None = None
        self.fixed: int | None = None  # run this candidate, whatever the logits say
        self.all_paths = False
        self.last_choice: int | None = None
        self._weight: torch.Tensor | None = None  # the current sample's straight-through weight
        # Running estimate of each candidate's layer error (NaN: not measured yet).
        self.register_buffer("error", torch.full((len(names),), float("nan")), persistent=False)
        # How much of the output's change is lost when this layer alone predicts no change
        # (`nas.searching.supernet.measure_sensitivity`; 1 until measured).
        self.register_buffer("sensitivity", torch.ones(()), persistent=False)

    def probs(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=0)

    def expected_cost(self) -> torch.Tensor:
        """sum_i p_i * cost_i, differentiable in the logits."""
        return (self.probs().to(self.costs.dtype) * self.costs).sum()

    def record_error(self, index: int, value: float, momentum: float = 0.8) -> None:
        """Fold a measured layer error of candidate `index` into its running estimate."""
        old = float(self.error[index])
        self.error[index] = value if old != old else momentum * old + (1 - momentum) * value

    def expected_error(self) -> torch.Tensor:
        """sum_i p_i * error_i over the estimates, differentiable in the logits."""
        known = torch.nan_to_num(self.error, nan=float(self.error.nanmean()))
        return (self.probs() * known.to(self.logits.dtype)).sum()

    def most_probable(self) -> int:
        return int(torch.argmax(self.logits.detach()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed is not None or not self.training:
            self.last_choice = self.most_probable() if self.fixed is None else self.fixed
            return self.blocks[self.last_choice](x)
        if self.all_paths:
            weights = self.probs()
            return sum(w * block(x) for w, block in zip(weights, self.blocks, strict=True))
        if self._weight is None:
            self.sample()
        return self._weight[self.last_choice] * self.blocks[self.last_choice](x)

    def sample(self) -> None:
        """Draw this step's candidate (hard Gumbel-softmax, straight-through weight)."""
        u = torch.rand(self.logits.shape, generator=self.generator).clamp_(1e-10, 1 - 1e-10)
        gumbel = -torch.log(-torch.log(u)).to(self.logits.device)
        soft = torch.softmax((self.logits + gumbel) / self.tau, dim=0)
        index = int(torch.argmax(soft.detach()))
        hard = torch.zeros_like(soft)
        hard[index] = 1.0
        self._weight = hard - soft.detach() + soft  # 1 in value, soft gradient
        self.last_choice = index
