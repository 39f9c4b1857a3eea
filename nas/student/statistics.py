"""Measured statistics of how each conv's input changes between frames (for data-aware starts).

The teacher runs on key frames and on frames t of real clips; for every searched conv with
groups == 1, the second moment of its input change (a_t - a_k) is accumulated in the layouts the
low-rank blocks read (`search_spaces.InputStats`), over a sample of positions. Moments larger
than `max_dim` squared are not kept (those layers start from the plain SVD).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from nas.graph.layers import ConvLayer
from search_spaces import InputStats

MAX_DIM = 2304  # 256 channels x 3 x 3
POSITIONS = 4096  # sampled patch positions per layer and batch


class _Inputs:
    """Forward pre-hooks keeping the input of each watched conv."""

    def __init__(self, module: nn.Module, layers: list[ConvLayer]) -> None:
        self.seen: dict[str, torch.Tensor] = {}
        self.handles = [
            module.get_submodule(layer.path).register_forward_pre_hook(self._hook(layer.path))
            for layer in layers
        ]

    def _hook(self, path: str):
        def hook(conv, inputs) -> None:
            self.seen[path] = inputs[0].detach()

        return hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _patches(delta: torch.Tensor, layer: ConvLayer, *, vertical: bool) -> torch.Tensor:
    """D x L columns: the receptive fields of the (vertical part of the) conv."""
    kernel = (layer.kernel[0], 1) if vertical else layer.kernel
    pick = (lambda p: (p[0], 1)) if vertical else (lambda p: p)
    padding = (layer.padding[0], 0) if vertical else layer.padding
    cols = F.unfold(
        delta.double(),
        kernel,
        dilation=pick(layer.dilation),
        padding=padding,
        stride=pick(layer.stride),
    )
    return cols.permute(1, 0, 2).reshape(cols.shape[1], -1)


def delta_statistics(
    teacher: Callable[[torch.Tensor], object],
    module: nn.Module,
    layers: list[ConvLayer],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    generator: torch.Generator,
    max_dim: int = MAX_DIM,
) -> dict[str, InputStats]:
    """Second moments of each dense conv's input change over (key frames, frames t) batches."""
    dense = [layer for layer in layers if layer.groups == 1]
    sums: dict[tuple[str, str], torch.Tensor] = {}
    counts: dict[tuple[str, str], int] = {}
    hooks = _Inputs(module, dense)
    try:
        with torch.no_grad():
            for x_key, x_t in batches:
                teacher(x_key)
                keys = dict(hooks.seen)
                teacher(x_t)
                for layer in dense:
                    delta = (hooks.seen[layer.path] - keys[layer.path]).cpu()
                    for layout in ("patch", "vertical"):
                        vertical = layout == "vertical"
                        kh, kw = layer.kernel
                        dim = layer.c_in * kh * (1 if vertical else kw)
                        if dim > max_dim or (vertical and kw == 1):
                            continue
                        cols = _patches(delta, layer, vertical=vertical)
                        if cols.shape[1] > POSITIONS:
                            keep = torch.randperm(cols.shape[1], generator=generator)[:POSITIONS]
                            cols = cols[:, keep]
                        key = (layer.path, layout)
                        sums[key] = sums.get(key, 0) + cols @ cols.T
                        counts[key] = counts.get(key, 0) + cols.shape[1]
    finally:
        hooks.close()

    def moment(path: str, layout: str) -> torch.Tensor | None:
        key = (path, layout)
        return sums[key] / counts[key] if key in sums else None

    stats = {}
    for layer in dense:
        patch = moment(layer.path, "patch")
        vertical = patch if layer.kernel[1] == 1 else moment(layer.path, "vertical")
        stats[layer.path] = InputStats(patch=patch, vertical=vertical)
    return stats
