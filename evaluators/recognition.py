"""Clip-level recognition, TSN style: one prediction per clip from its frames' logits.

A clip's prediction is the consensus of its T frames: the frame logits (T x classes) averaged
over the clip, then the top-1 class of that mean (TSN's average consensus, Wang et al., ECCV
2016, which averages class scores, not votes: one confident frame can outweigh several
lukewarm ones). Over many clips:

- `clip_agreement`: fraction of clips whose student consensus class is the teacher's;
- `frame_agreement`: fraction of frames whose student top-1 class is the teacher's;
- with clip labels, `clip_accuracy` (student) and `teacher_clip_accuracy`: fraction of labelled
  clips whose consensus class is the label.

Ties in a top-1 go to the lowest class index (`torch.argmax`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from evaluators.registry import EVALUATORS
from nas.core.errors import NasError


def consensus(logits: torch.Tensor) -> torch.Tensor:
    """Clip logits from frame logits: (N x) T x C -> (N x) C, the mean over the T frames."""
    return logits.float().mean(dim=-2)


def _clips(logits: torch.Tensor, name: str) -> torch.Tensor:
    """(N x) T x C logits as N x T x C."""
    if logits.dim() == 2:
        logits = logits.unsqueeze(0)
    if logits.dim() != 3 or 0 in logits.shape:
        raise NasError(
            f"{name} logits of shape {tuple(logits.shape)}: expected per-frame logits of a clip, "
            "T x classes, or of N clips, N x T x classes"
        )
    return logits.detach()


def _labels(labels, clips: int, classes: int) -> torch.Tensor:
    labels = torch.as_tensor(labels).flatten().long().cpu()
    if len(labels) != clips:
        raise NasError(f"{len(labels)} labels for {clips} clips: expected one label per clip")
    bad = labels[(labels < 0) | (labels >= classes)]
    if len(bad):
        raise NasError(f"clip label {int(bad[0])}: expected classes 0...{classes - 1}")
    return labels


class ClipRecognition:
    """Clip and frame top-1 agreement with the teacher, and clip accuracy against labels;
    `update` per clip (or batch of clips), `compute` over everything seen."""

    def __init__(self) -> None:
        self.clips = 0
        self.clip_agree = 0
        self.frames = 0
        self.frame_agree = 0
        self.labelled = 0
        self.student_right = 0
        self.teacher_right = 0

    def update(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        labels: int | Sequence[int] | torch.Tensor | None = None,
    ) -> None:
        """Add clips: frame logits (N x) T x C of student and teacher, and optionally one class
        label per clip (an int for one clip)."""
        student, teacher = _clips(student, "student"), _clips(teacher, "teacher")
        if student.shape != teacher.shape:
            raise NasError(
                f"student logits {tuple(student.shape)} and teacher logits "
                f"{tuple(teacher.shape)}: expected one shape (clips x frames x classes)"
            )
        n, t, classes = student.shape
        student_clip = consensus(student).argmax(-1).cpu()
        teacher_clip = consensus(teacher).argmax(-1).cpu()
        self.clips += n
        self.clip_agree += int((student_clip == teacher_clip).sum())
        self.frames += n * t
        self.frame_agree += int((student.argmax(-1) == teacher.argmax(-1)).sum())
        if labels is not None:
            labels = _labels(labels, n, classes)
            self.labelled += n
            self.student_right += int((student_clip == labels).sum())
            self.teacher_right += int((teacher_clip == labels).sum())

    def compute(self) -> dict[str, float]:
        """Clip and frame agreement; clip accuracies when any clip had a label."""
        if not self.clips:
            raise NasError("clip recognition over no clips: call update() first")
        result = {
            "clip_agreement": self.clip_agree / self.clips,
            "frame_agreement": self.frame_agree / self.frames,
        }
        if self.labelled:
            result["clip_accuracy"] = self.student_right / self.labelled
            result["teacher_clip_accuracy"] = self.teacher_right / self.labelled
        return result


@EVALUATORS.register("recognition")
def recognition(
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    labels: int | Sequence[int] | torch.Tensor | None = None,
) -> dict[str, float]:
    """Clip (TSN average consensus) and frame top-1 agreement of frame logits (N x) T x C, and
    clip accuracy when `labels` (one per clip) are given."""
    metric = ClipRecognition()
    metric.update(student, teacher, labels)
    return metric.compute()
