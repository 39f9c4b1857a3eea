"""The searched student's scores on the validation clips, recorded in its spec's metrics."""

from __future__ import annotations

import torch

from evaluators.stream import StreamScores
from nas.searching.supernet import Supernet
from nas.teachers import Teacher


def validate(net: Supernet, teacher: Teacher, batches, picks: dict[str, str]) -> dict[str, float]:
    """Agreement with the teacher and MAE of the delta model with `picks`, over validation clips;
    for a delta model also `val_error_vs_key` (`evaluators.ErrorVsKey`; 1: what it predicts
    does not reach the output) and `val_r` (`evaluators.Recovered`: the share of the teacher's
    change it recovers, 0 as the key frame repeated, 1 as the teacher)."""
    net.fix(picks)
    scores = StreamScores(teacher.output_kind)
    with torch.no_grad():
        for x_key, x_t, _ in batches:
            y_key = None if net.model.per_frame else net.model.key_frame(x_key).clone()
            y_teacher = net.model.teacher_frame(x_t)
            scores.update(net.model.delta_frame(x_t), y_teacher, y_key)
    net.fix(None)
    net.model.clear()
    found = scores.compute()
    metrics = {f"val_{k}": v for k, v in found.items() if k not in ("r", "error_vs_key")}
    if found["error_vs_key"] is not None:
        metrics["val_error_vs_key"] = found["error_vs_key"]
    if found["r"] is not None:
        metrics["val_r"] = found["r"]
    return metrics
