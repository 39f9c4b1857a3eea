"""Distillation losses of the delta search: per-layer delta error, output agreement, task loss.

Each term is scale-free, so their weights mean the same for every teacher:
- layer loss: for each layer, the squared error of its predicted output on frame t against the
  teacher's, divided by the energy of the teacher's true change since the key frame (predicting
  "no change" scores 1), averaged over layers;
- output loss: KL divergence of class distributions (pixel or image logits), or binary cross
  entropy of probability maps, against the teacher's prediction on frame t;
- task loss: cross entropy against labels (255 = ignore) where the data has them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nas.supernet import DeltaModel
from nas.teachers.base import OutputKind

IGNORE = 255


def layer_loss(model: DeltaModel, eps: float = 1e-8) -> torch.Tensor:
    """Mean over layers of ||pred - true||^2 / ||true - key||^2 (after a delta frame)."""
    terms = []
    for _, conv in model.delta_convs():
        error = (conv.prediction - conv.target).pow(2).mean()
        change = (conv.target - conv.z_key).pow(2).mean()
        terms.append(error / (change + eps))
    return torch.stack(terms).mean()


def output_loss(student: torch.Tensor, teacher: torch.Tensor, kind: OutputKind) -> torch.Tensor:
    """How far the student's prediction is from the teacher's, for the output kind."""
    if kind is OutputKind.PROB_MAP:
        return F.binary_cross_entropy(student.clamp(1e-6, 1 - 1e-6), teacher.clamp(0, 1))
    target = F.log_softmax(teacher, dim=1)
    return (
        F.kl_div(F.log_softmax(student, dim=1), target, log_target=True, reduction="none")
        .sum(1)
        .mean()
    )


@dataclass(frozen=True)
class LossWeights:
    layer: float = 1.0
    output: float = 1.0
    task: float = 1.0


def delta_losses(
    model: DeltaModel,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
    kind: OutputKind,
    weights: LossWeights,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One delta-distillation forward on a clip batch: the weighted loss and its parts.

    The teacher runs on the key frames (filling the caches) and on frames t (the targets), then
    the delta model on frames t.
    """
    x_key, x_t, labels = batch
    model.key_frame(x_key)
    y_teacher = model.teacher_frame(x_t)
    y = model.delta_frame(x_t)
    parts = {
        "layer_loss": layer_loss(model),
        "output_loss": output_loss(y, y_teacher, kind),
        "task_loss": task_loss(y, labels, kind) if labels is not None else y.new_zeros(()),
    }
    loss = (
        weights.layer * parts["layer_loss"]
        + weights.output * parts["output_loss"]
        + weights.task * parts["task_loss"]
    )
    return loss, parts


def task_loss(student: torch.Tensor, labels: torch.Tensor, kind: OutputKind) -> torch.Tensor:
    """Cross entropy against labels (class ids, 255 = ignore); BCE for probability maps."""
    if kind is OutputKind.PROB_MAP:
        valid = labels != IGNORE
        target = (labels[valid] > 0).float()
        return F.binary_cross_entropy(student[:, 0][valid].clamp(1e-6, 1 - 1e-6), target)
    return F.cross_entropy(student, labels.long(), ignore_index=IGNORE)
