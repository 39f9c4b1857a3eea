"""Distillation losses of the delta search: per-layer delta error, output agreement, task loss.

Each term is scale-free, so their weights mean the same for every teacher:
- layer loss: for each layer, the squared error of its predicted output on frame t against the
  teacher's, divided by the energy of the teacher's true change since the key frame (predicting
  "no change" scores 1), averaged over layers;
- output loss: the squared error of the output (logits or probabilities) against the teacher's
  on frame t, divided by the energy of the teacher's output change since the key frame;
- task loss: cross entropy against labels (255 = ignore) where the data has them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nas.delta.model import DeltaModel, resize
from nas.teachers.base import OutputKind

IGNORE = 255


FLOOR = 1e-3  # share of the target's energy below which a change counts as no change


def change_energy(target: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """How much the target moved since the key frame, floored at a small share of its energy:
    on (nearly) still frames a relative error would otherwise divide by almost nothing."""
    return (target - key).pow(2).mean() + FLOOR * target.pow(2).mean() + 1e-12


def layer_errors(model: DeltaModel, scales: tuple[float, ...] | None = None) -> torch.Tensor:
    """Per layer, ||pred - true||^2 / ||true - key||^2 (after a delta frame): one value a layer;
    with `scales`, divided by each layer's change energy measured over many batches instead
    (`LossScales`).

    Each layer's prediction here is made from the teacher's own input on frame t (teacher
    forcing), so every layer is judged on what it does itself: a layer upstream that predicts no
    change would otherwise silence every layer after it. Errors that compound from layer to
    layer are what the output loss sees.
    """
    terms = []
    for i, (_, conv) in enumerate(model.delta_convs()):
        forced = resize(conv.forced, conv.target.shape[-2:])  # resolution mode: to full size
        error = (forced - conv.target).pow(2).mean()
        energy = change_energy(conv.target, conv.z_key) if scales is None else scales[i]
        terms.append(error / energy)
    return torch.stack(terms)


def relative_error(block: torch.nn.Module, conv) -> torch.Tensor:
    """The layer error `block` would make in `conv`'s place on the cached frames (no grad)."""
    with torch.no_grad():
        teacher_input = resize(conv.target_input, conv.input_hw)
        forced = resize(conv.z_key + block(teacher_input - conv.a_key), conv.target.shape[-2:])
        error = (forced - conv.target).pow(2).mean()
        return error / change_energy(conv.target, conv.z_key)


def output_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    teacher_key: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """The output's squared error against the teacher's on frame t, divided by the energy of the
    teacher's output change since the key frame: like every layer term, reusing the key frame's
    prediction scores 1, so the output weighs as much as a layer however the teacher scales it.
    """
    error = (student - teacher).pow(2).mean()
    return error / (change_energy(teacher, teacher_key) if scale is None else scale)


@dataclass(frozen=True)
class LossScales:
    """The mean change energy of the output and of every layer, over many batches.

    Dividing a batch's error by its own change energy weighs every batch alike: a pair that
    barely changes, whose relative error is large whatever the student does, then steers the
    gradient as much as one that moves. R, the score the student is judged by, is a ratio of
    sums over all frames; dividing every batch by the same constant makes the loss its
    numerator, so the gradient serves R.
    """

    output: float
    layers: tuple[float, ...]


def measure_scales(model: DeltaModel, batches) -> LossScales:
    """`LossScales` from the teacher alone on `batches` (key frame, frame t), delta mode."""
    outputs, layers = [], []
    with torch.no_grad():
        for x_key, x_t, _ in batches:
            y_key = model.key_frame(x_key)
            y = model.teacher_frame(x_t)
            outputs.append((y - y_key).pow(2).mean())
            layers.append([(c.target - c.z_key).pow(2).mean() for _, c in model.delta_convs()])
    model.clear()
    output = torch.stack(outputs).mean()
    per_layer = torch.tensor(layers).mean(dim=0) if layers[0] else torch.zeros(0)
    return LossScales(float(output) + 1e-12, tuple(float(v) + 1e-12 for v in per_layer))


def batches_r(model: DeltaModel, batches) -> float:
    """R of `model` as it stands on (key frame, frame t) `batches`: 1 - sum|y - y_teacher|^2
    over sum|y_key - y_teacher|^2 (0: the key frame repeated, 1: the teacher; NaN: no change).
    The pooled output loss over the same batches is its numerator over its denominator."""
    error = change = 0.0
    try:
        with torch.no_grad():
            for x_key, x_t, *_ in batches:
                model.clear()
                y_key = model.key_frame(x_key)
                y_teacher = model.teacher_frame(x_t)
                y = model.delta_frame(x_t)
                error += float((y - y_teacher).pow(2).sum())
                change += float((y_key - y_teacher).pow(2).sum())
    finally:
        model.clear()
    return 1 - error / change if change > 0 else float("nan")


