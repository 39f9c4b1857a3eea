"""Running a delta model on a stream of frames, as it runs in production.

On a key frame the teacher runs in full (every searched layer caches its input and output);
on the frames after it only the student blocks run on the layers' input changes. Key frames
come every `interval` frames, or, with an adaptive schedule, whenever the input has moved too
far from the last key frame (a scene cut, a fast pan), and at the latest every `max_interval`.
A student of the per-frame modes has no key frames: it runs alone on every frame.

`channels_last=True` runs the student and its frames in the channels-last (NHWC) layout, in
which CPU convolutions run much faster than in NCHW (`nas.core.layout`). A runner keeps the memory
that frames free for the next frames to reuse (`nas.delta.allocator`).

    runner = DeltaRunner(student, interval=3)
    for out in runner.run(frames):            # normalised N x 3 x H x W tensors, in order
        out.prediction, out.is_key, out.distance
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from nas.core.errors import NasError
from nas.core.layout import in_layout
from nas.delta.allocator import retain_freed_memory
from nas.delta.model import DeltaModel


@dataclass(frozen=True)
class Step:
    prediction: torch.Tensor
    is_key: bool
    distance: int  # frames since the key frame (0 on a key frame)
    change: float  # mean absolute input change since the key frame


class DeltaRunner:
    """Runs a student delta model frame by frame under `torch.inference_mode()`.

    `adaptive_threshold`: start a new key frame when the mean absolute change of the (normalised)
    input since the key frame exceeds it; `interval` is then the longest run between key frames.
    """

    def __init__(
        self,
        student: DeltaModel,
        *,
        interval: int,
        adaptive_threshold: float | None = None,
        channels_last: bool = False,
    ) -> None:
        if interval < 1:
            raise NasError(f"invalid key-frame interval {interval}: expected an integer >= 1")
        if adaptive_threshold is not None and adaptive_threshold <= 0:
            raise NasError(f"invalid adaptive threshold {adaptive_threshold}: expected > 0")
        retain_freed_memory()
        self.student = student.eval()
        self.channels_last = channels_last
        if channels_last:
            self.student.to(memory_format=torch.channels_last)
        self.interval = interval
        self.adaptive_threshold = adaptive_threshold
        self.key_input: torch.Tensor | None = None
        self.distance = 0

    def reset(self) -> None:
        self.key_input = None
        self.distance = 0
        self.student.clear()

    def _needs_key(self, x: torch.Tensor) -> tuple[bool, float]:
        if self.key_input is None or self.key_input.shape != x.shape:
            return True, 0.0
        if self.distance + 1 >= self.interval:
            return True, 0.0
        if self.adaptive_threshold is None:
            return False, 0.0
        change = float((x - self.key_input).abs().mean())
        return change > self.adaptive_threshold, change

    def step(self, x: torch.Tensor) -> Step:
        """One frame: the teacher on a key frame, the delta blocks otherwise."""
        x = in_layout(x, self.channels_last)
        with torch.inference_mode():
            if self.student.per_frame:  # per-frame modes: the student alone on every frame
                return Step(self.student.delta_frame(x), False, 0, 0.0)
            key, change = self._needs_key(x)
            if key:
                self.key_input = x
                self.distance = 0
                return Step(self.student.key_frame(x), True, 0, change)
            self.distance += 1
            return Step(self.student.delta_frame(x), False, self.distance, change)

    def run(self, frames: Iterable[torch.Tensor]) -> Iterator[Step]:
        self.reset()
        for x in frames:
            yield self.step(x)
