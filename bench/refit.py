"""Does calibrating a delta student on its own inputs (`nas.student.refit`) beat its SVD starts?

Teacher: U²-Net-p (`u2netp`) at 192x256, on the built-in `sample:carphone` clip. Uniform
students (every dense conv `lowrank` at a fraction f of its maximal, exact rank; depthwise convs
`full`, u2netp has none), key frame every K=3, untrained, in three versions:
- plain: the truncated SVD of each folded weight;
- data-aware: the SVD in the metric of the teacher's measured input changes
  (`nas.student.statistics.delta_statistics`, on the fitting frames);
- data-aware + refit: then each block refitted, layer by layer, to the input changes the
  student itself produces (`nas.student.refit.refit_student`, on the same frames).
Fitted on (key, frame) pairs of the first `--fit-frames` frames (key frames every K), scored by
`nas.DeltaRunner` on frames `--score` (default 60-100): R = 1 - sum|y_hat - y|^2 / sum|y_key - y|^2
over the delta frames (`evaluators.Recovered`), 0 = the key frame repeated, 1 = the teacher.

    python bench/refit.py [--fractions 0.5,0.25] [--fit-frames 40] [--positions 2048] [--ridge 0.1]
"""

from __future__ import annotations

import argparse
import time

import torch

from evaluators.recovered import Recovered
from nas.core.sizes import parse_size
from nas.data.resolve import open_video
from nas.data.stack import load_frames
from nas.delta.model import DeltaModel
from nas.delta.runner import DeltaRunner
from nas.graph.layers import layer_graph
from nas.student.refit import refit_student
from nas.student.statistics import delta_statistics
from nas.teachers import load_teacher
from nas.teachers.base import select_output
from search_spaces import build_candidate, max_rank

K = 3


def uniform_student(teacher, layers, fraction: float, stats=None) -> DeltaModel:
    def make_block(layer, conv):
        weight = conv.weight.detach()
        if layer.groups != 1:
            return build_candidate("full", layer, weight=weight)
        rank = max(1, round(fraction * max_rank("lowrank", layer)))
        layer_stats = (stats or {}).get(layer.path)
        return build_candidate(f"lowrank_r{rank}", layer, weight=weight, stats=layer_stats)

    model = DeltaModel.build(teacher.module, layers, make_block, output_key=teacher.output_key)
    return model.eval()


def recovered(student: DeltaModel, frames: torch.Tensor, teacher_out: torch.Tensor) -> float:
    score = Recovered()
    key = None
    for i, step in enumerate(DeltaRunner(student, interval=K).run(frames.split(1))):
        if step.is_key:
            key = teacher_out[i : i + 1]
        else:
            score.update(step.prediction, key, teacher_out[i : i + 1])
    return score.compute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="192x256")
    parser.add_argument("--fractions", default="0.5,0.25")
    parser.add_argument("--fit-frames", type=int, default=40)
    parser.add_argument("--score", default="60-100")
    parser.add_argument("--positions", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--ridge", type=float, default=0.1)
    args = parser.parse_args()
    torch.manual_seed(0)
    size = parse_size(args.size)
    first, last = (int(v) for v in args.score.split("-"))
    teacher = load_teacher("u2netp")
    layers = layer_graph(teacher.module, size)
    stack = load_frames(open_video("sample:carphone", max_frames=last), size=size)
    frames = teacher.input_spec.normalize(stack.frames)
    fit, scored = frames[: args.fit_frames], frames[first:last]
    pairs = [(k, k + d) for k in range(0, len(fit), K) for d in range(1, K) if k + d < len(fit)]
    batches = [
        (fit[[k for k, _ in chunk]], fit[[t for _, t in chunk]])
        for chunk in (pairs[i : i + args.batch] for i in range(0, len(pairs), args.batch))
    ]
    with torch.no_grad():
        teacher_out = torch.cat(
            [select_output(teacher.module(x), teacher.output_key) for x in scored.split(8)]
        )
    start = time.perf_counter()
    stats = delta_statistics(
        teacher, teacher.module, layers, batches, generator=torch.Generator().manual_seed(0)
    )
    stats_s = time.perf_counter() - start
    print(
        f"u2netp at {args.size}, sample:carphone, K={K}: {len(layers)} convs; fitted on "
        f"{len(pairs)} (key, frame) pairs of frames 0-{len(fit) - 1}, R on the delta frames "
        f"of {first}-{last - 1}; {torch.get_num_threads()} threads"
    )
    print(f"data-aware statistics: {stats_s:.1f} s")
    print(f"{'f':>5} {'plain':>8} {'aware':>8} {'aware+refit':>12} {'refit s':>8}  mean layer err")
    for fraction in (float(v) for v in args.fractions.split(",")):
        plain = recovered(uniform_student(teacher, layers, fraction), scored, teacher_out)
        student = uniform_student(teacher, layers, fraction, stats)
        aware = recovered(student, scored, teacher_out)
        report = refit_student(student, batches, positions=args.positions, ridge=args.ridge)
        refit = recovered(student, scored, teacher_out)
        fits = report.layers.values()
        before = sum(f.before for f in fits) / len(fits)
        after = sum(f.after for f in fits) / len(fits)
        print(
            f"{fraction:>5} {plain:>8.3f} {aware:>8.3f} {refit:>12.3f} {report.seconds:>8.1f}  "
            f"{before:.3f} -> {after:.3f} ({len(fits)} refitted, {len(report.skipped)} skipped)"
        )


if __name__ == "__main__":
    main()
