"""The delta model and its searchable form.

Delta Distillation (see DESIGN.md, "Delta mode"): every searched conv l of the teacher (BN folded,
so it is linear) is replaced by a `DeltaConv`. On a key frame it runs the teacher conv exactly
and caches its input a_k and output z_k; on a later frame t it returns

    z_t = z_k + g(a_t - a_k)

where a_t is the input the delta model itself reconstructed, so errors propagate exactly as at
inference, and g is the student block. Everything else (activations, pooling, additions,
upsampling) runs unchanged on the reconstructed full features. In the search, g is a
`MixedDelta`: architecture logits over candidate blocks, of which one per layer is sampled each
step (hard Gumbel-softmax with straight-through gradients), so a step costs about one student
forward and backward; the expected cost is differentiable in the logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum

import torch
from torch import nn

from nas.fold import fold_batchnorms
from nas.graph import ConvLayer


class Phase(str, Enum):
    KEY = "key"  # run the teacher conv exactly and cache input and output
    TEACHER = "teacher"  # run the teacher conv exactly and keep its output as the target
    DELTA = "delta"  # predict the output from the change of the input


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


class DeltaConv(nn.Module):
    """One teacher conv (BN folded) in a delta model: exact on key frames, then z_k + g(a - a_k)."""

    def __init__(self, conv: nn.Conv2d, block: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.block = block
        self.phase = Phase.KEY
        self.a_key: torch.Tensor | None = None
        self.z_key: torch.Tensor | None = None
        self.target: torch.Tensor | None = None  # teacher's output on frame t (TEACHER phase)
        self.target_input: torch.Tensor | None = None  # teacher's input on frame t (TEACHER)
        self.prediction: torch.Tensor | None = None  # own output on frame t (DELTA phase)
        self.forced: torch.Tensor | None = None  # from the teacher's input on frame t (DELTA)
        # Whether the network changes this layer's input or output in place after the conv
        # (`out += identity`): then the caches must be copies. Found on the first key frame.
        self.copy_cache = False
        # Whether the network's in-place activations are on (inference delta frames): then a
        # delta output must never be the cached tensor itself.
        self.fresh_output = False
        self._versions: tuple[int, int] = (0, 0)

    def cache_was_changed(self) -> bool:
        """Whether the cached key tensors were modified in place since the key frame."""
        return (self.a_key._version, self.z_key._version) != self._versions

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if self.phase is Phase.DELTA:
            if self.a_key is None or self.a_key.shape != a.shape:
                raise RuntimeError(
                    "delta frame without a matching key frame: run the key frame first"
                )
            if not torch.is_grad_enabled():  # inference: the same result with less work
                shortcut = getattr(self.block, "delta_shortcut", None)
                if shortcut == "conv":  # z_k + W(a - a_k) = W a + b, exactly
                    return self.conv(a)
                if shortcut == "key":  # z_k + 0 (a copy if the network writes to it)
                    return (
                        self.z_key.clone() if self.copy_cache or self.fresh_output else self.z_key
                    )
                return self.z_key + self.block(a - self.a_key)
            z = self.z_key + self.block(a - self.a_key)
            self.prediction = z
            if self.target_input is not None:  # teacher forcing, for this layer's own loss
                self.forced = self.z_key + self.block(self.target_input - self.a_key)
            return z.clone()
        z = self.conv(a)
        if self.phase is Phase.KEY:
            if self.copy_cache:
                self.a_key, self.z_key = a.detach().clone(), z.detach().clone()
            else:
                self.a_key, self.z_key = a.detach(), z.detach()
            if not z.is_inference():  # inference tensors keep no version counter
                self._versions = (self.a_key._version, self.z_key._version)
        else:
            self.target = z.detach().clone()
            self.target_input = a.detach().clone()
        return z


class DeltaModel(nn.Module):
    """A teacher whose searched convs are `DeltaConv`s; `net` keeps the teacher's module paths."""

    def __init__(self, net: nn.Module, layers: list[ConvLayer], output_key: str | None) -> None:
        super().__init__()
        self.net = net
        self.layers = list(layers)
        self.output_key = output_key
        self._caches_checked = False
        self._inplace: list[nn.Module] = []  # the teacher's in-place activations

    @classmethod
    def build(
        cls,
        module: nn.Module,
        layers: list[ConvLayer],
        make_block: Callable[[ConvLayer, nn.Conv2d], nn.Module],
        *,
        output_key: str | None = None,
    ) -> DeltaModel:
        """Fold BNs into a copy of `module`; wrap each layer's folded conv with its student block.

        `make_block(layer, folded_conv)` returns the block g for that layer (a `MixedDelta` in
        the search, the chosen candidate in a student), initialised from the folded weights.
        """
        net = fold_batchnorms(module, layers)
        # Activations in place would write into the cached key outputs: off, except on delta
        # frames at inference (see `_run`), where every tensor they see is new.
        inplace = [sub for sub in net.modules() if getattr(sub, "inplace", None) is True]
        for sub in inplace:
            sub.inplace = False
        for layer in layers:
            conv = net.get_submodule(layer.path)
            net.set_submodule(layer.path, DeltaConv(conv, make_block(layer, conv)))
        model = cls(net, layers, output_key)
        model._inplace = inplace
        return model

    def train(self, mode: bool = True) -> DeltaModel:
        """Only the student blocks ever train: the teacher's own layers stay in eval mode, so its
        BatchNorms keep their statistics and its dropout stays off, in training as at inference.
        """
        super().train(mode)
        for module in self.net.modules():
            module.training = False
        for _, conv in self.delta_convs():
            conv.block.train(mode)
        return self

    def delta_convs(self) -> list[tuple[ConvLayer, DeltaConv]]:
        return [(layer, self.net.get_submodule(layer.path)) for layer in self.layers]

    def _run(self, x: torch.Tensor, phase: Phase) -> torch.Tensor:
        # In place saves a full-size allocation per activation; safe only where no key cache or
        # autograd graph can see the tensors written.
        inplace = phase is Phase.DELTA and not torch.is_grad_enabled()
        for sub in self._inplace:
            sub.inplace = inplace
        for _, conv in self.delta_convs():
            conv.phase = phase
            conv.fresh_output = inplace
        try:
            out = self.net(x)
        finally:
            for sub in self._inplace:
                sub.inplace = False
        if isinstance(out, dict):
            out = out[self.output_key or "out"]
        return out

    def key_frame(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's exact output on a key frame; caches every layer's input and output.

        Caches are the network's own tensors, not copies, unless the network was seen to change
        them in place; the first time that happens the layers are marked and the frame rerun.
        """
        if not self._caches_checked:
            # Version counters exist outside inference mode only: check there, once.
            with torch.inference_mode(False), torch.no_grad():
                self._run(x.clone(), Phase.KEY)
                for _, conv in self.delta_convs():
                    conv.copy_cache = conv.copy_cache or conv.cache_was_changed()
            self._caches_checked = True
        with torch.no_grad():
            return self._run(x, Phase.KEY)

    def teacher_frame(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's exact output on frame t; keeps every layer's true output as a target."""
        with torch.no_grad():
            return self._run(x, Phase.TEACHER)

    def delta_frame(self, x: torch.Tensor) -> torch.Tensor:
        """The delta model's output on frame t, from the cached key frame."""
        return self._run(x, Phase.DELTA)

    def clear(self) -> None:
        for _, conv in self.delta_convs():
            conv.a_key = conv.z_key = conv.target = conv.target_input = None
            conv.prediction = conv.forced = None


def amortised(keyframe_cost: float, delta_cost, interval: int):
    """Per-frame cost of a key frame every `interval` frames: (teacher + (K-1) * delta) / K."""
    return (keyframe_cost + (interval - 1) * delta_cost) / interval


def smallest_interval(keyframe_cost: float, min_delta_cost: float, budget: float) -> int | None:
    """The smallest key-frame interval K whose cheapest delta model meets the budget, if any."""
    if budget <= min_delta_cost:
        return None
    k = math.ceil((keyframe_cost - min_delta_cost) / (budget - min_delta_cost) - 1e-12)
    return max(k, 2)
