"""Agreement of a student with its teacher on held-out sequences, as the student runs in use.

Each held-out sequence streams through a `DeltaRunner` (a key frame every K frames) while the
teacher sees every frame at full size. A student that runs on smaller frames gets them
downscaled from the same full-size frames, and its predictions are upsampled back before they
are compared. Only frames between key frames count: key frames are the teacher's own output.
Beside agreement and MAE, R: the share of the teacher's change since the key frame the student
recovers (`evaluators.Recovered`; 0: the key frame repeated, 1: the teacher; NaN without key
frames).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from evaluators.stream import StreamScores
from nas.delta.model import DeltaModel, resize
from nas.delta.runner import DeltaRunner
from nas.teachers import Teacher


def held_out_agreement(
    teacher: Teacher,
    student: DeltaModel,
    sequences: Iterable[Iterable[torch.Tensor]],
    *,
    interval: int,
    student_size: tuple[int, int],
    device: torch.device,
) -> dict[str, float]:
    """Mean agreement and MAE over the frames between key frames of every held-out sequence
    (each an iterable of uint8 3 x H x W frames at the teacher's full size, in time order, e.g.
    `VideoClips.span_frames()`); `student_size` is the student's input."""
    runner = DeltaRunner(student, interval=interval)
    scores = StreamScores(teacher.output_kind)
    for frames in sequences:
        runner.reset()  # a new key frame at each sequence's start
        y_key = None  # per-frame students have no key frame, and no R
        for frame in frames:
            x = teacher.input_spec.normalize(frame[None].to(device).float())
            with torch.inference_mode():
                y_teacher = teacher(x)
                step = runner.step(resize(x, student_size))
                if step.is_key:
                    y_key = y_teacher  # what repeating this key frame would give
                    continue
                y = resize(step.prediction, tuple(y_teacher.shape[-2:]))
            scores.update(y, y_teacher, y_key)
    runner.reset()
    if not scores.updates:
        return {"agreement": float("nan"), "mae": float("nan"), "r": float("nan"), "frames": 0.0}
    found = scores.compute()
    result = {k: v for k, v in found.items() if k not in ("r", "error_vs_key")}
    return result | {
        "r": float("nan") if found["r"] is None else found["r"],
        "frames": float(scores.updates),
    }
