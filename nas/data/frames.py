"""Frames and sequences: what every video source yields.

A source is a `FrameSequence`: frames in time order, each a `Frame` holding an RGB image (uint8,
3 x H x W) and, where the source has labels, a label map (uint8, H x W, class ids, 255 = ignore).
A `Video` is one or more sequences (a file is one; Cityscapes has one per recorded snippet).
Time runs only inside a sequence, so nothing downstream pairs frames of two sequences.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from nas.core.errors import NasError

IGNORE_INDEX = 255  # label value of pixels (and frames) without a class


@dataclass(frozen=True)
class Frame:
    """One decoded frame; `index` is its number in the source sequence, counted before `stride`."""

    image: torch.Tensor  # uint8, 3 x H x W, RGB
    label: torch.Tensor | None  # uint8, H x W, class ids, 255 = ignore; None: no label
    index: int


def error_text(error: BaseException) -> str:
    """A library's error message on one line (for wrapping in a `NasError`)."""
    return " ".join(str(error).split()) or type(error).__name__


def check_selection(max_frames: int | None, stride: int) -> None:
    """Refuse a frame selection that would select nothing or be ambiguous."""
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise NasError(f"invalid max_frames {max_frames!r}: expected a positive integer or None")
    if not isinstance(stride, int) or stride < 1:
        raise NasError(f"invalid stride {stride!r}: expected a positive integer (1 = every frame)")


class FrameSequence(ABC):
    """Frames of one continuous shot, in time order, decoded lazily each time it is iterated.

    `stride` keeps every n-th frame (starting with the first), then `max_frames` caps the count.
    """

    name: str
    has_labels: bool = False

    def __init__(self, name: str, *, max_frames: int | None = None, stride: int = 1) -> None:
        check_selection(max_frames, stride)
        self.name = name
        self.max_frames = max_frames
        self.stride = stride

    def selected(self, n_frames: int) -> range:
        """Indices kept out of `n_frames` by `stride` and `max_frames`."""
        return range(0, n_frames, self.stride)[: self.max_frames]

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]: ...

    def __len__(self) -> int:
        """How many frames iterating yields. This fallback decodes them all: sources that know
        their length without decoding (every built-in one) override it."""
        return sum(1 for _ in self)

    def frames_from(self, start: int) -> Iterator[Frame]:
        """The frames from position `start` of the selection on (0: all of them). This fallback
        decodes and drops the first `start`: sources that can seek override it."""
        return itertools.islice(iter(self), start, None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


@dataclass(frozen=True)
class Video:
    """What `open_video` returns: named sequences and, for labelled sources, the class names."""

    name: str  # the spec it was opened from, e.g. `sample:bikes`
    sequences: tuple[FrameSequence, ...]
    classes: tuple[str, ...] | None = None  # class name per label id; None: no labels

    @property
    def has_labels(self) -> bool:
        return any(sequence.has_labels for sequence in self.sequences)

    @property
    def num_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)

    def frames(self) -> Iterator[Frame]:
        """Every frame of every sequence, one sequence after the other."""
        for sequence in self.sequences:
            yield from sequence

    def frames_with_starts(self, skip: int = 0) -> Iterator[tuple[bool, Frame]]:
        """Every sequence's frames from its `skip`-th on, in turn, each with whether it starts
        its sequence (where a delta model needs a new key frame and time does not run on)."""
        for sequence in self.sequences:
            for n, frame in enumerate(sequence.frames_from(skip)):
                yield n == 0, frame
