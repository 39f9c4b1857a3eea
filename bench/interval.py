"""Which key-frame interval, at one amortised budget? The screen's answer beside the real one.

For one teacher, frame size and budget:

1. the screen (`nas.searching.interval`, what `--keyframe-interval auto` runs): every interval the
budget
   allows, measured on an untrained allocation; its line is printed as `nas search` prints it;
2. for each interval of `--intervals`, the real thing: `nas search` at that K, the searched
   student calibrated on its own inputs (`nas.student.train.calibrate_student`), and the screen's
   own allocation at that K (untrained, data-aware start), scored on the held-out frames of every
   built-in clip by `nas.student.compare`, beside the key frame repeated at the same cost. Every
   column's R is against one denominator, the key frame repeated every `--reference` frames, so the
   rows compare directly across intervals (R of a student at K is then not its R against its own K).

Each interval's search and calibration are kept in `--out` and skipped when found:

    python bench/interval.py --teacher u2netp --input-size 192x256 --intervals 3,4,6
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from nas.data import videos_or_default
from nas.searching.options import SearchOptions
from nas.searching.pipeline import prepare, search
from nas.spec import load_spec
from nas.student.baselines import repeat_interval
from nas.student.build import build_student
from nas.student.compare import Repeated, Student, compare
from nas.student.train import calibrated_once
from nas.study.hpo import Objective, StudyOptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="u2netp")
    parser.add_argument("--input-size", default="192x256")
    parser.add_argument("--budget", default="50%")
    parser.add_argument("--intervals", default="3,4,6")
    parser.add_argument("--reference", type=int, default=3, help="K of R's denominator")
    parser.add_argument("--steps", type=int, default=60, help="search steps")
    parser.add_argument("--max-frames", type=int, default=150)
    parser.add_argument("--out", default="results/bench-interval")
    args = parser.parse_args()
    pct = args.budget.rstrip("%")
    out = Path(args.out) / f"{args.teacher}-{args.input_size}-{pct}pct"
    base = SearchOptions(
        teacher=args.teacher,
        budget=args.budget,
        input_size=args.input_size,
        max_frames=args.max_frames,
        steps=args.steps,
    )
    began = time.perf_counter()
    objective = Objective(StudyOptions(search=base, keyframe_interval_auto=True))
    screen = objective.screen()
    print(
        f"{args.teacher} at {args.input_size}, budget {args.budget}, "
        f"{torch.get_num_threads()} threads; screen in {time.perf_counter() - began:.0f} s"
    )
    print(screen.summary(), flush=True)
    columns, reference = [], None
    for k in (int(v) for v in args.intervals.split(",")):
        folder = out / f"k{k}"
        options = base.model_copy(update={"keyframe_interval": k, "out": str(folder / "search")})
        run = prepare(options)
        reference = reference or run
        if not (folder / "search" / "spec.json").is_file():
            search(options, prepared=run)
        spec = load_spec(folder / "search" / "spec.json")
        searched = build_student(spec, run.teacher, stats=run.stats).eval()
        columns.append(Student(f"K={k}, searched", searched, k))
        model = build_student(spec, run.teacher, stats=run.stats)
        model = calibrated_once(model, run.next_batch, folder / "calibrated.pt")
        columns.append(Student(f"K={k}, searched + calibrated", model.eval(), k))
        if k in screen.allocations:  # the screen's own allocation at K, untrained
            net = run.supernet()
            net.fix(screen.allocations[k])
            columns.append(Student(f"K={k}, screen's knapsack", net.model.eval(), k))
        cost = spec.totals.amortised_macs
    k_repeat = repeat_interval(spec.totals.teacher_macs, cost)
    columns.insert(0, Repeated(k_repeat))
    print(
        f"R on the held-out frames of each clip, against the key frame repeated every "
        f"{args.reference}:"
    )
    print("| clip | " + " | ".join(c.name for c in columns) + " |")
    print("|---|" + "---|" * len(columns))
    clips = videos_or_default(None, reference.teacher.output_kind)
    for name, frames in zip(clips, reference.val.span_frames(), strict=False):
        table = compare(
            reference.teacher, columns, [frames], interval=args.reference, device=reference.device
        )
        row = " | ".join(f"{table[c.name]['r']:.3f}" for c in columns)
        print(f"| {name} | {row} |", flush=True)


if __name__ == "__main__":
    main()
