"""The scores of a student's stream of predictions against the teacher's, in one accumulator.

`update` once per frame (or batch of frames) between key frames, with the student's output, the
teacher's and, where the student has key frames, the key frame's (teacher) output; `compute`
returns the mean of each `evaluators.agreement` score (agreement, MAE, ...) over the updates,
and, given key frames, `r` (`evaluators.Recovered`: the share of the teacher's change
recovered) and `error_vs_key` (`evaluators.ErrorVsKey`). The search's validation, the study's
held-out score, the training's validation, the comparison with the cheap answers
(`nas.student.compare`, with the reference answer as the key frame) and `nas eval` (per distance
from the key frame, `evaluators.ByDistance`) all read a student through it, so each score means
the same thing everywhere.
"""

from __future__ import annotations

import torch

from evaluators.agreement import agreement
from evaluators.error_vs_key import ErrorVsKey
from evaluators.recovered import Recovered


class StreamScores:
    def __init__(self, kind, *, threshold: float = 0.3) -> None:
        self.kind = kind  # the teacher's `OutputKind`
        self.threshold = threshold  # a probability map's decision threshold
        self.sums: dict[str, float] = {}
        self.updates = 0
        self.recovered = Recovered()
        self.against_key = ErrorVsKey()

    def update(
        self, student: torch.Tensor, teacher: torch.Tensor, key: torch.Tensor | None = None
    ) -> None:
        for name, value in agreement(
            student, teacher, kind=self.kind, threshold=self.threshold
        ).items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.updates += 1
        if key is not None:
            self.recovered.update(student, key, teacher)
            self.against_key.update(student, key, teacher)

    def compute(self) -> dict[str, float | None]:
        """Each agreement score's mean (None before any update), `r` and `error_vs_key` (None
        without key frames, or where the teacher's output never moved)."""
        means = {name: total / self.updates for name, total in self.sums.items()}
        return means | {"r": self.recovered.compute(), "error_vs_key": self.against_key.compute()}
