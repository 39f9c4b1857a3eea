"""How fast is the cost model? Multiply-add counting on `meta` tensors against a real CPU pass.

Prints, per teacher and input size: the time to count multiply-adds and build the layer graph
on `meta` tensors, the time of one real forward pass on the CPU (what any counter that needs
real tensors pays at least), and the ratio, measured side by side in one run.

    python bench/cost_speed.py [--sizes 520x520,1024x2048] [--teachers deeplabv3,ppocrv4_det]
"""

from __future__ import annotations

import argparse
import time

import torch

from nas.core.sizes import parse_size
from nas.cost.macs import cost_report
from nas.teachers import load_teacher


def seconds(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teachers", default="deeplabv3,deeplabv3_resnet101,ppocrv4_det")
    parser.add_argument("--sizes", default="512x512,1024x2048")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    header = (
        f"{'teacher':30} {'input':>10} {'GFLOPs':>10} {'meta count s':>13} "
        f"{'CPU pass s':>11} {'ratio':>7}"
    )
    print(header)
    print("-" * len(header))
    for name in args.teachers.split(","):
        teacher = load_teacher(name)
        for text in args.sizes.split(","):
            size = parse_size(text)
            module = teacher.module
            counted = seconds(lambda module=module, size=size: cost_report(module, size))
            x = torch.randn(1, 3, *size)
            with torch.inference_mode():
                real = seconds(lambda module=module, x=x: module(x), repeats=1)
            gflops = cost_report(teacher.module, size).gmacs
            print(
                f"{name:30} {text:>10} {gflops:10.3f} {counted:13.3f} {real:11.3f} "
                f"{real / counted:6.1f}x"
            )


if __name__ == "__main__":
    main()
