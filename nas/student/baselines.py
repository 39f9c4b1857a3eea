"""The cheap answers a student must beat, each at the student's own amortised cost.

A delta student earns its place only if it is closer to the teacher than what anyone could do
without a search, for the same multiply-adds per frame (DESIGN.md, "What a student must beat"):

- **the key frame repeated**: the teacher every K' = round(teacher / cost) frames, its output
  repeated in between (`repeat_interval`);
- **the teacher on smaller frames**: the largest size of the frames' aspect ratio, in the
  teacher's size multiple, at which the teacher costs no more (`lowres_size`), its output
  upsampled back (`LowResTeacher`);
- **the uniform student**: the same delta model with one rank fraction for every dense conv
  (grouped convs kept `full`), the largest fraction that fits the cost, from the data-aware
  start (`uniform_spec`).

All three are plain values or small wrappers; `nas eval` and `bench/quality.py` score them beside
the student on the same frames.
"""

from __future__ import annotations

import math

import torch

from nas.cost.amortised import amortised
from nas.cost.macs import count_macs
from nas.delta.model import resize, resize_input
from nas.graph.layers import ConvLayer
from nas.spec import Spec, SpecLayer, Totals
from nas.teachers import Teacher
from search_spaces import candidate_macs, candidate_params, max_rank


def repeat_interval(teacher_macs: float, amortised_macs: float) -> int:
    """K' of the key frame repeated at an amortised cost: the teacher's cost over K' is nearest
    to it, and K' >= 1 (a student costing as much as the teacher gets the teacher itself)."""
    return max(1, round(teacher_macs / amortised_macs)) if amortised_macs > 0 else 1


def lowres_size(teacher: Teacher, size: tuple[int, int], macs: float) -> tuple[int, int] | None:
    """The largest frame size of `size`'s aspect ratio, both sides multiples of the teacher's
    size multiple, at which the teacher costs at most `macs` multiply-adds (None: not even the
    smallest such size fits). Found by bisection on the height, counting each size exactly."""
    multiple = teacher.input_spec.size_multiple
    height, width = size

    def at(steps: int) -> tuple[int, int]:
        h = steps * multiple
        w = max(multiple, round(h * width / height / multiple) * multiple)
        return h, w

    def cost(steps: int) -> int:
        return count_macs(teacher.module, at(steps))

    low, high = 1, height // multiple  # cost(high) is the teacher's at full size
    if cost(low) > macs:
        return None
    if cost(high) <= macs:
        return at(high)
    while high - low > 1:  # cost(low) <= macs < cost(high)
        middle = (low + high) // 2
        if cost(middle) <= macs:
            low = middle
        else:
            high = middle
    return at(low)


class LowResTeacher:
    """The teacher on frames downscaled to `size` (antialiased, as an image), its output
    upsampled back to the frame's size: `__call__(x)` on full-size normalised frames."""

    def __init__(self, teacher: Teacher, size: tuple[int, int]) -> None:
        self.teacher = teacher
        self.size = tuple(size)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self.teacher(resize_input(x, self.size))
        return resize(y, tuple(x.shape[-2:]))


def uniform_candidate(layer: ConvLayer, fraction: float) -> str:
    """The uniform student's block at `layer`: `lowrank` at `fraction` of the exact rank, at
    least 1 (grouped convs, which have no low-rank form here, stay `full`)."""
    if layer.groups != 1:
        return "full"
    return f"lowrank_r{max(1, math.floor(fraction * max_rank('lowrank', layer)))}"


def _uniform_cost(layers: list[ConvLayer], fraction: float) -> int:
    return sum(
        candidate_macs(uniform_candidate(layer, fraction), layer) * layer.calls for layer in layers
    )


def uniform_spec(spec: Spec, layers: list[ConvLayer]) -> Spec | None:
    """`spec` with every layer replaced by the uniform student's block, at the largest rank
    fraction whose amortised cost is at most the spec's (None: not even rank 1 on every dense
    conv, beside the grouped convs kept `full`, fits). `layers`: the spec's conv layers at its
    input size. What a delta frame costs outside the searched convs is the spec's own."""
    other_macs = spec.totals.delta_frame_macs - sum(layer.macs for layer in spec.layers)
    interval = spec.interval
    target = spec.totals.amortised_macs
    keyframe = spec.totals.teacher_macs

    def fits(fraction: float) -> bool:
        return amortised(keyframe, other_macs + _uniform_cost(layers, fraction), interval) <= target

    low, high = 0.0, 1.0
    if not fits(1e-9):
        return None
    if fits(high):
        low = high
    for _ in range(40):  # the cost is a step function of the fraction: bisect to its edge
        if high - low < 1e-6:
            break
        middle = (low + high) / 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    fraction = max(low, 1e-9)
    by_path = {layer.path: layer for layer in layers}
    new_layers = []
    for old in spec.layers:
        layer = by_path[old.path]
        name = uniform_candidate(layer, fraction)
        new_layers.append(
            SpecLayer(
                path=old.path,
                shape=old.shape,
                candidate=name,
                macs=candidate_macs(name, layer) * layer.calls,
                params=candidate_params(name, layer),
                calls=layer.calls,
            )
        )
    delta = int(other_macs + sum(layer.macs for layer in new_layers))
    totals = Totals(
        teacher_macs=spec.totals.teacher_macs,
        delta_frame_macs=delta,
        amortised_macs=amortised(keyframe, delta, interval),
        student_params=sum(layer.params for layer in new_layers),
    )
    metrics = {"uniform_fraction": fraction}
    return spec.model_copy(update={"layers": new_layers, "totals": totals, "metrics": metrics})
