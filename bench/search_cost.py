"""What does one search step cost? Single-path sampling against DARTS and the student alone.

On deeplabv3 (MobileNetV3-Large) at 520x520, with the `default` search space, times one
training step (forward and backward of the delta model on frame t, after the teacher's key
frame and target passes) and its peak memory, for:

- single-path: one sampled candidate per layer (this toolkit's search);
- all-paths:   every candidate runs, mixed by softmax weights (DARTS, NNI's one-shot default);
- student:     the exported choice alone, only its block weights training (a retraining step).

Each variant runs in its own process so peak memory (max RSS on CPU, the allocator's peak on
CUDA) is its own. Prints seconds per step (median of --repeats after a warm-up step), peak
memory, and ratios against the single-path step, measured side by side in one run.

    python bench/search_cost.py [--device cpu|cuda] [--size 520x520] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

VARIANTS = ("single-path", "all-paths", "student")


def one_variant(variant: str, device: str, size: tuple[int, int], repeats: int, batch: int) -> dict:
    from nas.graph.layers import layer_graph
    from nas.searching.supernet import build_supernet
    from nas.searching.tables import macs_table
    from nas.student.losses import LossWeights, delta_losses
    from nas.teachers import load_teacher
    from search_spaces import build_candidate, load_preset, resolve_candidates

    dev = torch.device(device)
    teacher = load_teacher("deeplabv3", device=device)
    layers = layer_graph(teacher.module, size)
    preset = load_preset("default")
    names = {layer.path: resolve_candidates(preset, layer) for layer in layers}
    table = macs_table(teacher, layers, names, size)
    net = build_supernet(
        teacher, layers, table, lambda name, layer, w: build_candidate(name, layer, weight=w)
    )
    net.model.to(dev).train()
    generator = torch.Generator().manual_seed(0)
    params = []
    for m in net.mixed.values():
        m.generator = generator
        m.all_paths = variant == "all-paths"
    if variant == "student":  # the cheapest candidate that is not zero, as an exported choice
        picks = {p: next((n for n in ns if n != "zero"), ns[0]) for p, ns in names.items()}
        net.fix(picks)
        params = [p for m in net.mixed.values() for p in m.blocks[m.fixed].parameters()]
    else:
        params = [p for m in net.mixed.values() for p in (m.logits, *m.blocks.parameters())]
    for p in net.model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimiser = torch.optim.Adam(params, lr=1e-4)
    x_key = torch.randn(batch, 3, *size, generator=generator).to(dev)
    x_t = x_key + 0.1 * torch.randn(batch, 3, *size, generator=generator).to(dev)

    def step() -> None:
        if variant == "single-path":
            for m in net.mixed.values():
                m.sample()
        loss, _ = delta_losses(net.model, (x_key, x_t, None), teacher.output_kind, LossWeights())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    candidates = sum(len(m.names) for m in net.mixed.values())
    return {"seconds": statistics.median(times), "peak_mib": peak, "candidates": candidates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="520x520")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    if args.variant:
        print(json.dumps(one_variant(args.variant, args.device, (h, w), args.repeats, args.batch)))
        return
    results = {}
    for variant in VARIANTS:
        cmd = [sys.executable, __file__, "--variant", variant, "--device", args.device]
        cmd += ["--size", args.size, "--repeats", str(args.repeats), "--batch", str(args.batch)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])
    base = results["single-path"]
    print(
        f"deeplabv3 at {args.size}, batch {args.batch}, {args.device}, torch {torch.__version__}, "
        f"{base['candidates']} candidates over all layers"
    )
    print(f"{'variant':12} {'s/step':>8} {'peak MiB':>9} {'time x':>7} {'memory x':>9}")
    for variant, r in results.items():
        print(
            f"{variant:12} {r['seconds']:8.3f} {r['peak_mib']:9.0f} "
            f"{r['seconds'] / base['seconds']:7.2f} {r['peak_mib'] / base['peak_mib']:9.2f}"
        )


if __name__ == "__main__":
    main()
