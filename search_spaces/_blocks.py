"""Candidate student blocks: linear, bias-free stand-ins for one teacher conv, in one registry.

Every kind is an `nn.Module` class built through the same factory signature:

    CANDIDATES.get("sep")(layer, rank=16, weight=w)   # -> SepBlock
    CANDIDATES.get("full")(layer, rank=None, weight=None)

`layer` is the teacher's `ConvLayer`; `weight` its BatchNorm-folded weight W'
(c_out x c_in/groups x kh x kw) to start from (None: torch's default random init). In delta mode
a block maps the change of the layer's input to the change of its output, and a bias cancels in
a difference, so no block has one. Each class also states its cost and maximal rank without
being built (`macs`, `params`, `max_rank`); ranks above the maximum are clipped to it.

Low-rank kinds start from the truncated SVD of a reshaped W', the square roots of the singular
values split between the two factors, so at full rank they reproduce the teacher conv exactly.
The SVDs of the last few weights are memoised (by tensor identity and its version counter, so an
in-place update is seen): building every rank of one layer factorises its weight once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from nas.core.errors import NasError
from nas.core.registry import Registry
from nas.core.resample import avg_pool, bilinear
from nas.cost.macs import conv_out_size
from nas.graph.layers import ConvLayer, conv_for, conv_macs
from search_spaces._whiten import InputStats, whitening


@dataclass(frozen=True)
class Geometry:
    """A conv's spatial config; gives the output size at any input size."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    @classmethod
    def of(cls, layer: ConvLayer) -> Geometry:
        return cls(layer.kernel, layer.stride, layer.padding, layer.dilation)

    def out_hw(self, in_hw: tuple[int, int]) -> tuple[int, int]:
        return tuple(
            conv_out_size(size, kernel=k, stride=s, padding=p, dilation=d)
            for size, k, s, p, d in zip(
                in_hw, self.kernel, self.stride, self.padding, self.dilation, strict=True
            )
        )


