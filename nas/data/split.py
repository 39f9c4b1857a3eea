"""Train/validation split by time, never by random frames.

Neighbouring frames are nearly identical, so a random split would validate on frames the model
has seen. Instead the start of each sequence trains and its end validates, with `gap` frames
dropped in between so the two sides share no near-duplicate frames. A gap of the key-frame
interval K is a good default: no key/frame pair (at most K - 1 apart) could reach across it.

    split_by_time(100, 0.2, 4)  ->  TimeSplit(train=range(0, 76), val=range(80, 100))

The validation part is `round(n * val_fraction)` frames (at least one when the fraction is
above zero); the gap comes out of the training part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nas.core.errors import NasError


@dataclass(frozen=True)
class TimeSplit:
    """Frame index ranges of one sequence: training first, then validation."""

    train: range
    val: range


def split_by_time(n_frames: int, val_fraction: float, gap: int) -> TimeSplit:
    """Split `n_frames` in time order: the first part trains, the last validates, `gap` between."""
    if not 0 <= val_fraction < 1:
        raise NasError(f"invalid val_fraction {val_fraction}: expected 0 <= fraction < 1, e.g. 0.2")
    if gap < 0:
        raise NasError(f"invalid gap {gap}: expected a number of frames >= 0")
    n_val = max(1, round(n_frames * val_fraction)) if val_fraction > 0 else 0
    n_train = n_frames - n_val - (gap if n_val else 0)
    if n_train < 1:
        raise NasError(
            f"a sequence of {n_frames} frames is too short to hold out {val_fraction:g} of it "
            f"after a gap of {gap}: it needs at least {n_val + gap + 1} frames"
        )
    return TimeSplit(range(0, n_train), range(n_frames - n_val, n_frames))


def split_sequences(
    sequences: Sequence[range], val_fraction: float, gap: int
) -> tuple[tuple[range, ...], tuple[range, ...]]:
    """`split_by_time` on each sequence's index range (e.g. `FrameStack.sequences`).

    Returns the training ranges and the validation ranges, in the stack's own indices.
    """
    train, val = [], []
    for sequence in sequences:
        part = split_by_time(len(sequence), val_fraction, gap)
        train.append(range(sequence.start + part.train.start, sequence.start + part.train.stop))
        if part.val:
            val.append(range(sequence.start + part.val.start, sequence.start + part.val.stop))
    return tuple(train), tuple(val)