@dataclass(frozen=True)
class LossWeights:
    layer: float = 1.0
    output: float = 1.0
    task: float = 1.0

    @classmethod
    def of(cls, config) -> LossWeights:
        """The weights a `nas.spec.SearchConfig` (or anything with its three fields) gives."""
        return cls(config.layer_weight, config.output_weight, config.task_weight)


def delta_losses(
    model: DeltaModel,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
    kind: OutputKind,
    weights: LossWeights,
    scales: LossScales | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One delta-distillation forward on a clip batch: the weighted loss and its parts (each
    term divided by the batch's own change energy, or by `scales`).

    The teacher runs on the key frames (filling the caches) and on frames t (the targets), then
    the delta model on frames t.
    """
    x_key, x_t, labels = batch
    y_key = model.key_frame(x_key)
    y_teacher = model.teacher_frame(x_t)
    y = model.delta_frame(x_t)
    errors = layer_errors(model, None if scales is None else scales.layers)
    parts = {
        "layer_errors": errors,
        "layer_loss": errors.mean(),
        "output_loss": output_loss(y, y_teacher, y_key, None if scales is None else scales.output),
        "task_loss": task_loss(y, labels, kind) if labels is not None else y.new_zeros(()),
    }
    loss = (
        weights.layer * parts["layer_loss"]
        + weights.output * parts["output_loss"]
        + weights.task * parts["task_loss"]
    )
    return loss, parts


def frame_losses(
    model: DeltaModel,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
    kind: OutputKind,
    weights: LossWeights,
    *,
    tc_weight: float = 0.0,
    denormalize=None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward of the per-frame modes on a batch of frame pairs (a, b): the weighted loss.

    The teacher runs on frames b at full size (the targets, and every layer's input for the
    blockwise terms); the student on frames b (downscaled in resolution mode). Layer terms are
    blockwise: each block predicts its layer's output from the teacher's own input (at the
    student's size), compared after upsampling to the teacher's size. The output term compares
    the outputs, normalised by the teacher output's energy. With `tc_weight` > 0 the student also
    runs on frames a and the temporal-consistency loss asks its two predictions to agree once
    warped by optical flow (`denormalize` turns the inputs back into images for the flow).
    """
    x_a, x_b, labels = batch
    model.clear()  # nothing of the previous batch leaks into this one
    tc = None
    if tc_weight > 0:
        from nas.student.tc_loss import flow_pairs, tc_loss

        y_a = model.delta_frame(x_a)
    y_teacher = model.teacher_frame(x_b)
    y = model.delta_frame(x_b)
    errors = layer_errors(model)
    if tc_weight > 0:
        pair = flow_pairs(denormalize(x_a), denormalize(x_b))
        tc = tc_loss(y_a, y, pair, kind)
    parts = {
        "layer_errors": errors,
        "layer_loss": errors.mean(),
        "output_loss": output_loss(y, y_teacher, torch.zeros_like(y_teacher)),
        "task_loss": task_loss(y, labels, kind) if labels is not None else y.new_zeros(()),
        "tc_loss": tc if tc is not None else y.new_zeros(()),
    }
    loss = (
        weights.layer * parts["layer_loss"]
        + weights.output * parts["output_loss"]
        + weights.task * parts["task_loss"]
        + tc_weight * parts["tc_loss"]
    )
    return loss, parts


def student_losses(
    model: DeltaModel,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
    teacher,
    weights: LossWeights,
    *,
    tc_weight: float = 0.0,
    blockwise: bool = False,
    scales: LossScales | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of `model`'s mode: delta distillation, or the per-frame modes' (layer terms
    alone while `blockwise`, then end to end with temporal consistency)."""
    if not model.per_frame:
        return delta_losses(model, batch, teacher.output_kind, weights, scales)
    if blockwise:
        weights, tc_weight = LossWeights(weights.layer, 0.0, 0.0), 0.0
    return frame_losses(
        model,
        batch,
        teacher.output_kind,
        weights,
        tc_weight=tc_weight,
        denormalize=teacher.input_spec.denormalize,
    )


def task_loss(student: torch.Tensor, labels: torch.Tensor, kind: OutputKind) -> torch.Tensor:
    """Cross entropy against labels (class ids, 255 = ignore); BCE for probability maps."""
    if kind is OutputKind.PROB_MAP:
        valid = labels != IGNORE
        target = (labels[valid] > 0).float()
        return F.binary_cross_entropy(student[:, 0][valid].clamp(1e-6, 1 - 1e-6), target)
    return F.cross_entropy(student, labels.long(), ignore_index=IGNORE)
