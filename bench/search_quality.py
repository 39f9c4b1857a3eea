"""How good is the search? Delta models at one budget, side by side, on a real teacher and video.

Teacher: the PP-OCRv4 text detector (real trained weights, shipped in rapidocr-onnxruntime).
Video: the built-in real clip (default `sample:bikes`, street footage with scene cuts).
Budgets: 1/2 of the teacher at key-frame interval 3, and 1/3 at interval 6 (at interval 3 a
third of the teacher leaves nothing for the frames between key frames).

For each budget, on the same held-out clips (the last frames of the video, by time), prints the
agreement with the teacher (IoU of the text maps thresholded at 0.3) and the mean absolute error
of the probabilities, with each method's amortised GFLOPs, and the output's error as a share of
the error of repeating the key frame's output ("vs key": 1 for a model whose predicted change
does not reach the output), of:

- search:      this toolkit's search over the `default` space (constraint, exported, repaired);
- paper space: the same search over the paper's space (`full` or separable rank C_out/4);
- all sep:     every layer at the paper's compressed candidate (depthwise layers stay `full`:
               the paper compresses only regular convs),
               its blocks trained for the same number of steps with the same losses;
- all zero:    every layer reuses the key frame's output (no computation between key frames).

    python bench/search_quality.py [--steps 150] [--video sample:bikes] [--size 288x640]
"""

from __future__ import annotations

import argparse
import time

from nas.core.errors import NasError
from nas.cost.amortised import CostTable, amortised
from nas.cost.budget import Budget, CostKind
from nas.searching.options import SearchOptions
from nas.searching.pipeline import prepare
from nas.searching.supernet import run_search
from nas.searching.validation import validate
from search_spaces import resolve_candidates

THRESHOLD = 0.3


def fixed_table(table: CostTable, picks: dict[str, str]) -> CostTable:
    """A cost table that offers each layer only its picked candidate."""
    one = {path: {picks[path]: table.candidates[path][picks[path]]} for path in picks}
    return CostTable(table.unit, table.keyframe, table.other, one)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--video", default="sample:bikes")
    parser.add_argument("--size", default="288x640")
    parser.add_argument("--max-frames", type=int, default=250)
    parser.add_argument("--val-batches", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"teacher ppocrv4_det, video {args.video}, input {args.size}, {args.steps} steps, CPU")
    header = (
        f"{'budget':>18} {'method':12} {'GFLOPs/frame':>12} {'IoU':>7} {'MAE':>9} "
        f"{'vs key':>7} {'s':>6}"
    )
    print(header)
    print("-" * len(header))
    for fraction, interval in ((1 / 2, 3), (1 / 3, 6)):
        base = SearchOptions(
            teacher="ppocrv4_det",
            video=args.video,
            input_size=args.size,
            max_frames=args.max_frames,
            keyframe_interval=interval,
            steps=args.steps,
            val_batches=args.val_batches,
            seed=args.seed,
            device="cpu",
        )
        probe = prepare(base.model_copy(update={"budget": "1TFLOPs"}))
        budget = Budget(CostKind.MACS, probe.macs.keyframe * fraction)
        label = f"1/{round(1 / fraction)} K={interval} {budget}"
        val = probe.val_batches()
        rows = []
        infeasible = []
        for method, space in (("search", "default"), ("paper space", "paper")):
            options = base.model_copy(update={"budget": str(budget.value), "search_space": space})
            try:
                run = prepare(options)
            except NasError as exc:  # the space cannot reach the budget at this interval
                infeasible.append((method, str(exc).split("; ")[0]))
                continue
            net = run.supernet()
            start = time.perf_counter()
            outcome = run_search(
                net, run.teacher, run.next_batch, budget=budget, interval=interval,
                config=options.search_config(),
            )  # fmt: skip
            scores = validate(net, run.teacher, val, outcome.picks)
            rows.append((method, run.macs, outcome.picks, scores, time.perf_counter() - start))
        paper = prepare(base.model_copy(update={"budget": "1TFLOPs", "search_space": "paper"}))
        for method, source in (("all sep", paper), ("all zero", probe)):
            if method == "all sep":  # the paper's compressed candidate; depthwise stays full
                picks = {
                    layer.path: next(n for n in resolve_candidates("paper", layer) if n != "zero")
                    for layer in paper.layers
                }
            else:
                picks = {layer.path: "zero" for layer in probe.layers}
            net = source.supernet(fixed_table(source.costs, picks))
            start = time.perf_counter()
            if method == "all sep":  # train its blocks like the searches train theirs
                run_search(
                    net, source.teacher, source.next_batch, budget=Budget(CostKind.MACS, 1e15),
                    interval=interval, config=base.search_config(),
                )  # fmt: skip
            scores = validate(net, source.teacher, val, picks)
            rows.append((method, source.macs, picks, scores, time.perf_counter() - start))
        for method, table, picks, scores, seconds in rows:
            cost = amortised(table.keyframe, table.delta(picks), interval)
            vs_key = scores.get("val_error_vs_key", float("nan"))
            print(
                f"{label:>18} {method:12} {cost / 1e9:12.3f} {scores['val_agreement']:7.4f} "
                f"{scores['val_mae']:9.6f} {vs_key:7.3f} {seconds:6.0f}"
            )
        for method, reason in infeasible:
            print(f"{label:>18} {method:12} infeasible: {reason}")


if __name__ == "__main__":
    main()
