"""Temporal consistency TC (Liu et al., ECCV 2020): do neighbouring predictions agree under flow?

For each pair of consecutive frames: flow from t to t+1 (DIS), the prediction of t+1 warped back
onto frame t (`evaluators.flow` convention, nearest-neighbour on label maps), then the mIoU of
the two label maps (`evaluators.agreement.miou`, over the classes present in either). TC is the
mean over pairs; 1 means every prediction moves exactly with the image.

- pixel logits (N x C x H x W): label maps are the argmax over classes;
- probability maps (N x 1 x H x W): label maps are `p > threshold`, and the mIoU is over both
  classes, positive and negative, as the segmentation mIoU would count a two-class problem (a
  pair where neither map has a positive pixel scores 1 on the negative class alone);
- image logits (N x C, one prediction per frame, recognition): a pair scores 1 when the top-1
  class of frame t+1 is the top-1 class of frame t and 0 otherwise, so TC is the fraction of
  consecutive pairs whose top-1 class is unchanged. No flow is estimated or needed (there is no
  pixel to move), and the frames may be left out.
Dense predictions must have the frames' size; the flow is not masked, as in the paper's metric.
"""

from __future__ import annotations

import torch

from evaluators.agreement import miou
from evaluators.flow import dis_flow, warp_nearest
from evaluators.registry import EVALUATORS
from nas.core.errors import NasError
from nas.teachers.base import OutputKind


def _batch(x: torch.Tensor, dims: int) -> torch.Tensor:
    return x.unsqueeze(0) if x.dim() == dims - 1 else x


class TemporalConsistency:
    """TC over frame pairs: `update` per pair (or batch of pairs), `compute` the mean."""

    def __init__(
        self, kind: OutputKind, num_classes: int, threshold: float = 0.3, *, preset: str = "medium"
    ) -> None:
        kind = OutputKind(kind)
        if kind is OutputKind.PIXEL_LOGITS and num_classes < 1:
            raise NasError(f"invalid num_classes {num_classes}: expected an integer >= 1")
        self.kind, self.threshold, self.preset = kind, threshold, preset
        self.num_classes = 2 if kind is OutputKind.PROB_MAP else num_classes
        self.scores: list[float] = []

    def labels(self, pred: torch.Tensor) -> torch.Tensor:
        """N x C x H x W predictions -> N x H x W label maps; N x C image logits -> N classes."""
        if self.kind is OutputKind.IMAGE_LOGITS:
            if pred.dim() != 2:
                raise NasError(
                    f"predictions of shape {tuple(pred.shape)}: expected N x C (image_logits)"
                )
            return pred.argmax(1)
        if pred.dim() != 4 or (self.kind is OutputKind.PROB_MAP and pred.shape[1] != 1):
            expected = "N x 1 x H x W" if self.kind is OutputKind.PROB_MAP else "N x C x H x W"
            raise NasError(
                f"predictions of shape {tuple(pred.shape)}: expected {expected} ({self.kind.value})"
            )
        if self.kind is OutputKind.PROB_MAP:
            return (pred[:, 0] > self.threshold).long()
        return pred.argmax(1)

    def update(
        self,
        pred_t: torch.Tensor,
        pred_t1: torch.Tensor,
        frame_t: torch.Tensor | None = None,
        frame_t1: torch.Tensor | None = None,
        *,
        flow: torch.Tensor | None = None,
    ) -> None:
        """Score pair(s) t, t+1: predictions (N x) C x H x W, frames (N x) 3 x H x W uint8.

        `flow` (N x) 2 x H x W from t to t+1, when already computed, skips the flow estimate.
        Image logits are (N x) C, and need neither frames nor flow.
        """
        if self.kind is OutputKind.IMAGE_LOGITS:
            self._update_top1(pred_t, pred_t1)
            return
        if frame_t is None or frame_t1 is None:
            raise NasError(
                f"temporal consistency of {self.kind.value} needs the frames t and t+1, for the "
                "optical flow between them"
            )
        pred_t, pred_t1 = _batch(pred_t.detach(), 4), _batch(pred_t1.detach(), 4)
        frame_t, frame_t1 = _batch(frame_t, 4), _batch(frame_t1, 4)
        labels_t, labels_t1 = self.labels(pred_t), self.labels(pred_t1)
        if (
            labels_t.shape != labels_t1.shape
            or frame_t.shape != frame_t1.shape
            or (len(frame_t), *frame_t.shape[-2:]) != labels_t.shape
        ):
            raise NasError(
                f"predictions of shapes {tuple(pred_t.shape)} and {tuple(pred_t1.shape)} for "
                f"frames {tuple(frame_t.shape)} and {tuple(frame_t1.shape)}: expected one "
                "prediction per frame, at the frames' size"
            )
        if flow is None:
            pairs = zip(frame_t, frame_t1, strict=True)
            flow = torch.stack([dis_flow(a, b, preset=self.preset) for a, b in pairs])
        warped = warp_nearest(labels_t1.cpu(), _batch(flow, 4).cpu())
        for a, b in zip(labels_t.cpu(), warped, strict=True):
            self.scores.append(miou(a, b, self.num_classes))

    def _update_top1(self, pred_t: torch.Tensor, pred_t1: torch.Tensor) -> None:
        """Image logits: 1 per pair whose top-1 class is unchanged, else 0."""
        if pred_t.shape != pred_t1.shape:
            raise NasError(
                f"predictions of shapes {tuple(pred_t.shape)} and {tuple(pred_t1.shape)}: "
                "expected one prediction of one shape per frame"
            )
        labels_t = self.labels(_batch(pred_t.detach(), 2))
        labels_t1 = self.labels(_batch(pred_t1.detach(), 2))
        self.scores.extend((labels_t == labels_t1).double().cpu().tolist())

    def compute(self) -> float:
        """Mean TC over the pairs seen so far."""
        if not self.scores:
            raise NasError("temporal consistency of no frame pairs: call update() first")
        return sum(self.scores) / len(self.scores)


@EVALUATORS.register("temporal_consistency")
def temporal_consistency(
    predictions: torch.Tensor,
    frames: torch.Tensor | None,
    *,
    kind: OutputKind,
    num_classes: int,
    threshold: float = 0.3,
) -> dict[str, float]:
    """TC of a whole sequence: predictions T x C x H x W of frames T x 3 x H x W (uint8), T >= 2.

    Image logits are T x C, and `frames` may be None for them (no flow is needed).
    """
    kind = OutputKind(kind)
    if frames is None and kind is not OutputKind.IMAGE_LOGITS:
        raise NasError(
            f"temporal consistency of {kind.value} needs the frames, for the optical flow "
            "between them"
        )
    n_frames = len(predictions) if frames is None else len(frames)
    if len(predictions) != n_frames or n_frames < 2:
        raise NasError(
            f"{len(predictions)} predictions for {n_frames} frames: temporal consistency needs "
            "one prediction per frame and at least 2 frames"
        )
    metric = TemporalConsistency(kind, num_classes, threshold)
    if frames is None:
        metric.update(predictions[:-1], predictions[1:])
    else:
        metric.update(predictions[:-1], predictions[1:], frames[:-1], frames[1:])
    return {"tc": metric.compute()}
