"""Students and the cheap answers scored side by side on the same frames, by one measure.

Every column predicts each frame of each sequence (a sequence starts with a key frame): a delta
student run by `nas.DeltaRunner`, the key frame repeated every K' frames, the teacher on smaller
frames (`nas.baselines`). The teacher runs once per frame and is the reference. Per column:

- **R**: 1 - sum|y_hat - y|^2 / sum|y_ref - y|^2 over all frames, where y is the teacher's output
  and y_ref the key frame repeated every `interval` frames (the student's own K, aligned with its
  key frames; key frames add nothing to either sum). For a delta student this is exactly R on the
  frames between its key frames (0: the key frame repeated, 1: the teacher), and any other column
  is measured against the same denominator, so their R compare directly.
- **agreement** with the teacher over all frames (`evaluators.agreement`), and **TC**, temporal
  consistency (`evaluators.TemporalConsistency`, one optical flow per frame pair for all columns).

    table = compare(teacher, columns, sequences, interval=3)
    table["student"]["r"], table["key frame repeated, every 2"]["agreement"]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from evaluators import Recovered, TemporalConsistency, dis_flow
from evaluators.agreement import agreement
from nas.baselines import LowResTeacher
from nas.runner import DeltaRunner
from nas.supernet import DeltaModel, resize
from nas.teachers import OutputKind, Teacher


class Column:
    """One predictor: `reset()` at each sequence's start, `__call__(x, y_teacher)` per frame."""

    name: str

    def reset(self) -> None:
        pass

    def __call__(self, x: torch.Tensor, y_teacher: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Repeated(Column):
    """The teacher every `interval` frames, its output repeated in between."""

    def __init__(self, interval: int, name: str | None = None) -> None:
        self.interval = interval
        self.name = name or f"key frame repeated, every {interval}"
        self.reset()

    def reset(self) -> None:
        self.key: torch.Tensor | None = None
        self.distance = 0

    def __call__(self, x, y_teacher):
        if self.key is None or self.distance + 1 >= self.interval:
            self.key, self.distance = y_teacher, 0
        else:
            self.distance += 1
        return self.key


class Student(Column):
    """A delta (or per-frame) student as it runs in use; `size`: its input where smaller."""

    def __init__(
        self, name: str, model: DeltaModel, interval: int | None, size: tuple[int, int] | None
    ) -> None:
        self.name = name
        self.runner = DeltaRunner(model, interval=interval or 1)
        self.size = size

    def reset(self) -> None:
        self.runner.reset()

    def __call__(self, x, y_teacher):
        frame = x if self.size is None else resize(x, self.size)
        y = self.runner.step(frame).prediction
        return resize(y, tuple(y_teacher.shape[-2:]))


class LowRes(Column):
    def __init__(self, teacher: Teacher, size: tuple[int, int]) -> None:
        self.name = f"teacher at {size[0]}x{size[1]}"
        self.model = LowResTeacher(teacher, size)

    def __call__(self, x, y_teacher):
        return self.model(x)


@dataclass
class _Scores:
    recovered: Recovered
    tc: TemporalConsistency
    agreement: float = 0.0
    frames: int = 0


def compare(
    teacher: Teacher,
    columns: list[Column],
    sequences: Iterable[Iterable[torch.Tensor]],
    *,
    interval: int,
    device: torch.device,
    on_frame: Callable[[int], None] | None = None,
) -> dict[str, dict[str, float | None]]:
    """Score every column on every frame of `sequences` (each an iterable of uint8 3 x H x W
    frames at the teacher's size, in time order); see the module docstring. Returns, per column
    name, `r` (None: the teacher's output never moved), `agreement` and `tc`."""
    kind, classes = teacher.output_kind, teacher.num_classes
    reference = Repeated(interval)
    scores = {c.name: _Scores(Recovered(), TemporalConsistency(kind, classes)) for c in columns}
    seen = 0
    for frames in sequences:
        reference.reset()
        for column in columns:
            column.reset()
        previous = None
        for frame in frames:
            image = frame.cpu()
            x = teacher.input_spec.normalize(frame[None].to(device).float())
            with torch.inference_mode():
                y_teacher = teacher(x)
                y_ref = reference(x, y_teacher)
                outputs = {c.name: c(x, y_teacher) for c in columns}
            flow = None
            if previous is not None and kind is not OutputKind.IMAGE_LOGITS:
                flow = dis_flow(previous[0], image, preset=next(iter(scores.values())).tc.preset)
            for name, y in outputs.items():
                found = scores[name]
                found.recovered.update(y, y_ref, y_teacher)
                found.agreement += agreement(y, y_teacher, kind=kind)["agreement"]
                found.frames += 1
                if previous is not None:
                    found.tc.update(previous[1][name].cpu(), y.cpu(), previous[0], image, flow=flow)
            previous = (image, outputs)
            seen += 1
            if on_frame is not None:
                on_frame(seen)
    return {
        name: {
            "r": found.recovered.compute(),
            "agreement": found.agreement / found.frames if found.frames else None,
            "tc": found.tc.compute() if found.frames > 1 else None,
        }
        for name, found in scores.items()
    }
