"""How R grows with training, per learning rate: the numbers behind `nas train`'s defaults.

A student is searched once (`nas search` as a function, delta mode, key frame every K) and
calibrated on its own inputs (`nas.student.train.calibrate_student`); then, from those same weights,
it is trained with each peak learning rate (warm-up and cosine, `nas.student.train`), and its R on
the held-out frames of every built-in clip (`nas.student.train.held_out_r`, as `nas train` shows it)
is printed every `--every` steps beside the CPU minutes spent training so far.

    python bench/train_curve.py --teacher u2netp --input-size 192x256 --steps 100 --lrs 1e-4,1e-3

The search and calibration are kept in `--out`; a rerun only trains.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from nas.searching.options import SearchOptions
from nas.searching.pipeline import prepare, search
from nas.spec import load_spec
from nas.student.build import build_student, load_student_weights
from nas.student.losses import LossWeights
from nas.student.train import TrainConfig, calibrated_once, held_out_r, train_student


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="u2netp")
    parser.add_argument("--input-size", default="192x256")
    parser.add_argument("--budget", default="50%")
    parser.add_argument("-k", type=int, default=3)
    parser.add_argument("--search-steps", type=int, default=100)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--lrs", default="1e-4,1e-3")
    parser.add_argument("--layer-weight", type=float, default=1.0, help="of the layer terms")
    parser.add_argument(
        "--per-batch", action="store_true", help="normalise each batch by its own change"
    )
    parser.add_argument("--max-frames", type=int, default=150)
    parser.add_argument("--out", default="results/bench-train-curve")
    args = parser.parse_args()
    out = Path(args.out)
    options = SearchOptions(
        teacher=args.teacher,
        budget=args.budget,
        input_size=args.input_size,
        keyframe_interval=args.k,
        max_frames=args.max_frames,
        steps=args.search_steps,
        out=str(out / "search"),
    )
    run = prepare(options)
    if not (out / "search" / "spec.json").is_file():
        search(options, prepared=run)
    spec = load_spec(out / "search" / "spec.json")
    start = out / "calibrated.pt"
    calibrated_once(build_student(spec, run.teacher, stats=run.stats), run.next_batch, start)
    validate = held_out_r(run.teacher, run.val, spec, device=run.device)
    print(
        f"{args.teacher} at {args.input_size}, budget {args.budget}, K={args.k}, "
        f"{torch.get_num_threads()} threads; R on held-out frames of each built-in clip"
    )
    for lr in (float(v) for v in args.lrs.split(",")):
        model = load_student_weights(build_student(spec, run.teacher, stats=run.stats), start)
        print(
            f"lr {lr:g}, layer weight {args.layer_weight:g}, "
            f"{'per-batch' if args.per_batch else 'pooled'} loss: step 0 (calibrated): R "
            f"{validate(model):.3f}",
            flush=True,
        )
        how = "batch" if args.per_batch else "pooled"
        folder = out / f"train-lr{lr:g}-layer{args.layer_weight:g}-{how}"
        curve(model, run, lr, validate, folder, args)


def curve(model, run, lr: float, validate, folder: Path, args) -> None:
    """Train one copy at peak learning rate `lr`, printing R and training CPU-minutes."""
    began = time.process_time()
    spent = 0.0  # CPU seconds in validation, not counted as training

    def measure(student):
        nonlocal spent
        paused = time.process_time()
        r = validate(student)
        spent += time.process_time() - paused
        return r

    def show(row):
        if row.val_r is not None:
            minutes = (time.process_time() - began - spent) / 60
            print(
                f"lr {lr:g}: step {row.step + 1}: R {row.val_r:.3f} "
                f"({minutes:.1f} CPU-min of training)",
                flush=True,
            )

    train_student(
        model,
        run.teacher,
        run.next_batch,
        out=folder,
        config=TrainConfig(
            steps=args.steps,
            lr=lr,
            checkpoint_every=args.every,
            weights=LossWeights(layer=args.layer_weight),
            pooled=not args.per_batch,
        ),
        on_step=show,
        validate=measure,
        eval_every=args.every,
    )


if __name__ == "__main__":
    main()
