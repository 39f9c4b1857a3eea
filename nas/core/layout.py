"""Memory layouts: which one a model runs in, and frames and features put into it.

CPU convolutions (oneDNN) run faster channels-last (NHWC) than in PyTorch's default NCHW
(`nas cost --latency cpu --layout nhwc` against `--layout nchw` measures by how much); on CUDA
NCHW is the default. `auto` takes NHWC on the CPU. The student runs in the chosen layout
(`nas eval`, `nas infer`), and a search measures latencies in it.
"""

from __future__ import annotations

import torch

from nas.core.errors import NasError

LAYOUTS = ("auto", "nchw", "nhwc")


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise NasError(f"unknown layout '{layout}': expected one of {', '.join(LAYOUTS)}")
    return layout


def layout_for(device: torch.device, layout: str = "auto") -> bool:
    """Whether to run channels-last: `nhwc`, `nchw`, or `auto` (channels-last on the CPU)."""
    check_layout(layout)
    return layout == "nhwc" or (layout == "auto" and device.type == "cpu")


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether a 4-D tensor is laid out channels-last (and not also plain contiguous)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def in_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """`x` (N x C x H x W) channels-last when asked, unchanged otherwise (and when it already
    is, or is not 4-D)."""
    if channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x
