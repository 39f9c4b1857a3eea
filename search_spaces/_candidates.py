"""A candidate on one layer: whether it applies, its exact cost, and the block itself.

Costs are per call of the layer at its recorded input size (the caller multiplies by
`layer.calls`), in multiply-adds as torchvision counts them: conv multiply-adds only, pooling and
upsampling count 0 (`FlopCounterMode` total / 2 of the built block). A `down2_` candidate costs
its inner block at the pooled input size (ceil(H/2) x ceil(W/2)).

    build_candidate("sep_r16", layer, weight=folded.weight)   # -> SepBlock, from the SVD of W'
    candidate_macs("down2_full", layer), candidate_params("lowrank_r8", layer)
"""

from __future__ import annotations

import torch
from torch import nn

from nas.core.errors import NasError
from nas.graph.layers import ConvLayer
from search_spaces._blocks import CANDIDATES, DownBlock, Geometry, pooled_hw
from search_spaces._strings import Candidate, as_candidate
from search_spaces._whiten import InputStats


def max_rank(kind: str, layer: ConvLayer) -> int | None:
    """The rank at which a `kind` block reproduces the layer exactly (None: takes no rank)."""
    return CANDIDATES.get(kind).max_rank(layer)


def check_candidate(candidate: Candidate | str, layer: ConvLayer) -> Candidate:
    """The decoded candidate, or a `NasError` saying why it cannot stand in for `layer`."""
    candidate = as_candidate(candidate)
    geometry = Geometry.of(layer)
    if geometry.out_hw(layer.in_hw) != tuple(layer.out_hw):
        raise NasError(
            f"layer {layer.path}: output {layer.out_hw} does not follow from input {layer.in_hw} "
            f"with padding {layer.padding} (asymmetric padding is not supported)"
        )
    if layer.groups != 1 and (candidate.down != 1 or not CANDIDATES.get(candidate.kind).grouped):
        grouped = [k for k in CANDIDATES if CANDIDATES.get(k).grouped]
        raise NasError(
            f"layer {layer.path}: '{candidate}' needs a conv with groups=1; this one has "
            f"groups={layer.groups}, which takes only {', '.join(grouped)}"
        )
    if candidate.down != 1 and min(geometry.out_hw(pooled_hw(layer.in_hw, candidate.down))) < 1:
        raise NasError(
            f"layer {layer.path}: input {layer.in_hw} is too small for '{candidate}' "
            "(the pooled input gives an empty output)"
        )
    return candidate


def candidate_macs(candidate: Candidate | str, layer: ConvLayer) -> int:
    """Multiply-adds of one call of the candidate's block on `layer`, without building it."""
    candidate = check_candidate(candidate, layer)
    in_hw = pooled_hw(layer.in_hw, candidate.down)
    return CANDIDATES.get(candidate.kind).macs(layer, rank=candidate.rank, in_hw=in_hw)


def candidate_params(candidate: Candidate | str, layer: ConvLayer) -> int:
    """Parameters of the candidate's block on `layer` (no bias), without building it."""
    candidate = check_candidate(candidate, layer)
    return CANDIDATES.get(candidate.kind).params(layer, rank=candidate.rank)


def build_candidate(
    candidate: Candidate | str,
    layer: ConvLayer,
    *,
    weight: torch.Tensor | None = None,
    stats: InputStats | None = None,
) -> nn.Module:
    """The block for `layer`, initialised from its folded weight W' (None: random init).

    It maps a delta of shape (N, c_in, H, W) to one of shape (N, c_out, H', W') at any H, W.
    """
    candidate = check_candidate(candidate, layer)
    block = CANDIDATES.get(candidate.kind)(layer, rank=candidate.rank, weight=weight, stats=stats)
    if candidate.down != 1:
        block = DownBlock(block, layer, factor=candidate.down)
    return block
