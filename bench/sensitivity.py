"""Each layer's output sensitivity (`nas.searching.supernet.measure_sensitivity`) beside its
multiply-adds.

On the first training batch of a search's data (two (key frame, frame t) pairs of the teacher's
default clips, key frame every K), every layer runs exactly and then, one at a time, predicts no
change; its sensitivity is the output's error relative to the teacher's change. Printed per layer
with the teacher conv's multiply-adds and the best candidate's teacher-forced error, then the
multiply-adds of the layers whose sensitivity is below 0.01.

    python bench/sensitivity.py --teacher ppocrv4_det --input-size 480x640
"""

from __future__ import annotations

import argparse

import torch

from nas.searching.options import SearchOptions
from nas.searching.pipeline import prepare
from nas.searching.supernet import measure_all_candidates, measure_sensitivity
from nas.student.losses import LossWeights, student_losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="ppocrv4_det")
    parser.add_argument("--input-size", default="480x640")
    parser.add_argument("-k", type=int, default=3)
    args = parser.parse_args()
    options = SearchOptions(
        teacher=args.teacher,
        budget="50%",
        input_size=args.input_size,
        keyframe_interval=args.k,
        max_frames=100,
    )
    run = prepare(options)
    net = run.supernet()
    generator = torch.Generator().manual_seed(0)
    for m in net.mixed.values():
        m.generator = generator
        m.sample()
    batch = run.next_batch(generator)
    student_losses(net.model, batch, run.teacher, LossWeights.of(options))
    measure_all_candidates(net)
    found = measure_sensitivity(net, batch)
    total = run.macs.keyframe
    print(f"{args.teacher} at {args.input_size}, K={args.k}: teacher {total / 1e6:.0f} MMACs")
    print(f"{'layer':32} {'MMACs':>8} {'share':>6} {'s':>6}")
    idle = 0.0
    for path, s in found.items():
        macs = run.macs.candidates[path].get("full", 0.0)
        idle += macs if s < 0.01 else 0.0
        print(f"{path:32} {macs / 1e6:8.1f} {macs / total:6.1%} {s:6.3f}")
    print(f"layers with s < 0.01: {idle / 1e6:.0f} MMACs, {idle / total:.1%} of the teacher")


if __name__ == "__main__":
    main()
