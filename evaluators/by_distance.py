"""Error against distance from the key frame: how fast a delta model drifts from its teacher.

Each frame's student output is scored against the teacher's with `evaluators.agreement.agreement`
(agreement and MAE), grouped by the frame's distance from its key frame (`Step.distance` of the
runner, 0 on the key frame), and averaged per distance over frames.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch

from evaluators.agreement import agreement
from evaluators.registry import EVALUATORS
from nas.errors import NasError
from nas.teachers.base import OutputKind


class ByDistance:
    """Per-distance sums of agreement and MAE; `table()` the per-distance means."""

    def __init__(self, *, threshold: float = 0.3) -> None:
        self.threshold = threshold
        self._sums: dict[int, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])

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
        sums = self._sums[int(distance)]
        for i in range(len(student_out)):
            scores = agreement(
                student_out[i : i + 1], teacher_out[i : i + 1], kind=kind, threshold=self.threshold
            )
            sums[0] += 1
            sums[1] += scores["agreement"]
            sums[2] += scores["mae"]

    def table(self) -> list[dict]:
        """One row per distance, nearest first: distance, frames, mean agreement, mean MAE."""
        return [
            {"distance": d, "frames": n, "agreement": a / n, "mae": m / n}
            for d, (n, a, m) in sorted(self._sums.items())
        ]


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
