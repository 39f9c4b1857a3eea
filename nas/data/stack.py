"""Frames held in memory, fitted to one input size: what a search step samples from."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nas.core.errors import NasError
from nas.data.frames import IGNORE_INDEX, FrameSequence, Video
from nas.data.transforms import resize_crop


@dataclass(frozen=True, eq=False)
class FrameStack:
    """The frames of one or more sequences end to end; `sequences[i]` indexes sequence i's frames.

    `labels` is None when no frame has a label; otherwise frames without one are all 255.
    """

    frames: torch.Tensor  # uint8, T x 3 x H x W
    labels: torch.Tensor | None  # uint8, T x H x W
    sequences: tuple[range, ...]
    names: tuple[str, ...]  # one per sequence
    indices: torch.Tensor  # int64, T: each frame's number in its source sequence

    def __len__(self) -> int:
        return int(self.frames.shape[0])


def load_frames(
    source: Video | FrameSequence, *, size: tuple[int, int] | None = None
) -> FrameStack:
    """Decode every frame of `source` into memory, each fitted to `size` (H, W) as it arrives.

    Without `size` all frames must already share one size.
    """
    sequences = source.sequences if isinstance(source, Video) else (source,)
    has_labels = any(sequence.has_labels for sequence in sequences)
    images, labels, indices, ranges, names = [], [], [], [], []
    for sequence in sequences:
        start = len(images)
        for frame in sequence:
            if size is not None:
                frame = resize_crop(frame, size)
            elif images and frame.image.shape != images[0].shape:
                raise NasError(
                    f"frame {frame.index} of '{sequence.name}' is {_hw(frame.image)} but earlier "
                    f"frames are {_hw(images[0])}: pass size=(H, W) to fit them to one size"
                )
            images.append(frame.image)
            indices.append(frame.index)
            if has_labels:
                label = frame.label
                if label is None:
                    label = torch.full(frame.image.shape[-2:], IGNORE_INDEX, dtype=torch.uint8)
                labels.append(label.to(torch.uint8))
        ranges.append(range(start, len(images)))
        names.append(sequence.name)
    if not images:
        raise NasError(f"'{source.name}' has no frames: expected at least one decodable frame")
    return FrameStack(
        frames=torch.stack(images),
        labels=torch.stack(labels) if has_labels else None,
        sequences=tuple(ranges),
        names=tuple(names),
        indices=torch.tensor(indices, dtype=torch.int64),
    )


def _hw(image: torch.Tensor) -> str:
    return f"{image.shape[-2]}x{image.shape[-1]}"
