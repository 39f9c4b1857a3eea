"""A delta model's output error as a share of the error of repeating its key frame's output.

Over the frames between key frames: the mean absolute error of the student's output against the
teacher's, summed, over that of the key frame's output against the teacher's. 1: what the
student predicts does not reach its output (as if it repeated the key frame); 0: it gives the
teacher's output exactly. Unlike agreement, it cannot read 1.0 on empty decision maps.
"""

from __future__ import annotations

import torch


class ErrorVsKey:
    """`update` per frame between key frames, then `compute` (None before any change)."""

    def __init__(self) -> None:
        self.own = 0.0
        self.repeated = 0.0

    def update(self, student: torch.Tensor, key: torch.Tensor, teacher: torch.Tensor) -> None:
        """Add one frame: the student's output, its key frame's output, the teacher's output."""
        self.own += float((student - teacher).abs().mean())
        self.repeated += float((key - teacher).abs().mean())

    def compute(self) -> float | None:
        return self.own / self.repeated if self.repeated > 0 else None
