"""Optical flow (OpenCV's DIS) and backward warping, for temporal consistency.

Convention, used by the TC metric and the temporal-consistency loss alike: to compare frame t
with frame t+1, estimate `flow = dis_flow(frame_t, frame_t1)` and warp frame t+1's prediction
back onto frame t with `warp(pred_t1, flow)`, which samples t+1 at `p + flow(p)`:

    frame_t(p) ~ frame_t1(p + flow(p))      flow[0] = dx (columns), flow[1] = dy (rows), pixels

so a scene moving right by 3 pixels has `flow[0] == 3`. Samples that fall outside the frame take
the nearest border value (`padding="border"`: no invented zeros, which would read as class 0 or
as confident logits); `consistency_mask` marks where the warped image disagrees with frame t
(occlusions, pixels that left the frame), the mask the per-frame paper puts on its TC loss.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F

from nas.core.errors import NasError

PRESETS = ("ultrafast", "fast", "medium")  # cv2.DISOPTICAL_FLOW_PRESET_* in this order
MIN_SIDE = 16  # DIS refuses, or crashes the process (OpenCV 5.0), on frames smaller than this


def _cv2():
    try:
        import cv2
    except ImportError:
        raise NasError(
            "optical flow needs OpenCV, which is not installed: pip install opencv-python-headless"
        ) from None
    return cv2


def _check_frame(frame: torch.Tensor, name: str) -> None:
    if frame.dtype != torch.uint8 or frame.dim() != 3 or frame.shape[0] != 3:
        raise NasError(
            f"{name} is a {frame.dtype} tensor of shape {tuple(frame.shape)}: expected an RGB "
            "frame, uint8 3 x H x W"
        )
    if min(frame.shape[1:]) < MIN_SIDE:
        raise NasError(
            f"{name} is {frame.shape[1]}x{frame.shape[2]}: optical flow needs frames of at least "
            f"{MIN_SIDE}x{MIN_SIDE}"
        )


def dis_flow(
    frame_a: torch.Tensor, frame_b: torch.Tensor, *, preset: str = "medium"
) -> torch.Tensor:
    """Flow from RGB frame a to frame b (uint8 3 x H x W each), float32 2 x H x W, on grayscale.

    `frame_a(p) ~ frame_b(p + flow(p))`; `preset` is DIS's `ultrafast`, `fast` or `medium`.
    """
    _check_frame(frame_a, "frame_a")
    _check_frame(frame_b, "frame_b")
    if frame_a.shape != frame_b.shape:
        raise NasError(
            f"frames of shapes {tuple(frame_a.shape)} and {tuple(frame_b.shape)}: optical flow "
            "needs two frames of one size"
        )
    if preset not in PRESETS:
        raise NasError(f"unknown DIS preset '{preset}': expected one of {', '.join(PRESETS)}")
    cv2 = _cv2()
    gray_a, gray_b = (
        cv2.cvtColor(f.detach().cpu().permute(1, 2, 0).contiguous().numpy(), cv2.COLOR_RGB2GRAY)
        for f in (frame_a, frame_b)
    )
    dis = cv2.DISOpticalFlow_create(PRESETS.index(preset))
    flow = dis.calc(gray_a, gray_b, None)  # H x W x 2, (dx, dy)
    return torch.from_numpy(flow).permute(2, 0, 1).contiguous()


def sequence_flow(frames: torch.Tensor, *, preset: str = "medium") -> torch.Tensor:
    """Flows between consecutive frames: T x 3 x H x W uint8 -> (T-1) x 2 x H x W, t to t+1."""
    if frames.dim() != 4:
        raise NasError(f"frames of shape {tuple(frames.shape)}: expected T x 3 x H x W uint8")
    if len(frames) < 2:
        return torch.zeros(0, 2, *frames.shape[-2:])
    return torch.stack([dis_flow(a, b, preset=preset) for a, b in pairwise(frames)])


def _grid(flow: torch.Tensor, size: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """Sampling positions `p + flow(p)` as grid_sample's N x H x W x 2 grid (align_corners)."""
    if flow.dim() != 4 or flow.shape[1] != 2 or tuple(flow.shape[-2:]) != size:
        raise NasError(
            f"flow of shape {tuple(flow.shape)}: expected N x 2 x {size[0]} x {size[1]}, the size "
            "of the maps it warps"
        )
    height, width = size
    ys = torch.arange(height, dtype=dtype, device=flow.device).view(1, -1, 1)
    xs = torch.arange(width, dtype=dtype, device=flow.device).view(1, 1, -1)
    flow = flow.to(dtype)
    gx = (xs + flow[:, 0]) * (2 / max(width - 1, 1)) - 1
    gy = (ys + flow[:, 1]) * (2 / max(height - 1, 1)) - 1
    return torch.stack((gx, gy), dim=-1)


def warp(x: torch.Tensor, flow: torch.Tensor, *, padding: str = "border") -> torch.Tensor:
    """Backward-warp float maps N x C x H x W by flow N x 2 x H x W: `out(p) = x(p + flow(p))`.

    Bilinear and differentiable in `x` (and in `flow`); `padding` is `border` or `zeros`.
    """
    if x.dim() != 4:
        raise NasError(f"maps of shape {tuple(x.shape)}: expected N x C x H x W")
    grid = _grid(flow.to(x.device), tuple(x.shape[-2:]), x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=True)


def warp_nearest(labels: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp integer label maps N x H x W by flow N x 2 x H x W (nearest, border)."""
    if labels.dim() != 3:
        raise NasError(f"label maps of shape {tuple(labels.shape)}: expected N x H x W")
    grid = _grid(flow.to(labels.device), tuple(labels.shape[-2:]), torch.float32)
    out = F.grid_sample(
        labels[:, None].float(), grid, mode="nearest", padding_mode="border", align_corners=True
    )
    return out[:, 0].round().to(labels.dtype)


def consistency_mask(
    frame_t: torch.Tensor, warped_frame_t1: torch.Tensor, threshold: float = 10.0
) -> torch.Tensor:
    """True where the warped frame t+1 matches frame t: mean |RGB difference| < `threshold`.

    Frames are ... x 3 x H x W in [0, 255] (uint8 or float); the result is boolean ... x H x W.
    """
    diff = (frame_t.float() - warped_frame_t1.float()).abs().mean(dim=-3)
    return diff < threshold
