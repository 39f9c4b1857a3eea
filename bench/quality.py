"""Is the searched student worth deploying? It against every cheap answer at the same cost.

For each trained teacher and each share of its amortised multiply-adds, on the built-in clips:

1. `nas search` (delta mode, key frame every K) on the first `--max-frames` frames of every clip;
2. the searched student, built from its spec with the data-aware start (`nas.build_student`);
3. the same, calibrated on its own inputs (`nas.student.refit.refit_student`, closed form);
4. the same, then trained (`nas.student.train.train_student`, the default recipe), with its CPU
minutes;

scored beside the cheap answers at the same amortised cost (`nas.student.baselines`): the key frame
repeated every K' frames, the teacher on smaller frames, and the uniform student (one rank fraction
for every dense conv, data-aware start, untrained). Scores are `nas.student.compare`'s on the
validation frames of each clip (the last 20% of its first `--max-frames`, never trained on): R (0:
the key frame repeated every K, 1: the teacher; every column against the same denominator),
agreement with the teacher over all frames, and temporal consistency TC.

`--mode perframe` or `resolution` runs the per-frame modes instead (no key frames, nothing to
calibrate: the searched and trained rows, with the same baselines; R on every frame, against
the teacher on smaller frames at the same cost, the cheap answer of their kind: 0 is it, 1 the
teacher).

Every stage is saved in `--out` (the search's run folder, the calibrated weights, the training
checkpoint, each clip's scores) and skipped when found, so an interrupted run resumes:

    python bench/quality.py                                  # every real teacher, 1/2 and 1/3
    python bench/quality.py --teachers u2netp:320x320 --fractions 0.5
    python bench/quality.py --teachers ppocrv4_det:480x640 --fractions 0.5 -k 6 --spec S.json \
        --out results/bench-quality-variant      # a spec made elsewhere (or by hand), scored alike
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from nas.core.io import atomic_write_text
from nas.data import videos_or_default
from nas.searching.options import SearchOptions
from nas.searching.pipeline import prepare, search
from nas.spec import load_spec
from nas.student.build import build_student, load_student_weights
from nas.student.compare import BASELINES, Student, baseline_columns, compare, r_reference
from nas.student.train import (
    TrainConfig,
    calibrate_student,
    held_out_r,
    save_weights,
    train_student,
)
from nas.study.hpo import Objective, StudyOptions

TEACHERS = "ppocrv4_det:480x640,u2netp:320x320,selfie:256x256"


def _timed(folder: Path, name: str, work) -> float:
    """Run `work()` unless `name` was done before; its minutes (recorded, or read back)."""
    record = folder / f"{name}.minutes"
    if record.is_file():
        return float(record.read_text())
    start = time.process_time()
    work()
    minutes = (time.process_time() - start) / 60
    atomic_write_text(record, f"{minutes:.3f}\n")
    return minutes


def point(teacher: str, size: str, fraction: float, args) -> list[dict]:
    """Every row of one teacher at one cost, one row per clip and column."""
    delta = args.mode == "delta"
    options = SearchOptions(
        teacher=teacher,
        budget=f"{fraction * 100:.6g}%",
        input_size=size,
        mode=args.mode,
        input_scale=args.input_scale if args.mode == "resolution" else 1.0,
        max_frames=args.max_frames,
        steps=args.steps,
        seed=args.seed,
    )
    k = args.k
    if delta and k == "auto":  # as `nas search` chooses it (`nas.searching.interval`)
        screen = Objective(StudyOptions(search=options, keyframe_interval_auto=True)).screen()
        print(f"[{teacher} {size} {fraction:.3g}] {screen.summary()}", flush=True)
        k = screen.chosen
    interval = int(k) if delta else None
    how = f"k{interval}" if delta else args.mode
    folder = Path(args.out) / f"{teacher}-{size}-{round(fraction * 100)}pct-{how}"
    folder.mkdir(parents=True, exist_ok=True)
    options = options.model_copy(
        update={"keyframe_interval": interval or 3, "out": str(folder / "search")}
    )
    run = prepare(options)
    spec_path = folder / "search" / "spec.json"
    if args.spec and not spec_path.is_file():  # a given spec in place of the search
        spec_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(spec_path, load_spec(args.spec).to_json())
        atomic_write_text(folder / "search.minutes", "0\n")
    if not spec_path.is_file():
        print(f"[{folder.name}] searching ({args.steps} steps)", flush=True)
    search_minutes = _timed(folder, "search", lambda: search(options, prepared=run))
    spec = load_spec(spec_path)
    device = run.device

    def student(weights: Path | None = None):
        built = build_student(spec, run.teacher, stats=run.stats).to(device)
        return built if weights is None else load_student_weights(built, weights)

    calibrated_path = folder / "calibrated.pt"

    def calibrate() -> None:
        model = student()
        calibration = calibrate_student(
            model,
            run.next_batch,
            seed=args.seed,
            batches=args.calibration_batches,
            per_layer=args.calibrate_per_layer,
        )
        save_weights(calibrated_path, model)
        print(f"[{folder.name}] {calibration.summary}", flush=True)

    calibrate_minutes = _timed(folder, "calibrate", calibrate) if delta else 0.0
    trained_path = folder / "train" / "student.pt"

    def train() -> None:
        model = student(calibrated_path if delta else None)
        config = TrainConfig(
            steps=args.train_steps, checkpoint_every=25, seed=args.seed, lr=args.lr
        )

        def show(row) -> None:
            if row.val_r is not None or row.step % 25 == 0:
                shown = "" if row.val_r is None else f"  val R {row.val_r:.3f}"
                print(
                    f"[{folder.name}] train {row.step + 1}/{args.train_steps} "
                    f"loss {row.loss:.4f}{shown}",
                    flush=True,
                )

        train_student(
            model,
            run.teacher,
            run.next_batch,
            out=folder / "train",
            config=config,
            on_step=show,
            validate=held_out_r(run.teacher, run.val, spec, device=device),
            eval_every=25,  # the best of steps 0, 25, 50, ... is kept
        )

    train_minutes = _timed(folder, "train", train)
    cost = spec.totals.amortised_macs
    cheap, about = baseline_columns(
        run.teacher, spec, run.layers, stats=run.stats, size=run.size, device=device
    )
    if "uniform" in cheap:
        cheap["uniform"].name = f"uniform student (f={about['uniform_fraction']:.3f})"
    columns = [cheap[key] for key in BASELINES if key in cheap]
    reference = r_reference(spec, cheap)  # per-frame modes: the low-res teacher
    columns.append(Student("searched", student(), interval))
    if delta:
        columns.append(Student("searched + calibrated", student(calibrated_path), interval))
    trained = f"{'+' if delta else 'searched +'} trained ({train_minutes:.1f} CPU-min)"
    columns.append(Student(trained, student(trained_path), interval))
    rows = []
    clips = videos_or_default(None, run.teacher.output_kind)
    for clip, frames in zip(clips, run.val.span_frames(), strict=False):
        found = folder / f"scores-{clip.replace(':', '_')}.json"
        if found.is_file():
            scores = json.loads(found.read_text())
        else:
            copies = [copy.copy(c) for c in columns]
            scores = compare(
                run.teacher,
                copies,
                [frames],
                interval=interval or int(about["repeat_interval"]),
                device=device,
                reference=next((c for c in copies if reference and c.name == reference.name), None),
            )
            atomic_write_text(found, json.dumps(scores, indent=1) + "\n")
        for name, values in scores.items():
            rows.append({"clip": clip, "column": name, **values})
    minutes = {"search": search_minutes, "calibrate": calibrate_minutes, "train": train_minutes}
    print(
        f"\n{teacher} at {size}, {fraction:.3g} of the teacher's amortised multiply-adds "
        f"({cost / 1e9:.3f} GMACs), {f'K={interval}' if delta else args.mode + ' mode'}; "
        f"CPU minutes {minutes}; R: 0 is "
        f"{'the ' + reference.name if reference else 'the key frame repeated'}, 1 the teacher"
    )
    print(f"{'clip':18} {'column':42} {'R':>7} {'agree':>7} {'TC':>7}")
    for row in rows:
        cells = ["-" if row[k] is None else f"{row[k]:7.3f}" for k in ("r", "agreement", "tc")]
        print(f"{row['clip']:18} {row['column']:42} {cells[0]:>7} {cells[1]:>7} {cells[2]:>7}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teachers", default=TEACHERS, help="name:HxW, comma-separated")
    parser.add_argument("--fractions", default="0.5,0.333333")
    parser.add_argument("-k", default="auto", help="key-frame interval, or auto (delta mode)")
    parser.add_argument("--mode", default="delta", choices=["delta", "perframe", "resolution"])
    parser.add_argument("--input-scale", type=float, default=0.75, help="resolution mode")
    parser.add_argument("--steps", type=int, default=150, help="search steps")
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=TrainConfig().lr, help="training's peak")
    parser.add_argument("--calibration-batches", type=int, default=16)
    parser.add_argument(
        "--calibrate-per-layer",
        action="store_true",
        help="judge each layer's refit by the output's R and undo it alone where R drops",
    )
    parser.add_argument(
        "--spec",
        help="score this spec (its teacher, size and K) in place of a search's: one teacher, "
        "one fraction, -k its interval",
    )
    parser.add_argument("--max-frames", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/bench-quality")
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} threads")
    for item in args.teachers.split(","):
        teacher, size = item.split(":")
        for fraction in (float(v) for v in args.fractions.split(",")):
            point(teacher, size, fraction, args)


if __name__ == "__main__":
    main()
