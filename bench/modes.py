"""Which mode wins where? Delta, per-frame and resolution students side by side at one cost.

Teacher: the PP-OCRv4 text detector (real trained weights, shipped in rapidocr-onnxruntime), at
288x640. Video: the built-in street clip (`sample:bikes`, shop signs and number plates): the
students train on its first `--max-frames` frames (200) and are evaluated, frame by frame as in
use, on frames they never saw, from `--eval-start` (225: the clip's last shot, where the teacher
finds text in most frames; frames 100-225 hold almost none, and a frame where neither model
finds text scores a trivial 1).
Budgets: 1/2 of the teacher (delta mode with a key frame every 3 frames) and 1/3 (every 6).

For each budget, each method is searched (`--steps`), retrained briefly (`--train-steps`) and
evaluated with `nas eval`'s evaluator: amortised GFLOPs, agreement with the teacher over every
frame (IoU of the text maps at 0.3; delta key frames count, they are the teacher's own), temporal
consistency TC (the prediction of frame t+1 warped to frame t by DIS optical flow, IoU with frame
t's), and measured amortised CPU latency of student and teacher in the same loop.

- delta:          key frames every K, change students between them;
- perframe:       a student on every frame, blockwise then end-to-end distillation + TC loss;
- perframe no TC: the same without the temporal-consistency loss (a baseline);
- resolution s:   a student on frames downscaled by s, from the teacher at full size;
- teacher small:  the teacher itself on frames downscaled to the largest size within the budget,
                  no training (a baseline).

    python bench/modes.py [--steps 80] [--train-steps 60] [--max-frames 200] [--eval-start 225]
                          [--methods delta,perframe,resolution,teacher]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from nas.core.errors import NasError
from nas.core.sizes import parse_size, scaled_size
from nas.cost.budget import Budget, CostKind
from nas.cost.macs import count_macs
from nas.searching.options import SearchOptions
from nas.searching.pipeline import prepare, search
from nas.student.build import build_student
from nas.student.evaluate import evaluate
from nas.student.losses import LossWeights
from nas.student.train import TrainConfig, train_student
from nas.teachers import load_teacher

TEACHER = "ppocrv4_det"


def largest_scale(teacher, size: tuple[int, int], budget: float) -> float:
    """The largest input scale (in steps of 0.01) at which the whole teacher fits the budget."""
    for percent in range(100, 9, -1):
        student = scaled_size(size, percent / 100, teacher.input_spec.size_multiple)
        if count_macs(teacher.module, student) <= budget:
            return percent / 100
    raise NasError(f"no input scale fits {budget}")


def row_of(result) -> dict[str, float]:
    rows = {metric: (teacher, student) for metric, teacher, student, _ in result.rows}
    between = sum(r["frames"] for r in result.by_distance)
    agree_between = rows["agreement with the teacher (frames between key frames)"][1]
    agreement = (agree_between * between + result.key_frames) / result.frames
    return {
        "gflops": rows["GFLOPs amortised"][1],
        "agreement": agreement,
        "tc": rows["temporal consistency TC"][1],
        "tc_teacher": rows["temporal consistency TC"][0],
        "ms": rows["latency ms amortised"][1],
        "teacher_ms": rows["latency ms amortised"][0],
    }


def run_method(options: SearchOptions, *, train_steps: int, eval_start: int, eval_frames: int):
    """Search, retrain briefly, evaluate; returns the table row."""
    run = prepare(options)
    spec = search(options, prepared=run).spec
    student = build_student(spec, run.teacher, stats=run.stats)
    if train_steps > 0:
        with tempfile.TemporaryDirectory() as scratch:
            config = TrainConfig(
                steps=train_steps,
                lr=options.lr_weights,
                checkpoint_every=train_steps,
                seed=options.seed,
                weights=LossWeights.of(options),
                tc_weight=options.tc_weight if options.mode != "delta" else 0.0,
            )
            train_student(student, run.teacher, run.next_batch, out=Path(scratch), config=config)
    result = evaluate(
        spec,
        run.teacher,
        student.eval(),
        options.video,
        interval=spec.interval or 1,
        max_frames=eval_frames,
        device=torch.device("cpu"),
        skip_frames=eval_start,
        baselines=False,  # teacher and student only (bench/quality.py scores the baselines)
    )
    return row_of(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=80, help="search steps per method")
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--size", default="288x640")
    parser.add_argument("--video", default="sample:bikes")
    parser.add_argument("--eval-start", type=int, default=225)
    parser.add_argument("--eval-frames", type=int, default=25)
    parser.add_argument("--max-frames", type=int, default=200, help="training frames")
    parser.add_argument(
        "--methods",
        default="delta,perframe,resolution,teacher",
        help="which methods to run, by their first word (comma-separated)",
    )
    args = parser.parse_args()
    chosen = set(args.methods.split(","))
    size = parse_size(args.size)
    teacher = load_teacher(TEACHER)
    teacher_macs = count_macs(teacher.module, size)
    print(
        f"teacher {TEACHER} at {args.size} ({teacher_macs / 1e9:.3f} GFLOPs), trained on "
        f"{args.video}'s first {args.max_frames} frames, evaluated on its frames "
        f"{args.eval_start}..{args.eval_start + args.eval_frames - 1}, "
        f"{args.steps} search + {args.train_steps} training steps, CPU "
        f"{torch.get_num_threads()} threads"
    )
    header = (
        f"{'budget':>10} {'method':18} {'GFLOPs':>7} {'agreement':>9} {'TC':>7} "
        f"{'TC teacher':>10} {'ms':>7} {'teacher ms':>10} {'speed-up':>8} {'min':>5}"
    )
    print(header)
    print("-" * len(header))
    for fraction, interval in ((1 / 2, 3), (1 / 3, 6)):
        budget = Budget(CostKind.MACS, teacher_macs * fraction)
        small = largest_scale(teacher, size, budget.value)
        base = SearchOptions(
            teacher=TEACHER,
            budget=str(budget.value),
            video=args.video,
            input_size=args.size,
            max_frames=args.max_frames,
            keyframe_interval=interval,
            steps=args.steps,
            val_batches=4,
            device="cpu",
        )
        methods = {
            f"delta K={interval}": {"mode": "delta"},
            "perframe": {"mode": "perframe"},
            "perframe no TC": {"mode": "perframe", "tc_weight": 0.0},
            "resolution 0.75": {"mode": "resolution", "input_scale": 0.75},
            "resolution 0.5": {"mode": "resolution", "input_scale": 0.5},
            f"teacher small {small}": {
                "mode": "resolution",
                "input_scale": small,
                "budget": "1TFLOPs",  # every layer `full`: the teacher itself, downscaled
                "steps": 1,
                "train_steps": 0,
            },
        }
        for name, update in methods.items():
            if name.split()[0] not in chosen:
                continue
            train_steps = update.pop("train_steps", args.train_steps)
            with tempfile.TemporaryDirectory() as out:
                options = base.model_copy(update=update | {"out": out})
                started = time.perf_counter()
                try:
                    row = run_method(
                        options,
                        train_steps=train_steps,
                        eval_start=args.eval_start,
                        eval_frames=args.eval_frames,
                    )
                except NasError as exc:
                    print(f"{'1/' + str(round(1 / fraction)):>10} {name:18} {exc}")
                    continue
            minutes = (time.perf_counter() - started) / 60
            print(
                f"{'1/' + str(round(1 / fraction)):>10} {name:18} {row['gflops']:7.3f} "
                f"{row['agreement']:9.4f} {row['tc']:7.4f} {row['tc_teacher']:10.4f} "
                f"{row['ms']:7.1f} {row['teacher_ms']:10.1f} "
                f"{row['teacher_ms'] / row['ms']:8.2f} {minutes:5.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
