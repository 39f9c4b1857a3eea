"""Skipping what did not change: a delta frame's block run only on the tiles whose input moved.

Most video changes in a small part of the frame (a fixed camera, a talking head). On a delta
frame a layer's output change is g(d) with d = a_t - a_k, and g (every candidate block) is
linear with no bias: where d is zero over an output position's whole receptive field, the
output change there is exactly zero. So (the DeltaCNN idea, for delta-distilled students):

1. The output is cut into `tile` x `tile` tiles. A tile is *active* when the largest |d| over
   its receptive field (every channel, the block's kernel, stride and dilation around it) is
   above `threshold` times the layer's mean |a_k| on the key frame (so that one threshold
   means the same at every layer, whatever its scale): one channel-max pass over d and one
   max-pool.
2. The active tiles' receptive windows of the (zero-padded) d are gathered into one batch, run
   through the block's convs without their padding (each window is already padded), and each
   tile's result is added into a copy of the cached key output z_k. Inactive tiles keep z_k.
3. Where more than `dense_above` of the tiles are active, the block runs densely instead: the
   gather and scatter would cost more than they save.

At threshold 0 it is exact (to the convs' rounding): a tile left out has an input change of
exactly zero everywhere it reads. Above 0 a small change is taken as none; its cost in quality
is measured as R (`bench/runner_speed.py --forms`).

Tiled: blocks made of plain convs run one after the other (`full`, `lowrank`, `sep`), zero
padding. A block that pools first (`down2_`) runs densely: its upsampling reads across tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nas.core.layout import is_channels_last

TILE = 16  # output pixels per tile side
DENSE_ABOVE = 0.5  # share of active tiles above which a layer runs densely


def tiled_convs(block: nn.Module) -> list[nn.Conv2d] | None:
    """The convs a block runs one after the other, if it is made of them alone and they pad
    with zeros (None: the block runs densely)."""
    factors = getattr(block, "factors", None)
    found = factors() if factors is not None else None
    convs = list(found) if found is not None else None
    if convs is None and getattr(type(block), "delta_shortcut", None) == "conv":
        convs = [block.conv]
    if convs is None or getattr(block, "pool", None) is not None:
        return None
    if any(c.padding_mode != "zeros" or isinstance(c.padding, str) for c in convs):
        return None
    for axis in (0, 1):  # padding a later conv's input = padding the first's only where the
        for i, conv in enumerate(convs):  # convs before it pass that axis through unchanged
            before = convs[:i]
            if conv.padding[axis] and any(
                c.kernel_size[axis] != 1 or c.stride[axis] != 1 for c in before
            ):
                return None
    return convs


@dataclass(frozen=True)
class Window:
    """Along one axis: the convs' overall kernel extent, stride and padding."""

    extent: int
    stride: int
    padding: int

    @classmethod
    def of(cls, convs: list[nn.Conv2d], axis: int) -> Window:
        extent, stride, padding = 1, 1, 0
        for conv in convs:  # composed: each conv's reach is in its input's pixels
            reach = (conv.kernel_size[axis] - 1) * conv.dilation[axis]
            extent += reach * stride
            padding += conv.padding[axis] * stride
            stride *= conv.stride[axis]
        return cls(extent, stride, padding)

    def out_size(self, size: int) -> int:
        return (size + 2 * self.padding - self.extent) // self.stride + 1

    def span(self, tile: int) -> int:
        """Input pixels (padded) one tile of `tile` outputs reads."""
        return (tile - 1) * self.stride + self.extent


@dataclass
class TileSkip:
    """Skipping on every tileable layer of a delta model (`nas.delta.model.DeltaConv`), with the
    share of tiles it ran, counted over the frames since `reset`."""

    threshold: float = 0.0
    tile: int = TILE
    dense_above: float = DENSE_ABOVE
    active: int = 0
    total: int = 0

    def reset(self) -> None:
        self.active = self.total = 0

    @property
    def active_share(self) -> float:
        return self.active / self.total if self.total else float("nan")

    def run(
        self, convs: list[nn.Conv2d], delta: torch.Tensor, z_key: torch.Tensor, scale: float
    ) -> torch.Tensor:
        """z_k + g(delta), g computed on the active tiles only (see the module docstring);
        `scale`: the layer's mean |a_k|, the unit of the threshold."""
        rows, cols = Window.of(convs, 0), Window.of(convs, 1)
        n, _, height, width = delta.shape
        out_h, out_w = rows.out_size(height), cols.out_size(width)
        tile = self.tile
        tiles_y, tiles_x = -(-out_h // tile), -(-out_w // tile)
        span_y, span_x = rows.span(tile), cols.span(tile)
        step_y, step_x = tile * rows.stride, tile * cols.stride
        # Padded so that every tile's window lies inside: the convs' own padding on the top
        # and left, and on the bottom and right as much as the last window needs.
        bottom = (tiles_y - 1) * step_y + span_y - height - rows.padding
        right = (tiles_x - 1) * step_x + span_x - width - cols.padding
        pads = (cols.padding, max(right, 0), rows.padding, max(bottom, 0))
        low, high = torch.aminmax(delta, dim=1, keepdim=True)  # |d| max without an |d| tensor
        change = torch.maximum(high, low.neg_())
        reach = F.max_pool2d(F.pad(change, pads), (span_y, span_x), stride=(step_y, step_x))[
            :, 0, :tiles_y, :tiles_x
        ]
        active = (reach > self.threshold * scale).nonzero()  # rows of (image, tile row, tile col)
        count = tiles_y * tiles_x * n
        self.total += count
        if len(active) > self.dense_above * count:
            self.active += count
            return _through(convs, delta, padded=False).add_(z_key)
        self.active += len(active)
        extra_y, extra_x = tiles_y * tile - out_h, tiles_x * tile - out_w
        out = F.pad(z_key, (0, extra_x, 0, extra_y)) if extra_y or extra_x else z_key.clone()
        if len(active):
            windows = (
                F.pad(delta, pads)
                .unfold(2, span_y, step_y)
                .unfold(3, span_x, step_x)[active[:, 0], :, active[:, 1], active[:, 2]]
            )  # active x C x span_y x span_x
            # In the frame's layout: a CPU conv runs much faster channels-last (`nas.core.layout`).
            windows = windows.contiguous(memory_format=_format(delta))
            tiles = out.unfold(2, tile, tile).unfold(3, tile, tile)
            tiles[active[:, 0], :, active[:, 1], active[:, 2]] += _through(
                convs, windows, padded=True
            )
        if out.shape[-2:] == z_key.shape[-2:]:
            return out
        return out[..., :out_h, :out_w].contiguous(memory_format=_format(z_key))


def _through(convs: list[nn.Conv2d], x: torch.Tensor, *, padded: bool) -> torch.Tensor:
    """`x` through the convs, without their padding where `x` is padded already."""
    for conv in convs:
        padding = 0 if padded else conv.padding
        x = F.conv2d(x, conv.weight, None, conv.stride, padding, conv.dilation, conv.groups)
    return x


def _format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if is_channels_last(x) else torch.contiguous_format
