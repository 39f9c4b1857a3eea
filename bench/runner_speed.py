"""Is the saving real? Measured amortised latency of delta models against the teacher.

deeplabv3 (MobileNetV3-Large) at 520x520. Two specs, each exported by a search of --steps steps
(default 150, as `nas search`) on the first 60 frames of the built-in clip: an amortised budget
of 5 GFLOPs at key-frame interval 3, and a third of the teacher at interval 6. Each is run by
`DeltaRunner` over a stream of frames (a key frame every K frames), side by side with the
teacher on the same frames in the same process, in both memory layouts (NCHW, and the
channels-last NHWC that CPU convolutions prefer); prints the measured amortised latency per
frame, the wall-clock speed-up, the multiply-add ratio, and the speed-up as a share of the
multiply-add ratio (the target is at least 80%).

    python bench/runner_speed.py [--device cpu|cuda] [--steps 150] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from nas.budget import Budget, CostKind
from nas.latency import fixed_threads
from nas.pipeline import SearchOptions, search
from nas.runner import DeltaRunner
from nas.student import build_student, teacher_for

# Both models run in each memory layout; channels-last is the faster one for convs on CPU.
LAYOUTS = {"NCHW": torch.contiguous_format, "NHWC": torch.channels_last}


def per_frame(fns, frames, rounds: int, device: torch.device) -> list[float]:
    """Median over rounds of the mean seconds per frame of each of `fns` over the stream; the
    functions take turns within each round, so drifts of the machine's speed hit all alike."""
    times = [[] for _ in fns]
    for _ in range(rounds + 1):  # the first round warms up
        for fn, spent in zip(fns, times, strict=True):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn(frames)
            if device.type == "cuda":
                torch.cuda.synchronize()
            spent.append((time.perf_counter() - start) / len(frames))
    return [statistics.median(spent[1:]) for spent in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=150, help="search steps for each spec")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=12)
    args = parser.parse_args()
    device = torch.device(args.device)
    threads = torch.get_num_threads()
    print(f"deeplabv3 at 520x520 on {device} ({threads} threads), torch {torch.__version__}")
    print(
        f"{'spec':22} {'layout':8} {'teacher ms':>10} {'delta ms':>9} {'speed-up':>8} "
        f"{'MAC ratio':>9} {'share':>6}"
    )
    for budget_text, interval in (("5GFLOPs", 3), ("third", 6)):
        with tempfile.TemporaryDirectory() as out:
            options = SearchOptions(
                teacher="deeplabv3", budget="1TFLOPs", keyframe_interval=interval,
                steps=args.steps, device=args.device, out=out, max_frames=60, val_batches=1,
            )  # fmt: skip
            if budget_text == "third":
                from nas.cost import count_macs
                from nas.teachers import load_teacher

                macs = count_macs(load_teacher("deeplabv3", device="meta").module, (520, 520))
                budget_text = str(Budget(CostKind.MACS, macs / 3))
            spec = search(options.model_copy(update={"budget": budget_text})).spec
        generator = torch.Generator().manual_seed(0)
        base = torch.randn(1, 3, 520, 520, generator=generator)
        stream = [
            base + 0.05 * i * torch.randn(1, 3, 520, 520, generator=generator)
            for i in range(args.frames)
        ]
        mac_ratio = spec.totals.teacher_macs / spec.totals.amortised_macs
        for layout, memory_format in LAYOUTS.items():
            teacher = teacher_for(spec, device=str(device)).module.to(memory_format=memory_format)
            student = build_student(spec, teacher_for(spec, device=str(device)))
            runner = DeltaRunner(student.to(device, memory_format=memory_format), interval=interval)
            frames = [x.to(device, memory_format=memory_format) for x in stream]

            def run_teacher(xs, teacher=teacher):
                with torch.inference_mode():
                    for x in xs:
                        teacher(x)

            def run_delta(xs, runner=runner):
                for _ in runner.run(xs):
                    pass

            with fixed_threads(threads):
                t_teacher, t_delta = per_frame(
                    (run_teacher, run_delta), frames, args.rounds, device
                )
            speedup = t_teacher / t_delta
            label = f"{spec.budget.text} K={interval}"
            print(
                f"{label:22} {layout:8} {t_teacher * 1e3:10.1f} {t_delta * 1e3:9.1f} "
                f"{speedup:8.2f} {mac_ratio:9.2f} {100 * speedup / mac_ratio:5.0f}%"
            )


if __name__ == "__main__":
    main()
