"""Error against distance from the key frame: how fast a delta model drifts from its teacher.

Each frame's student output is scored against the teacher's (`evaluators.StreamScores`:
agreement and MAE), grouped by the frame's distance from its key frame (`Step.distance` of the
runner, 0 on the key frame), and averaged per distance over frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from evaluators.registry import EVALUATORS
from evaluators.stream import StreamScores
from nas.core.errors import NasError
from nas.teachers.base import OutputKind


class ByDistance:
    """A `StreamScores` per distance; `table()` the per-distance means."""

    def __init__(self, *, threshold: float = 0.3) -> None:
        self.threshold = threshold
        self._by: dict[int, StreamScores] = {}

    def update(
        self, distance: int, student_out: torch.Tensor, teacher_out: torch.Tensor, kind: OutputKind
    ) -> None:
        """Add N frames at `distance` (outputs N x ..., as returned), each scored on its own."""
        if distance < 0:
            raise NasError(f"invalid distance {distance} from the key frame: expected >= 0")
        if student_out.shape != teacher_out.shape:
            raise NasError(
                f"student output {tuple(student_out.shape)} and teacher output "
                f"{tuple(teacher_out.shape)}: expected one shape"
            )
        scores = self._by.get(int(distance))
        if scores is None:
            scores = self._by[int(distance)] = StreamScores(kind, threshold=self.threshold)
        for i in range(len(student_out)):
            scores.update(student_out[i : i + 1], teacher_out[i : i + 1])

    def table(self) -> list[dict]:
        """One row per distance, nearest first: distance, frames, mean agreement, mean MAE."""
        rows = []
        for d, scores in sorted(self._by.items()):
            found = scores.compute()
            rows.append(
                {"distance": d, "frames": scores.updates, "agreement": found["agreement"],
                 "mae": found["mae"]}
            )  # fmt: skip
        return rows


@EVALUATORS.register("by_distance")
def by_distance(
    student: torch.Tensor,
    teacher: torch.Tensor,
    distances: Sequence[int],
    *,
    kind: OutputKind,
    threshold: float = 0.3,
) -> dict[str, float]:
    """Agreement and MAE per distance of T frames' outputs: `agreement_d1`, `mae_d1`, ..."""
    if not len(student) == len(teacher) == len(distances):
        raise NasError(
            f"{len(student)} student outputs, {len(teacher)} teacher outputs and "
            f"{len(distances)} distances: expected one of each per frame"
        )
    metric = ByDistance(threshold=threshold)
    for i, distance in enumerate(distances):
        metric.update(int(distance), student[i : i + 1], teacher[i : i + 1], kind)
    result: dict[str, float] = {}
    for row in metric.table():
        result[f"agreement_d{row['distance']}"] = row["agreement"]
        result[f"mae_d{row['distance']}"] = row["mae"]
    return result
