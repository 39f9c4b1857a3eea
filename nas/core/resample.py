"""Average pooling and bilinear resizing of feature maps, exact and fast on the CPU.

Both maps are separable: pooling or resizing an H x W map is `R_h @ x @ R_w^T`, with one small
matrix per axis. PyTorch's CPU kernels for `avg_pool2d` and bilinear `interpolate` are slow on
contiguous (NCHW) maps of many channels and few pixels, the shape of a `down2_` block's input
deep in a network (a 960-channel 33 x 33 delta: the kernels took longer than the conv they
save), while two matrix products over the same map run at BLAS speed. The matrices are made by
the reference ops themselves, applied to an identity basis, so the product is the same map (to
float rounding, checked in the tests) with the same edge handling: ceil-mode windows that are
cut off by the border, `align_corners=False` sampling.

Channels-last maps and other devices keep PyTorch's own kernels, which are fast there.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=128)
def _matrix(op: str, n_in: int, arg: int, dtype: torch.dtype, device: torch.device):
    """(n_out x n_in) matrix of the 1-D op along one axis: `pool` by a factor, or `resize` to a
    length; made by the op itself on the identity, so the two agree by construction."""
    with torch.inference_mode(False), torch.no_grad():
        basis = torch.eye(n_in, dtype=torch.float64).unsqueeze(0)  # channels = basis vectors
        if op == "pool":
            rows = F.avg_pool1d(basis, arg, ceil_mode=True)
        else:
            rows = F.interpolate(basis, size=arg, mode="linear", align_corners=False)
        return rows[0].T.contiguous().to(device, dtype)


def _separable(x: torch.Tensor) -> bool:
    """Whether the matrix products are the faster way for `x` (contiguous NCHW on the CPU)."""
    return x.dim() == 4 and x.device.type == "cpu" and x.is_floating_point() and x.is_contiguous()


def _apply(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    return torch.matmul(torch.matmul(rows, x), cols.T)


def avg_pool(x: torch.Tensor, factor: int) -> torch.Tensor:
    """`F.avg_pool2d(x, factor, ceil_mode=True)` (N x C x H x W)."""
    if not _separable(x):
        return F.avg_pool2d(x, factor, ceil_mode=True)
    h, w = x.shape[-2:]
    return _apply(
        x,
        _matrix("pool", h, factor, x.dtype, x.device),
        _matrix("pool", w, factor, x.dtype, x.device),
    )


def bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`F.interpolate(x, size, mode="bilinear", align_corners=False)` (N x C x H x W)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if not _separable(x):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    h, w = x.shape[-2:]
    return _apply(
        x,
        _matrix("resize", h, size[0], x.dtype, x.device),
        _matrix("resize", w, size[1], x.dtype, x.device),
    )
