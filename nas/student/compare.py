"""Students and the cheap answers scored side by side on the same frames, by one measure.

Every column predicts each frame of each sequence (a sequence starts with a key frame): a delta
student run by `nas.DeltaRunner`, the key frame repeated every K' frames, the teacher on smaller
frames (`nas.student.baselines`). The teacher runs once per frame and is the reference. Per column:

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

from evaluators.flow import dis_flow
from evaluators.stream import StreamScores
from evaluators.temporal import TemporalConsistency
from nas.delta.model import DeltaModel, resize
from nas.delta.runner import DeltaRunner
from nas.graph.layers import ConvLayer
from nas.spec import Spec
from nas.student.baselines import LowResTeacher, lowres_size, repeat_interval, uniform_spec
from nas.student.build import build_student
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
    """A delta (or per-frame) student as it runs in use, on the full-size frames (a
    resolution-mode student downscales them itself); `interval` None: no key frames."""

    def __init__(self, name: str, model: DeltaModel, interval: int | None) -> None:
        self.name = name
        self.runner = DeltaRunner(model, interval=interval or 1)

    def reset(self) -> None:
        self.runner.reset()

    def __call__(self, x, y_teacher):
        y = self.runner.step(x).prediction
        return resize(y, tuple(y_teacher.shape[-2:]))


class LowRes(Column):
    def __init__(self, teacher: Teacher, size: tuple[int, int]) -> None:
        self.name = f"teacher at {size[0]}x{size[1]}"
        self.model = LowResTeacher(teacher, size)

    def __call__(self, x, y_teacher):
        return self.model(x)


@dataclass
class _Scores:
    stream: StreamScores  # agreement, and R against the reference as the key frame
    tc: TemporalConsistency


def compare(
    teacher: Teacher,
    columns: list[Column],
    sequences: Iterable[Iterable[torch.Tensor]],
    *,
    interval: int,
    device: torch.device,
    on_frame: Callable[[int], None] | None = None,
    reference: Column | None = None,
) -> dict[str, dict[str, float | None]]:
    """Score every column on every frame of `sequences` (each an iterable of uint8 3 x H x W
    frames at the teacher's size, in time order); see the module docstring. Returns, per column
    name, `r` (None: the teacher's output never moved), `agreement` and `tc`.

    `reference`: the column R is measured against (R 0), by default the key frame repeated every
    `interval`; one of `columns` (the per-frame modes' low-res teacher) is run once."""
    kind, classes = teacher.output_kind, teacher.num_classes
    reference = reference or Repeated(interval)
    shared = any(reference is c for c in columns)
    scores = {
        c.name: _Scores(StreamScores(kind), TemporalConsistency(kind, classes)) for c in columns
    }
    seen = 0
    for frames in sequences:
        if not shared:
            reference.reset()
        for column in columns:
            column.reset()
        previous = None
        for frame in frames:
            image = frame.cpu()
            x = teacher.input_spec.normalize(frame[None].to(device).float())
            with torch.inference_mode():
                y_teacher = teacher(x)
                outputs = {c.name: c(x, y_teacher) for c in columns}
                y_ref = outputs[reference.name] if shared else reference(x, y_teacher)
            flow = None
            if previous is not None and kind is not OutputKind.IMAGE_LOGITS:
                flow = dis_flow(previous[0], image, preset=next(iter(scores.values())).tc.preset)
            for name, y in outputs.items():
                found = scores[name]
                found.stream.update(y, y_teacher, y_ref)
                if previous is not None:
                    found.tc.update(previous[1][name].cpu(), y.cpu(), previous[0], image, flow=flow)
            previous = (image, outputs)
            seen += 1
            if on_frame is not None:
                on_frame(seen)
    results = {}
    for name, found in scores.items():
        stream = found.stream.compute()
        results[name] = {
            "r": stream["r"],
            "agreement": stream.get("agreement"),
            "tc": found.tc.compute() if found.stream.updates > 1 else None,
        }
    return results


BASELINES = ("repeat", "lowres", "uniform")  # the cheap answers' keys in `baseline_metrics`
CHEAP_NAMES = {
    "repeat": "repeating the key frame every {repeat_interval:.0f} frames",
    "lowres": "the teacher at {lowres_h:.0f}x{lowres_w:.0f}",
    "uniform": "the uniform student (rank fraction {uniform_fraction:.3f})",
}


def baseline_columns(
    teacher: Teacher,
    spec: Spec,
    layers: list[ConvLayer],
    *,
    stats: dict | None,
    size: tuple[int, int],
    device: torch.device,
) -> tuple[dict[str, Column], dict[str, float]]:
    """The cheap answers at `spec`'s amortised cost, keyed as in `BASELINES` (those that exist
    at that cost), and what each is: K', the low-res height and width, the uniform rank
    fraction. `size`:
    the frames' (the teacher's) size; `layers`: the spec's conv layers."""
    cost = spec.totals.amortised_macs
    k = repeat_interval(spec.totals.teacher_macs, cost)
    columns: dict[str, Column] = {"repeat": Repeated(k)}
    about: dict[str, float] = {"repeat_interval": k}
    small = lowres_size(teacher, size, cost)
    if small is not None:
        columns["lowres"] = LowRes(teacher, small)
        about["lowres_h"], about["lowres_w"] = small
    uniform = uniform_spec(spec, layers)
    if uniform is not None:
        model = build_student(uniform, teacher, stats=stats).to(device)
        columns["uniform"] = Student("uniform student", model, spec.interval)
        about["uniform_fraction"] = uniform.metrics["uniform_fraction"]
    return columns, about


def baseline_metrics(
    teacher: Teacher,
    spec: Spec,
    student: DeltaModel,
    layers: list[ConvLayer],
    sequences: Iterable[Iterable[torch.Tensor]],
    *,
    stats: dict | None,
    size: tuple[int, int],
    device: torch.device,
) -> dict[str, float]:
    """The student and every cheap answer at its cost on held-out `sequences`, as flat metrics:
    `heldout_r`, `heldout_agreement`, and per baseline `baseline_<key>_r` and
    `baseline_<key>_agreement`, with what each baseline is (`repeat_interval`, `lowres_h` and
    `lowres_w`, `uniform_fraction`). R is against the key frame repeated every K of the
    student; in the per-frame modes, which have no key frames of their own, against the low-res
    teacher at the same cost (`r_reference` says which: 0 the repeated key frame, 1 the low-res
    teacher). All values are numbers."""
    columns, about = baseline_columns(teacher, spec, layers, stats=stats, size=size, device=device)
    mine = Student("student", student, spec.interval)
    reference = r_reference(spec, columns)
    found = compare(
        teacher,
        [mine, *columns.values()],
        sequences,
        interval=spec.interval or int(about["repeat_interval"]),
        device=device,
        reference=reference,
    )
    metrics: dict[str, float] = {}
    for key, column in (("heldout", mine), *((f"baseline_{k}", c) for k, c in columns.items())):
        for name in ("r", "agreement"):
            value = found[column.name][name]
            if value is not None:
                metrics[f"{key}_{name}"] = value
    about["r_reference"] = float(reference is not None)
    return metrics | {f"baseline_{k}": v for k, v in about.items()}


def r_reference(spec: Spec, columns: dict[str, Column]) -> Column | None:
    """The column R is measured against for `spec`: None (the key frame repeated every K) in
    delta mode; the low-res teacher at the same cost in the per-frame modes, where it is the
    cheap answer of their kind (0: it, 1: the teacher), if one fits the cost."""
    return columns.get("lowres") if spec.interval is None else None


# R within this of another's is a tie (an all-`zero` student repeats its key frame, whose output
# matches the teacher's only to float precision).
R_TIE = 1e-6


def beats(student: tuple[float, float | None], other: tuple[float, float | None]) -> bool:
    """Whether a student beats a cheap answer, each given as (agreement, R) on the same frames
    against the same reference (R None: the teacher's output never moved): better on one, worse
    on neither; a tie does not beat it."""
    (agreement, r), (other_agreement, other_r) = student, other
    wins, losses = agreement > other_agreement, agreement < other_agreement
    if r is not None and other_r is not None:
        wins, losses = wins or r - other_r > R_TIE, losses or r - other_r < -R_TIE
    return wins and not losses


def beaten_by(metrics: dict[str, float]) -> list[str]:
    """The cheap answers, in words, that the student does not beat (`beats`) at the same cost,
    from `baseline_metrics`' keys."""
    said = {k[len("baseline_") :]: v for k, v in metrics.items() if k.startswith("baseline_")}
    student = (metrics["heldout_agreement"], metrics.get("heldout_r"))
    return [
        CHEAP_NAMES[key].format(**said)
        for key in BASELINES
        if f"{key}_agreement" in said
        and not beats(student, (said[f"{key}_agreement"], said.get(f"{key}_r")))
    ]


def verdict(metrics: dict[str, float]) -> str:
    """One line: does the student beat every cheap answer at its cost? (`baseline_metrics`)"""
    lost = beaten_by(metrics)
    if not lost:
        return "the student beats every cheap answer at the same cost"
    return "the student does not beat, at the same cost: " + "; ".join(lost)
