"""Agreement of a student's predictions with the teacher's (no labels needed).

- class logits per pixel: mIoU of the two argmax maps, over the classes present in either;
- one-channel probability maps: IoU of the maps thresholded at `threshold`;
- class logits per image: top-1 agreement;
plus the mean absolute error of the outputs (probabilities, or softmax probabilities).
"""

from __future__ import annotations

import torch

from evaluators.registry import EVALUATORS
from nas.teachers.base import OutputKind


def miou(a: torch.Tensor, b: torch.Tensor, num_classes: int) -> float:
    """Mean IoU of two label maps over the classes that occur in either."""
    a, b = a.flatten().long(), b.flatten().long()
    both = torch.bincount(a * num_classes + b, minlength=num_classes * num_classes)
    confusion = both.view(num_classes, num_classes).double()
    inter = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean()) if present.any() else 1.0


@EVALUATORS.register("agreement")
def agreement(
    student: torch.Tensor, teacher: torch.Tensor, *, kind: OutputKind, threshold: float = 0.3
) -> dict[str, float]:
    """Agreement with the teacher (1 = identical decisions) and mean absolute error."""
    student, teacher = student.detach().float(), teacher.detach().float()
    if kind is OutputKind.PROB_MAP:
        s, t = student > threshold, teacher > threshold
        union = (s | t).sum()
        score = float((s & t).sum() / union) if union > 0 else 1.0
        return {"agreement": score, "mae": float((student - teacher).abs().mean())}
    ps, pt = student.softmax(1), teacher.softmax(1)
    mae = float((ps - pt).abs().mean())
    # Decisions from the logits: probabilities of nearly equal logits tie in float32.
    a, b = student.argmax(1), teacher.argmax(1)
    if kind is OutputKind.IMAGE_LOGITS:
        return {"agreement": float((a == b).double().mean()), "mae": mae}
    return {"agreement": miou(a, b, student.shape[1]), "mae": mae}
