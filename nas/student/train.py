"""Retraining a student from its spec: the delta-distillation objective of the search.

Only the student blocks train (optionally also the teacher's own parameters, `finetune=True`),
on clips with key-frame distances 1..K-1, with Adam and a learning rate that warms up linearly
over the first `warmup` share of the steps and then follows a cosine down to `final_lr` of its
peak (`learning_rate`: a function of the step alone, so a resumed run follows the same curve),
the gradient's norm clipped to `clip_norm`. With `validate` (a function of the student
returning its validation R), every `eval_every` steps the log row carries the student's R on
held-out clips.

Every `checkpoint_every` steps the whole state (step, weights, optimiser, random generator) is
written atomically to `checkpoint.pt`; rerunning the same command resumes from it and ends
exactly where an uninterrupted run would have. The result is `student.pt`, a state dict that
loads with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nas.core.errors import NasError
from nas.core.io import atomic_write_bytes
from nas.data import VideoClips
from nas.delta.model import DeltaModel
from nas.spec import Mode, Spec
from nas.student.build import load_student_weights
from nas.student.holdout import held_out_agreement
from nas.student.losses import LossWeights, batches_r, measure_scales, student_losses
from nas.student.refit import RefitReport, refit_student
from nas.teachers.base import Teacher
from search_spaces import balance_factors

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "student.pt"


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    lr: float = 1e-4
    warmup: float = 0.05  # share of the steps the learning rate warms up over
    final_lr: float = 0.05  # the learning rate at the last step, as a share of `lr`
    checkpoint_every: int = 50
    finetune: bool = False  # also train the teacher's (non-searched) parameters
    # The gradient's norm is clipped to this (0: not clipped): on a pair whose output barely
    # changes, the relative output loss can jump by orders of magnitude (PP-OCRv4: 0.3 to 2e7
    # within 25 steps), and one such step undoes the rest.
    clip_norm: float = 1.0
    seed: int = 0
    weights: LossWeights = field(default_factory=LossWeights)
    tc_weight: float = 0.0  # temporal consistency (per-frame modes)
    blockwise_fraction: float = 0.5  # per-frame modes: the share of steps with layer terms only
    # Delta mode: divide every batch's errors by change energies measured once over
    # `SCALE_BATCHES` batches (`nas.student.losses.LossScales`), not by the batch's own.
    pooled: bool = True


@dataclass(frozen=True)
class TrainLog:
    step: int
    loss: float
    layer_loss: float
    output_loss: float
    task_loss: float
    lr: float = 0.0
    val_r: float | None = None  # R on held-out clips, on the steps it was measured


def learning_rate(config: TrainConfig, step: int) -> float:
    """The learning rate at `step`: linear warm-up, then a cosine from `lr` to `final_lr * lr`."""
    warmup = max(1, round(config.warmup * config.steps))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - warmup - 1)
    floor = config.final_lr * config.lr
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


CALIBRATION_BATCHES = 16  # training batches the closed-form calibration reads
CHECK_BATCHES = 8  # further batches on which a calibration must not lower the output's R
SCALE_BATCHES = 16  # training batches the pooled loss scales are measured on
VALIDATION_FRAMES = 30  # frames of each held-out sequence that the validation R reads


@dataclass(frozen=True)
class Calibration:
    """What `calibrate_student` did: the refit's per-layer report, the output's R on the check
    batches before and after it, and whether the refit was kept."""

    report: RefitReport
    r_before: float
    r_after: float
    kept: bool

    @property
    def summary(self) -> str:
        verdict = "kept" if self.kept else "undone: it lowered the output's R"
        if self.kept and self.report.undone:
            verdict += f" ({len(self.report.undone)} layers' refits undone one by one)"
        return (
            f"calibrated {len(self.report.layers)} low-rank blocks on the student's own inputs "
            f"in {self.report.seconds:.1f} s; R on {CHECK_BATCHES} further training batches "
            f"{self.r_before:.3f} -> {self.r_after:.3f}, {verdict}"
        )


def state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of `model`'s state dict that later training steps leave as it was."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def calibrate_student(
    student: DeltaModel,
    next_batch: Callable[[torch.Generator], tuple],
    *,
    seed: int = 0,
    batches: int = CALIBRATION_BATCHES,
    per_layer: bool = False,
) -> Calibration:
    """Calibrate the student's low-rank blocks on its own inputs (`nas.student.refit`), in place, on
    `batches` training batches drawn apart from the training's own draws; kept only where the
    output's R on `CHECK_BATCHES` further batches does not drop. Each layer's refit lowers that
    layer's error, which need not lower the output's: a layer whose small errors the network
    amplified before can amplify its new, different ones more.

    `per_layer`: each layer's refit is judged by the output's R on the check batches as soon as
    it is made, and undone alone where R drops (one R per refitted layer: slower), so the
    layers that help are kept where the whole refit would be undone."""
    generator = torch.Generator().manual_seed(seed + 7)
    fitted = [next_batch(generator) for _ in range(batches)]
    checks = [next_batch(generator) for _ in range(CHECK_BATCHES)]
    before = state_copy(student)
    r_before = batches_r(student, checks)
    judge = (lambda: batches_r(student, checks)) if per_layer else None
    report = refit_student(student, fitted, seed=seed, judge=judge)
    r_after = batches_r(student, checks)
    kept = not r_after < r_before  # NaN (no change at all): nothing to judge by, kept
    if not kept:
        student.load_state_dict(before)
    return Calibration(report, r_before, r_after, kept)


def calibrated_once(student: DeltaModel, next_batch: Callable, path: Path) -> DeltaModel:
    """`student` calibrated (`calibrate_student`) and its weights written to `path`, or, where
    `path` exists already, read back from it: a benchmark that stops resumes after this stage."""
    if path.is_file():
        return load_student_weights(student, path)
    calibrate_student(student, next_batch)
    save_weights(path, student)
    return student


def held_out_r(
    teacher: Teacher, clips: VideoClips, spec: Spec, *, device: torch.device
) -> Callable[[DeltaModel], float | None]:
    """`validate` for `train_student`: the mean over held-out sequences of the student's R on
    the first `VALIDATION_FRAMES` frames of each, run as in use (`nas.student.holdout`); None in the
    per-frame modes. Each clip weighs the same, whatever its change energy: pooled, a clip
    whose output barely moves (text that stands still) would count for nothing, and weights
    that lose most of its change could still be kept."""
    if spec.mode != Mode.DELTA:
        return lambda student: None
    size = tuple(spec.input_size)

    def validate(student: DeltaModel) -> float | None:
        found = []
        for frames in clips.span_frames():
            r = held_out_agreement(
                teacher,
                student,
                [itertools.islice(frames, VALIDATION_FRAMES)],
                interval=spec.keyframe_interval,
                student_size=size,
                device=device,
            )["r"]
            if not math.isnan(r):
                found.append(r)
        return sum(found) / len(found) if found else None

    return validate


def _save(path: Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def save_weights(path: Path, model: torch.nn.Module) -> None:
    """`model`'s state dict on the CPU, written atomically: what `nas train` leaves as
    `student.pt`, loadable with `nas.student.build.load_student_weights`."""
    _save(path, {k: v.detach().cpu() for k, v in model.state_dict().items()})


def trained_blocks(student: DeltaModel) -> list[torch.nn.Module]:
    """The blocks training changes: not `full` ones, whose layer reruns the teacher's conv at
    inference whatever the block holds (trained, the model trained would not be the one run)."""
    return [
        conv.block
        for _, conv in student.delta_convs()
        if getattr(type(conv.block), "delta_shortcut", None) != "conv"
    ]


def trainable(student: DeltaModel, finetune: bool) -> list[torch.nn.Parameter]:
    """The trained blocks' parameters (and, with `finetune`, every parameter)."""
    blocks = [p for block in trained_blocks(student) for p in block.parameters()]
    ids = {id(p) for p in blocks}
    for p in student.parameters():
        p.requires_grad_(finetune or id(p) in ids)
    return [p for p in student.parameters() if p.requires_grad]


