"""Fit frames to a model's input size: scale to cover the target, keeping the aspect ratio,
then crop the centre. Frames are resized bilinearly with antialiasing, label maps with nearest
neighbour (class ids are never blended); both use the same geometry, so they stay aligned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nas.core.errors import NasError
from nas.data.frames import Frame


def cover_size(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """The (H, W) that `size` is scaled to so that it covers `target` with the same aspect ratio."""
    scale = max(target[0] / size[0], target[1] / size[1])
    return max(target[0], round(size[0] * scale)), max(target[1], round(size[1] * scale))


def _check(target: tuple[int, int]) -> tuple[int, int]:
    if len(target) != 2 or min(target) < 1:
        raise NasError(f"invalid target size {target}: expected (height, width) in pixels")
    return int(target[0]), int(target[1])


def _centre_crop(x: torch.Tensor, target: tuple[int, int]) -> torch.Tensor:
    top = (x.shape[-2] - target[0]) // 2
    left = (x.shape[-1] - target[1]) // 2
    return x[..., top : top + target[0], left : left + target[1]]


def resize_crop_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 frames, 3 x H x W or N x 3 x H x W -> uint8 frames of `size` (H, W)."""
    size = _check(size)
    if frames.dim() not in (3, 4) or frames.shape[-3] != 3:
        raise NasError(
            f"frames of shape {tuple(frames.shape)}: expected 3 x H x W or N x 3 x H x W"
        )
    if tuple(frames.shape[-2:]) == size:
        return frames
    batch = frames if frames.dim() == 4 else frames[None]
    scaled = cover_size(tuple(frames.shape[-2:]), size)
    resized = F.interpolate(
        batch.float(), size=scaled, mode="bilinear", align_corners=False, antialias=True
    )
    out = _centre_crop(resized, size).round().clamp(0, 255).to(frames.dtype).contiguous()
    return out if frames.dim() == 4 else out[0]


def resize_crop_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Integer label maps, H x W or N x H x W -> the same dtype at `size`, nearest neighbour."""
    size = _check(size)
    if labels.dim() not in (2, 3):
        raise NasError(f"label maps of shape {tuple(labels.shape)}: expected H x W or N x H x W")
    if tuple(labels.shape[-2:]) == size:
        return labels
    batch = labels[:, None] if labels.dim() == 3 else labels[None, None]
    scaled = cover_size(tuple(labels.shape[-2:]), size)
    # float32 holds every id up to 2**24 exactly, and nearest only copies values
    resized = F.interpolate(batch.float(), size=scaled, mode="nearest-exact")
    out = _centre_crop(resized, size).to(labels.dtype).contiguous()
    return out[:, 0] if labels.dim() == 3 else out[0, 0]


def resize_crop(frame: Frame, size: tuple[int, int]) -> Frame:
    """A `Frame` with its image and label (if any) fitted to `size`."""
    label = None if frame.label is None else resize_crop_labels(frame.label, size)
    return Frame(resize_crop_frames(frame.image, size), label, frame.index)
