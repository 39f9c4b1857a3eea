"""Two-frame clips for delta distillation: a key frame and a later frame t of the same range.

With key-frame interval K, frame t is predicted from key frame k with 1 <= t - k <= K - 1.
Training draws such pairs uniformly at random (with replacement) through an explicit
`torch.Generator`; validation enumerates them exactly as inference would meet them: key frames
at every K-th frame of each range (its first frame, then K, 2K, ... after it) and every frame
between one key and the next, so validation metrics are reproducible.

    sampler = ClipSampler(stack.frames, interval=3, ranges=train_ranges, labels=stack.labels)
    batch = sampler.sample(8, generator=torch.Generator().manual_seed(0))
    for batch in ClipSampler(stack.frames, interval=3, ranges=val_ranges).validation_batches(8):
        ...

Pairs never leave their range: pass the ranges of one split (`split_sequences`) and no clip
crosses a sequence or split boundary.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from nas.core.errors import NasError
from nas.data.frames import IGNORE_INDEX


@dataclass(frozen=True, eq=False)
class ClipBatch:
    """B key/frame pairs gathered from memory."""

    key: torch.Tensor  # uint8, B x 3 x H x W: the key frames
    frame: torch.Tensor  # uint8, B x 3 x H x W: the frames t
    distance: torch.Tensor  # int64, B: t - key, in 1..K-1
    labels: torch.Tensor | None  # int64, B x H x W: labels of frame t, 255 = ignore
    labelled: torch.Tensor | None  # bool, B: whether frame t has any labelled pixel
    key_index: torch.Tensor  # int64, B: index of the key frame in the frame tensor
    t_index: torch.Tensor  # int64, B: index of frame t


def clip_pairs(ranges: Sequence[range], interval: int, *, key_every: int = 1) -> torch.Tensor:
    """All (key, t) index pairs, P x 2, with keys at every `key_every`-th frame of each range."""
    pairs = [
        (key, t)
        for r in ranges
        for key in range(r.start, r.stop, key_every)
        for t in range(key + 1, min(key + interval, r.stop))
    ]
    return torch.tensor(pairs, dtype=torch.int64).reshape(-1, 2)


class ClipSampler:
    """Key/frame pairs from frames in memory (T x 3 x H x W uint8), inside the given ranges.

    `ranges` default to the whole tensor as one sequence; `labels` (T x H x W, 255 = ignore)
    are optional. Holds no random state: every random draw uses the generator passed in.
    """

    def __init__(
        self,
        frames: torch.Tensor,
        *,
        interval: int,
        ranges: Sequence[range] | None = None,
        labels: torch.Tensor | None = None,
    ) -> None:
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise NasError(f"frames of shape {tuple(frames.shape)}: expected T x 3 x H x W")
        if not isinstance(interval, int) or interval < 2:
            raise NasError(
                f"invalid key-frame interval {interval!r}: expected an integer >= 2 (a key frame "
                "and at least one frame predicted from it)"
            )
        n = int(frames.shape[0])
        ranges = (range(n),) if ranges is None else tuple(ranges)
        for r in ranges:
            if r.step != 1 or r.start < 0 or r.stop > n:
                raise NasError(
                    f"frame range {r} does not fit {n} frames: expected contiguous ranges "
                    f"inside range(0, {n})"
                )
        if labels is not None and (labels.dim() != 3 or labels.shape[0] != n):
            raise NasError(
                f"labels of shape {tuple(labels.shape)} do not match {n} frames: expected T x H x W"
            )
        self.frames, self.labels, self.interval, self.ranges = frames, labels, interval, ranges
        self.pairs = clip_pairs(ranges, interval)
        if len(self.pairs) == 0:
            raise NasError(
                f"no clip fits in frame ranges {list(ranges)}: each range needs at least 2 frames"
            )
        self._labelled = None if labels is None else (labels != IGNORE_INDEX).flatten(1).any(dim=1)

    def sample(self, batch_size: int, *, generator: torch.Generator) -> ClipBatch:
        """`batch_size` pairs drawn uniformly from all valid pairs, with replacement."""
        if batch_size < 1:
            raise NasError(f"invalid batch size {batch_size}: expected a positive integer")
        rows = torch.randint(len(self.pairs), (batch_size,), generator=generator)
        return self.batch(self.pairs[rows])

    def validation_pairs(self) -> torch.Tensor:
        """Every (key, t) with keys at each K-th frame of each range: a fixed P x 2 tensor."""
        return clip_pairs(self.ranges, self.interval, key_every=self.interval)

    def validation_batches(self, batch_size: int) -> Iterator[ClipBatch]:
        """`validation_pairs()` in order, `batch_size` at a time (the last batch may be smaller)."""
        if batch_size < 1:
            raise NasError(f"invalid batch size {batch_size}: expected a positive integer")
        pairs = self.validation_pairs()
        for start in range(0, len(pairs), batch_size):
            yield self.batch(pairs[start : start + batch_size])

    def batch(self, pairs: torch.Tensor) -> ClipBatch:
        """Gather the frames (and labels) of the given P x 2 (key, t) pairs."""
        key_index, t_index = pairs[:, 0].contiguous(), pairs[:, 1].contiguous()
        labels = labelled = None
        if self.labels is not None:
            labels = self.labels[t_index].long()
            labelled = self._labelled[t_index]
        return ClipBatch(
            key=self.frames[key_index],
            frame=self.frames[t_index],
            distance=t_index - key_index,
            labels=labels,
            labelled=labelled,
            key_index=key_index,
            t_index=t_index,
        )