def has_blocks_to_train(student: DeltaModel) -> bool:
    """Whether any student block has parameters to train (not for `zero`s and `full`s only)."""
    return any(True for block in trained_blocks(student) for _ in block.parameters())


def train_student(
    student: DeltaModel,
    teacher: Teacher,
    next_batch: Callable[[torch.Generator], tuple],
    *,
    out: Path,
    config: TrainConfig,
    on_step: Callable[[TrainLog], None] | None = None,
    validate: Callable[[DeltaModel], float | None] | None = None,
    eval_every: int = 50,
) -> Path:
    """Train (or resume training) `student`; returns the path of the final weights.
    `validate(student)`: its R on held-out clips, measured before the first step, every
    `eval_every` steps and after the last (the student is put back in training mode after it);
    the weights written are then those of the best validation R (the start included: training
    that does not raise it leaves the student as it came)."""
    out.mkdir(parents=True, exist_ok=True)
    params = trainable(student, config.finetune)
    if not params:
        raise NasError("the student has nothing to train: every layer of the spec is zero or full")
    for block in trained_blocks(student):  # the same map, factors of one scale (a resume
        balance_factors(block)  # loads its own, balanced, weights over these)
    optimiser = torch.optim.Adam(params, lr=config.lr)
    scales = None
    if config.pooled and not student.per_frame:  # drawn apart from the training's own draws
        draw = torch.Generator().manual_seed(config.seed + 11)
        scales = measure_scales(student, [next_batch(draw) for _ in range(SCALE_BATCHES)])
    generator = torch.Generator().manual_seed(config.seed)
    start = 0
    best: tuple[float, dict] | None = None  # the best validation R and its weights

    def validated() -> float | None:
        nonlocal best
        student.clear()
        student.eval()
        r = validate(student)
        student.clear()
        student.train()
        if r is not None and (best is None or r > best[0]):
            best = (r, state_copy(student))
        return r

    checkpoint = out / CHECKPOINT
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if state.get("config") != repr(config):
            raise NasError(
                f"{checkpoint} was written by a run with other settings: use another --out or "
                "delete the checkpoint to start over"
            )
        student.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        generator.set_state(state["generator"])
        start = int(state["step"])
        if state.get("best_r") is not None:
            best = (float(state["best_r"]), state["best_model"])
    student.train()
    if validate is not None and start == 0:
        validated()
    for step in range(start, config.steps):
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(config, step)
        loss, parts = student_losses(
            student,
            next_batch(generator),
            teacher,
            config.weights,
            tc_weight=config.tc_weight,
            blockwise=step < config.blockwise_fraction * config.steps,
            scales=scales,
        )
        if not torch.isfinite(loss):
            raise NasError(
                f"training diverged at step {step}: lower --lr; the last checkpoint is kept"
            )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if config.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, config.clip_norm)
        optimiser.step()
        done = step + 1
        val_r = None
        if validate is not None and (done % eval_every == 0 or done == config.steps):
            val_r = validated()
        if on_step is not None:
            values = {
                k: float(parts[k].detach()) for k in ("layer_loss", "output_loss", "task_loss")
            }
            lr = learning_rate(config, step)
            on_step(TrainLog(step, float(loss.detach()), **values, lr=lr, val_r=val_r))
        if done % config.checkpoint_every == 0 or done == config.steps:
            _save(
                checkpoint,
                {
                    "step": done,
                    "config": repr(config),
                    "model": student.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "generator": generator.get_state(),
                    "best_r": None if best is None else best[0],
                    "best_model": None if best is None else best[1],
                },
            )
    student.clear()
    if best is not None:
        student.load_state_dict(best[1])
    student.eval()
    weights = out / WEIGHTS
    save_weights(weights, student)
    return weights
