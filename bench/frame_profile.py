"""Where a frame's time goes, by operator: the teacher against the shipped student's delta frame.

The student is built from `--spec` (`nas.build_student`) and run by `DeltaRunner` on real frames
of `--clip`, channels-last on the CPU, as `nas eval` runs it; the teacher's module on the same
frames. `torch.profiler` gives each aten operator's own time, per frame (teacher: K frames;
student: the K-1 delta frames after one key frame), in both delta forms (the recurrence
z_k + g(a - a_k) and the linear form c_k + g(a)).

Then the ceiling the teacher's own split allows: a delta frame runs everything outside the
convs on the full features as the teacher does (activations, concatenations, upsampling,
pooling, additions), so even with its convs at the teacher's own pace per multiply-add it takes
at least `other + convs * m`, m the delta frame's share of the teacher's multiply-adds; the
amortised speed-up can be no more than K / (1 + (K - 1) * that share).

    python bench/frame_profile.py --spec SPEC.json [--clip sample:carphone] [--threads 2]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from nas.data import load_frames, open_video
from nas.delta.runner import DeltaRunner
from nas.spec import load_spec
from nas.student.build import build_student, teacher_for

CONVS = ("aten::mkldnn_convolution", "aten::_slow_conv2d_forward", "aten::slow_conv_dilated2d")


def by_operator(prof, frames: int) -> dict[str, float]:
    """ms per frame of each aten operator's own time."""
    found: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            found[event.key] += event.self_cpu_time_total / 1e3 / frames
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--clip", default="sample:carphone")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = load_spec(args.spec)
    teacher = teacher_for(spec)
    student = build_student(spec, teacher)
    k = spec.keyframe_interval
    stack = load_frames(open_video(args.clip, max_frames=k), size=tuple(spec.input_size))
    frames = [
        teacher.input_spec.normalize(x[None]).contiguous(memory_format=torch.channels_last)
        for x in stack.frames
    ]
    module = teacher.module.eval().to(memory_format=torch.channels_last)
    tables = {}
    with torch.inference_mode():
        for x in frames:  # warm both up
            module(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for x in frames:
                module(x)
        tables["teacher"] = by_operator(prof, len(frames))
        for form, linear in (("delta, recurrence", False), ("delta, linear", True)):
            student.use_linear(linear)
            runner = DeltaRunner(student, interval=k, channels_last=True)
            for x in frames:
                runner.step(x)
            runner.reset()
            runner.step(frames[0])
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for x in frames[1:]:
                    runner.step(x)
            tables[form] = by_operator(prof, len(frames) - 1)
    print(f"{spec.teacher.name} at {spec.input_size[0]}x{spec.input_size[1]}, K={k}, {args.clip}")
    print(f"ms per frame, each operator's own time ({args.threads} threads, channels-last)")
    names = sorted(tables["teacher"], key=lambda n: -max(t.get(n, 0) for t in tables.values()))
    print(f"{'operator':32} " + " ".join(f"{name:>18}" for name in tables))
    for name in names[: args.top]:
        print(f"{name:32} " + " ".join(f"{t.get(name, 0.0):18.1f}" for t in tables.values()))
    totals = {form: sum(t.values()) for form, t in tables.items()}
    convs = {form: sum(t.get(n, 0.0) for n in CONVS) for form, t in tables.items()}
    print(f"{'convs':32} " + " ".join(f"{convs[f]:18.1f}" for f in tables))
    print(f"{'everything else':32} " + " ".join(f"{totals[f] - convs[f]:18.1f}" for f in tables))
    print(f"{'total':32} " + " ".join(f"{totals[f]:18.1f}" for f in tables))
    share = spec.totals.delta_frame_macs / spec.totals.teacher_macs
    other = totals["teacher"] - convs["teacher"]
    floor = other + convs["teacher"] * share
    ceiling = k / (1 + (k - 1) * floor / totals["teacher"])
    print(
        f"\ndelta frame multiply-adds: {share:.2f} of the teacher's; outside the convs the teacher "
        f"spends {other:.1f} of {totals['teacher']:.1f} ms ({other / totals['teacher']:.0%})"
    )
    print(
        f"ceiling: a delta frame of at least {floor:.1f} ms (its convs at the teacher's pace), an "
        f"amortised speed-up of at most {ceiling:.2f}x against a multiply-add ratio of "
        f"{spec.totals.teacher_macs / spec.totals.amortised_macs:.2f}"
    )


if __name__ == "__main__":
    main()
