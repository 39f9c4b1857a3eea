"""R: the share of the teacher's change since the key frame that a student recovers.

Over the frames between key frames, with y the teacher's output on the frame, y_key the
teacher's output on its key frame and y_hat the student's output:

    R = 1 - sum |y_hat - y|^2 / sum |y_key - y|^2

0: no better than repeating the key frame's output; 1: the teacher's output exactly; below 0:
worse than repeating the key frame. The sums run over every element of every frame (so a frame
that changed a lot weighs more than one that barely moved), on the models' outputs as they
return them: probabilities for probability maps (`prob_map`), logits for per-pixel and per-image
class logits (`pixel_logits`, `image_logits`). Sums are kept in float64.

Any reference may stand in for y_key: with the output of another cheap answer (say, the key
frame repeated at the same cost) R is the share of *that* answer's error a student removes.
"""

from __future__ import annotations

import torch

from nas.core.errors import NasError


def squared_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """sum |a - b|^2 over every element, in float64."""
    if a.shape != b.shape:
        raise NasError(f"outputs of shapes {tuple(a.shape)} and {tuple(b.shape)}: expected one")
    return float((a.detach().double() - b.detach().double()).square().sum())


class Recovered:
    """`update` per frame (or batch of frames) between key frames, then `compute`: R, or None
    before any change (no frame seen, or the teacher's output never moved from the key frame's)."""

    def __init__(self) -> None:
        self.own = 0.0  # sum |y_hat - y|^2
        self.repeated = 0.0  # sum |y_key - y|^2
        self.frames = 0

    def update(self, student: torch.Tensor, key: torch.Tensor, teacher: torch.Tensor) -> None:
        """Add frames: the student's output, the key frame's (teacher) output, the teacher's."""
        self.own += squared_error(student, teacher)
        self.repeated += squared_error(key, teacher)
        self.frames += len(teacher)

    def compute(self) -> float | None:
        return 1.0 - self.own / self.repeated if self.repeated > 0 else None
