"""Segmentation mIoU and pixel accuracy against ground-truth labels, accumulated over frames.

One confusion matrix (rows: label, columns: prediction) summed over every frame, pixels labelled
255 left out. Cityscapes convention: IoU_c = TP / (TP + FP + FN) from the summed matrix, and the
mean is over the classes with a non-zero union (present in the labels or the predictions); a class
absent from both is excluded, not counted as 0 or 1. On one frame without ignored pixels this is
`evaluators.agreement.miou` of the prediction and the labels.
"""

from __future__ import annotations

import torch

from evaluators.registry import EVALUATORS
from nas.core.errors import NasError
from nas.data.frames import IGNORE_INDEX


class SegmentationMetric:
    """Confusion matrix over frames; `compute()` gives mIoU and pixel accuracy."""

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise NasError(f"invalid num_classes {num_classes}: expected an integer >= 1")
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, labels: torch.Tensor) -> None:
        """Add frames: `pred` logits (N x) C x H x W or labels (N x) H x W; labels (N x) H x W."""
        pred = pred.detach()
        if pred.is_floating_point():
            if pred.dim() not in (3, 4) or pred.shape[-3] != self.num_classes:
                raise NasError(
                    f"logits of shape {tuple(pred.shape)}: expected (N x) {self.num_classes} x H x "
                    "W, or integer label maps (N x) H x W"
                )
            pred = pred.argmax(-3)
        if pred.shape != labels.shape:
            raise NasError(
                f"predictions of shape {tuple(pred.shape)} for labels of shape "
                f"{tuple(labels.shape)}: expected one label per pixel"
            )
        pred, labels = pred.flatten().long().cpu(), labels.flatten().long().cpu()
        keep = labels != IGNORE_INDEX
        pred, labels = pred[keep], labels[keep]
        for name, values in (("labels", labels), ("predictions", pred)):
            bad = values[(values < 0) | (values >= self.num_classes)]
            if len(bad):
                raise NasError(
                    f"{name} hold class {int(bad[0])}: expected classes 0..."
                    f"{self.num_classes - 1} (labels may also be {IGNORE_INDEX}, ignored)"
                )
        n = self.num_classes
        self.confusion += torch.bincount(labels * n + pred, minlength=n * n).view(n, n)

    def iou(self) -> torch.Tensor:
        """IoU per class, NaN for a class with zero union (absent from labels and predictions)."""
        confusion = self.confusion.double()
        inter = confusion.diag()
        union = confusion.sum(0) + confusion.sum(1) - inter
        return torch.where(union > 0, inter / union.clamp(min=1), torch.nan)

    def compute(self) -> dict[str, float]:
        """mIoU over the classes with non-zero union, and the fraction of pixels right."""
        total = int(self.confusion.sum())
        if total == 0:
            raise NasError("segmentation metric over no labelled pixel: every label was 255")
        iou = self.iou()
        return {
            "miou": float(iou[~iou.isnan()].mean()),
            "pixel_acc": float(self.confusion.diag().sum()) / total,
        }


@EVALUATORS.register("segmentation")
def segmentation(
    predictions: torch.Tensor, labels: torch.Tensor, *, num_classes: int
) -> dict[str, float]:
    """mIoU and pixel accuracy of predictions (logits or label maps) against labels, 255 ignored."""
    metric = SegmentationMetric(num_classes)
    metric.update(predictions, labels)
    return metric.compute()