def _check_weight(layer: ConvLayer, weight: torch.Tensor | None) -> None:
    if weight is None:
        return
    shape = (layer.c_out, layer.c_in // layer.groups, *layer.kernel)
    if tuple(weight.shape) != shape:
        raise NasError(
            f"layer {layer.path}: weight has shape {tuple(weight.shape)}, expected {shape} "
            "(c_out x c_in/groups x kh x kw)"
        )


def _like(weight: torch.Tensor | None) -> dict:
    """Factory kwargs that put new parameters on the weight's device and dtype."""
    return {} if weight is None else {"device": weight.device, "dtype": weight.dtype}


def _copy(param: torch.Tensor, value: torch.Tensor) -> None:
    with torch.no_grad():
        param.copy_(value)


_SVD_CACHE: list[tuple] = []  # (weight, version, kind, id(moment), factors, moment)
_SVD_CACHE_SIZE = 4


def _factors(
    weight: torch.Tensor,
    kind: str,
    matrix: torch.Tensor,
    rank: int,
    *,
    moment: torch.Tensor | None = None,
    input_side: str = "cols",
) -> tuple[torch.Tensor, torch.Tensor]:
    """A (m x rank) and B (rank x n) with A @ B the best rank-`rank` approximation of `matrix`.

    With `moment`, the second moment of the inputs on `input_side` of `matrix` ("cols": matrix
    @ d, "rows": matrix^T @ d), "best" is measured on those inputs (see `_whiten`).
    """
    key = (weight, weight._version, kind, id(moment))
    hit = next((e for e in _SVD_CACHE if e[0] is weight and e[1:4] == key[1:]), None)
    if hit is None:
        m = matrix.detach().to("cpu", torch.float64)
        root = inverse = None
        if moment is not None:
            root, inverse = whitening(moment)
            m = m @ root if input_side == "cols" else root @ m
        hit = (*key, (*torch.linalg.svd(m, full_matrices=False), inverse), moment)
        _SVD_CACHE.insert(0, hit)
        del _SVD_CACHE[_SVD_CACHE_SIZE:]
    u, s, vh, inverse = hit[4]
    root = s[:rank].sqrt()
    a, b = u[:, :rank] * root, root[:, None] * vh[:rank]
    if inverse is not None:
        a, b = (a, b @ inverse) if input_side == "cols" else (inverse @ a, b)
    return a.to(weight.device, weight.dtype), b.to(weight.device, weight.dtype)


class CandidateBlock(nn.Module):
    """Base of every kind: built as `Kind(layer, *, rank, weight, stats)`; costs known in advance.

    `weight` is the folded teacher weight to start from (None: random init); `stats`, the
    layer's measured input-delta statistics, make low-rank starts data-aware (`_whiten`).
    """

    kind: ClassVar[str]
    ranked: ClassVar[bool] = False  # takes a rank: `<kind>_r<R>`
    grouped: ClassVar[bool] = False  # may stand in for grouped and depthwise convs
    downsampled: ClassVar[bool] = True  # may run at half resolution: `down2_<kind>`
    # At inference a delta layer may skip the delta arithmetic: "conv" (the block is the
    # teacher's conv: run it on the full input), "key" (no change: reuse the key output).
    delta_shortcut: ClassVar[str | None] = None

    def factors(self) -> tuple[nn.Conv2d, nn.Conv2d] | None:
        """The block's two convs, run one after the other with nothing between them (None: it is
        not such a product): what `balance_factors` rescales."""
        return None

    @classmethod
    def max_rank(cls, layer: ConvLayer) -> int | None:
        """The rank at which the block is exact (None: the kind takes no rank)."""
        return None

    @classmethod
    def clip_rank(cls, layer: ConvLayer, rank: int | None) -> int | None:
        """`rank` clipped to the layer's maximum; errors if the kind needs a rank or takes none."""
        if not cls.ranked:
            if rank is not None:
                raise NasError(f"candidate kind '{cls.kind}' takes no rank (got {rank!r})")
            return None
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise NasError(f"candidate kind '{cls.kind}' needs a rank >= 1 (got {rank!r})")
        return min(rank, cls.max_rank(layer))

    @classmethod
    def macs(cls, layer: ConvLayer, *, rank: int | None, in_hw: tuple[int, int]) -> int:
        """Multiply-adds of one call on an input of `in_hw` (H, W), as torchvision counts them."""
        raise NotImplementedError

    @classmethod
    def params(cls, layer: ConvLayer, *, rank: int | None) -> int:
        raise NotImplementedError


CANDIDATES: Registry[type[CandidateBlock]] = Registry("candidate")


def _register(cls: type[CandidateBlock]) -> type[CandidateBlock]:
    CANDIDATES.register(cls.kind, cls)
    return cls


@_register
class FullBlock(CandidateBlock):
    """The teacher conv itself, without bias: exact, no saving."""

    kind = "full"
    grouped = True
    delta_shortcut = "conv"

    def __init__(
        self,
        layer: ConvLayer,
        *,
        rank: int | None = None,
        weight: torch.Tensor | None = None,
        stats: InputStats | None = None,
    ) -> None:
        super().__init__()
        self.clip_rank(layer, rank)
        _check_weight(layer, weight)
        self.conv = conv_for(layer, bias=False, **_like(weight))
        if weight is not None:
            _copy(self.conv.weight, weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    @classmethod
    def macs(cls, layer: ConvLayer, *, rank: int | None, in_hw: tuple[int, int]) -> int:
        out_hw = Geometry.of(layer).out_hw(in_hw)
        return conv_macs(
            c_in=layer.c_in,
            c_out=layer.c_out,
            kernel=layer.kernel,
            out_hw=out_hw,
            groups=layer.groups,
        )

    @classmethod
    def params(cls, layer: ConvLayer, *, rank: int | None) -> int:
        kh, kw = layer.kernel
        return layer.c_out * (layer.c_in // layer.groups) * kh * kw


@_register
class ZeroBlock(CandidateBlock):
    """Predicts no change (the key frame's output is reused): zeros of the output's shape."""

    kind = "zero"
    grouped = True
    downsampled = False
    delta_shortcut = "key"

    def __init__(
        self,
        layer: ConvLayer,
        *,
        rank: int | None = None,
        weight: torch.Tensor | None = None,
        stats: InputStats | None = None,
    ) -> None:
        super().__init__()
        self.clip_rank(layer, rank)
        _check_weight(layer, weight)
        self.c_out = layer.c_out
        self.geometry = Geometry.of(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], self.c_out, *self.geometry.out_hw(x.shape[-2:]))

    def extra_repr(self) -> str:
        return f"c_out={self.c_out}, {self.geometry}"

    @classmethod
    def macs(cls, layer: ConvLayer, *, rank: int | None, in_hw: tuple[int, int]) -> int:
        return 0

    @classmethod
    def params(cls, layer: ConvLayer, *, rank: int | None) -> int:
        return 0


@_register
class SepBlock(CandidateBlock):
    """Spatially separable low rank: a kh x 1 conv c_in -> R, then a 1 x kw conv R -> c_out.

    Initialised from the SVD of W' as a (c_in*kh) x (c_out*kw) matrix,
    M[(i, y), (o, x)] = W'[o, i, y, x]; the vertical conv takes the layer's vertical stride,
    padding and dilation, the horizontal conv the horizontal ones.
    """

    kind = "sep"
    ranked = True

    def __init__(
        self,
        layer: ConvLayer,
        *,
        rank: int | None = None,
        weight: torch.Tensor | None = None,
        stats: InputStats | None = None,
    ) -> None:
        super().__init__()
        rank = self.clip_rank(layer, rank)
        _check_weight(layer, weight)
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
            layer.kernel,
            layer.stride,
            layer.padding,
            layer.dilation,
        )
        like = _like(weight)
        self.vertical = nn.Conv2d(
            layer.c_in, rank, (kh, 1), (sh, 1), (ph, 0), (dh, 1), bias=False, **like
        )
        self.horizontal = nn.Conv2d(
            rank, layer.c_out, (1, kw), (1, sw), (0, pw), (1, dw), bias=False, **like
        )
        if weight is not None:
            matrix = weight.permute(1, 2, 0, 3).reshape(layer.c_in * kh, layer.c_out * kw)
            moment = stats.vertical if stats is not None else None
            a, b = _factors(weight, self.kind, matrix, rank, moment=moment, input_side="rows")
            _copy(self.vertical.weight, a.T.reshape(rank, layer.c_in, kh, 1))
            horizontal = b.reshape(rank, layer.c_out, kw).permute(1, 0, 2)
            _copy(self.horizontal.weight, horizontal.reshape(layer.c_out, rank, 1, kw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.horizontal(self.vertical(x))

    def factors(self) -> tuple[nn.Conv2d, nn.Conv2d]:
        return self.vertical, self.horizontal

    @classmethod
    def max_rank(cls, layer: ConvLayer) -> int:
        kh, kw = layer.kernel
        return min(layer.c_in * kh, layer.c_out * kw)

    @classmethod
    def macs(cls, layer: ConvLayer, *, rank: int | None, in_hw: tuple[int, int]) -> int:
        rank = cls.clip_rank(layer, rank)
        kh, kw = layer.kernel
        out_h, out_w = Geometry.of(layer).out_hw(in_hw)
        # The vertical conv keeps the input's full width; the horizontal one strides it.
        return rank * out_h * in_hw[1] * layer.c_in * kh + layer.c_out * out_h * out_w * rank * kw

    @classmethod
    def params(cls, layer: ConvLayer, *, rank: int | None) -> int:
        rank = cls.clip_rank(layer, rank)
        kh, kw = layer.kernel
        return rank * (layer.c_in * kh + layer.c_out * kw)


@_register
class LowRankBlock(CandidateBlock):
    """Low rank: a kh x kw conv c_in -> R (the layer's stride, padding, dilation), then 1 x 1.

    Initialised from the SVD of W' as a c_out x (c_in*kh*kw) matrix.
    """

    kind = "lowrank"
    ranked = True

    def __init__(
        self,
        layer: ConvLayer,
        *,
        rank: int | None = None,
        weight: torch.Tensor | None = None,
        stats: InputStats | None = None,
    ) -> None:
        super().__init__()
        rank = self.clip_rank(layer, rank)
        _check_weight(layer, weight)
        like = _like(weight)
        self.reduce = nn.Conv2d(
            layer.c_in,
            rank,
            layer.kernel,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            bias=False,
            **like,
        )
        self.expand = nn.Conv2d(rank, layer.c_out, 1, bias=False, **like)
        if weight is not None:
            moment = stats.patch if stats is not None else None
            matrix = weight.reshape(layer.c_out, -1)
            a, b = _factors(weight, self.kind, matrix, rank, moment=moment, input_side="cols")
            _copy(self.reduce.weight, b.reshape(rank, layer.c_in, *layer.kernel))
            _copy(self.expand.weight, a.reshape(layer.c_out, rank, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.reduce(x))

    def factors(self) -> tuple[nn.Conv2d, nn.Conv2d]:
        return self.reduce, self.expand

    @classmethod
    def max_rank(cls, layer: ConvLayer) -> int:
        kh, kw = layer.kernel
        return min(layer.c_out, layer.c_in * kh * kw)

    @classmethod
    def macs(cls, layer: ConvLayer, *, rank: int | None, in_hw: tuple[int, int]) -> int:
        rank = cls.clip_rank(layer, rank)
        kh, kw = layer.kernel
        out_h, out_w = Geometry.of(layer).out_hw(in_hw)
        return out_h * out_w * rank * (layer.c_in * kh * kw + layer.c_out)

    @classmethod
    def params(cls, layer: ConvLayer, *, rank: int | None) -> int:
        rank = cls.clip_rank(layer, rank)
        kh, kw = layer.kernel
        return rank * (layer.c_in * kh * kw + layer.c_out)


def pooled_hw(in_hw: tuple[int, int], factor: int) -> tuple[int, int]:
    """Size after average pooling by `factor` in ceil mode (a partial edge window counts)."""
    return tuple(-(-size // factor) for size in in_hw)


class DownBlock(nn.Module):
    """`inner` run on the delta average-pooled by `factor` (ceil mode), its output upsampled
    (bilinear, align_corners=False) to exactly the layer's output size at the input's size
    (both as matrix products on the CPU, see `nas.core.resample`).

    Pooling is linear, so pool(a - a_k) = pool(a) - pool(a_k): at inference a delta layer keeps
    the pooled key input (`pool`) and takes the difference at the pooled size (`from_pooled`),
    a quarter of the full-size subtraction (`nas.delta.model.DeltaConv`).
    """

    def __init__(self, inner: nn.Module, layer: ConvLayer, *, factor: int = 2) -> None:
        super().__init__()
        self.inner = inner
        self.factor = factor
        self.geometry = Geometry.of(layer)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return avg_pool(x, self.factor)

    def from_pooled(self, pooled: torch.Tensor, in_hw: tuple[int, int]) -> torch.Tensor:
        """The block's output for an input of size `in_hw` whose pooling is `pooled`."""
        return bilinear(self.inner(pooled), self.geometry.out_hw(in_hw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_pooled(self.pool(x), tuple(x.shape[-2:]))

    def factors(self) -> tuple[nn.Conv2d, nn.Conv2d] | None:
        found = getattr(self.inner, "factors", None)
        return None if found is None else found()

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


def balance_factors(block: nn.Module) -> bool:
    """Rescale a two-conv block's factors, in place, so that every intermediate channel i has
    as much weight going in (the first conv's filter i) as coming out (the second conv's
    column i): first_i / c, second_i * c with c = sqrt(|first_i| / |second_i|). The block's map
    is unchanged (nothing runs between the two convs). An optimiser whose step is about its
    learning rate whatever the gradient's scale (Adam) otherwise moves a factor that is small
    (a whitened `reduce`, RMS 0.003 beside its `expand`'s 1.4 in a calibrated U²-Net-p) by
    its whole size within a few dozen steps. Returns whether the block has such factors."""
    found = getattr(block, "factors", None)
    pair = None if found is None else found()
    if pair is None:
        return False
    first, second = pair
    with torch.no_grad():
        inward = first.weight.flatten(1).norm(dim=1)  # per intermediate channel
        outward = second.weight.transpose(0, 1).flatten(1).norm(dim=1)
        usable = (inward > 0) & (outward > 0)
        scale = torch.where(usable, (inward / outward.where(usable, 1.0)).sqrt(), 1.0)
        first.weight.div_(scale.view(-1, *([1] * (first.weight.dim() - 1))))
        second.weight.mul_(scale.view(1, -1, *([1] * (second.weight.dim() - 2))))
    return True
