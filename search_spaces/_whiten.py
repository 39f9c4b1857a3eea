"""Data-aware low rank: truncate the SVD where the layer's input changes actually lie.

A plain truncated SVD of W keeps the directions of largest weight, whatever the input. The error
that matters is E||W d - A B d||^2 over the deltas d the layer really sees; with their second
moment S = E[d d^T] it is minimised by the truncated SVD of W S^(1/2), mapped back with
S^(-1/2).

`InputStats` holds the second moments of a layer's input deltas in the two layouts the blocks
read them: `patch` (c_in * kh * kw, the `lowrank` first conv's receptive field) and `vertical`
(c_in * kh, the `sep` vertical conv's). Either may be None (too large to keep, or unmeasured):
the block then falls back to the plain SVD.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class InputStats:
    patch: torch.Tensor | None = None
    vertical: torch.Tensor | None = None


def whitening(moment: torch.Tensor, floor: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """S^(1/2) and S^(-1/2) of a second-moment matrix (eigenvalues floored for stability)."""
    values, vectors = torch.linalg.eigh(moment.to(torch.float64))
    values = values.clamp_min(float(values.max()) * floor + 1e-30)
    root = (vectors * values.sqrt()) @ vectors.T
    inverse = (vectors / values.sqrt()) @ vectors.T
    return root, inverse
