"""Can a delta layer beat the conv it stands in for? Memory traffic says where it cannot.

A delta layer computes z_t = z_k + g(a_t - a_k): besides the block's own work it reads the key
input a_k and the key output z_k, and writes its output, so its least traffic is that of the
conv (read a, write z) plus one more input and one more output. On a CPU a conv whose time is
that traffic (few channels on a large map: the stem and the first blocks of a MobileNet) cannot
be beaten by any block; a conv whose time is arithmetic (many channels on a small map) can.

For every non-grouped conv of the teacher (BN folded) this times, on the teacher's own input
to that conv (the first frame of the built-in clip), side by side in one run:
- the conv alone;
- the delta layer at inference (`nas.delta.model.DeltaConv`, its cache from a key frame) with
  the least arithmetic any block does, a rank-1 `lowrank` block, so what is left is the
  recurrence's traffic;
and prints both with the bytes each moves, then the layers where even the rank-1 delta layer is
slower than the conv, as a share of the teacher's conv time. Grouped (depthwise) convs take
only `full` or `zero` and are left out.

    python bench/delta_floor.py [--teacher deeplabv3] [--size 520x520] [--layout nhwc|nchw]
"""

from __future__ import annotations

import argparse

import torch

from nas.core.sizes import parse_size
from nas.cost.latency import default_threads, measure
from nas.data.resolve import open_video
from nas.data.stack import load_frames
from nas.delta.model import DeltaConv, Phase
from nas.graph.fold import fold_batchnorms
from nas.graph.layers import layer_graph
from nas.teachers import load_teacher
from search_spaces import build_candidate

FLOAT_BYTES = 4


def layer_inputs(folded: torch.nn.Module, paths: list[str], frame: torch.Tensor) -> dict:
    """The input each conv in `paths` sees on `frame` (forward pre-hooks)."""
    seen = {}
    hooks = [
        folded.get_submodule(path).register_forward_pre_hook(
            lambda module, args, path=path: seen.setdefault(path, args[0].clone())
        )
        for path in paths
    ]
    try:
        with torch.inference_mode():
            folded(frame)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="deeplabv3")
    parser.add_argument("--size", default="520x520")
    parser.add_argument("--layout", choices=("nhwc", "nchw"), default="nhwc")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    size = parse_size(args.size)
    memory_format = torch.channels_last if args.layout == "nhwc" else torch.contiguous_format
    threads = default_threads()

    teacher = load_teacher(args.teacher)
    graph = layer_graph(teacher.module, size)
    layers = [layer for layer in graph if layer.groups == 1]
    folded = fold_batchnorms(teacher.module, graph).eval()
    folded.to(memory_format=memory_format)
    clip = load_frames(open_video("sample:bikes", max_frames=2), size=size).frames
    frames = [teacher.input_spec.normalize(f[None].float()) for f in clip]
    key, frame = (f.contiguous(memory_format=memory_format) for f in frames)
    key_inputs = layer_inputs(folded, [layer.path for layer in layers], key)
    inputs = layer_inputs(folded, [layer.path for layer in layers], frame)

    print(
        f"{args.teacher} at {size[0]}x{size[1]}, {args.layout.upper()}, {threads} threads, "
        f"torch {torch.__version__}"
    )
    print(
        f"{'layer':34} {'c_in':>5} {'c_out':>5} {'out':>9} {'conv ms':>8} {'delta ms':>9} "
        f"{'conv MB':>8} {'delta MB':>9}"
    )
    conv_total = slower_total = 0.0
    slower = 0
    for layer in layers:
        conv = folded.get_submodule(layer.path)
        block = build_candidate("lowrank_r1", layer, weight=conv.weight.detach())
        delta = DeltaConv(conv, block.to(memory_format=memory_format)).eval()
        delta.frame.channels_last = args.layout == "nhwc"
        a_key, a = key_inputs[layer.path], inputs[layer.path]
        with torch.inference_mode():
            delta.frame.phase = Phase.KEY
            z = delta(a_key)
            delta.frame.phase = Phase.DELTA
        t_conv = measure(lambda conv=conv, a=a: conv(a), repeats=args.repeats, threads=threads)
        t_delta = measure(lambda d=delta, a=a: d(a), repeats=args.repeats, threads=threads)
        conv_bytes = (a.numel() + z.numel()) * FLOAT_BYTES
        delta_bytes = (2 * a.numel() + 2 * z.numel()) * FLOAT_BYTES
        conv_ms, delta_ms = t_conv.median * 1e3, t_delta.median * 1e3
        conv_total += conv_ms
        if delta_ms > conv_ms:
            slower += 1
            slower_total += conv_ms
        out = "x".join(str(n) for n in z.shape[-2:])
        print(
            f"{layer.path:34} {layer.c_in:5} {layer.c_out:5} {out:>9} {conv_ms:8.3f} "
            f"{delta_ms:9.3f} {conv_bytes / 1e6:8.2f} {delta_bytes / 1e6:9.2f}"
        )
    print(
        f"\nrank-1 delta layer slower than the conv: {slower} of {len(layers)} layers, "
        f"{slower_total:.1f} of {conv_total:.1f} ms of these convs' time "
        f"({slower_total / conv_total:.0%})"
    )


if __name__ == "__main__":
    main()
