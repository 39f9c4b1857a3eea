"""Cost tables in the budget's unit: every candidate's cost on every searched layer.

Multiply-adds are exact (the candidates' formulas, the teacher's from the counter); latencies
are measured on the named device, per candidate at its layer's input shape, and cached on disk
(`nas.cost.latency.LatencyTable`). What runs outside the searched convs is the table's fixed part.
"""

from __future__ import annotations

import math

import torch

from nas.cost.amortised import CostTable
from nas.cost.budget import CostKind
from nas.cost.latency import LatencyTable, conv_key, time_module
from nas.cost.macs import count_macs
from nas.delta.liveness import NO_CHANGE
from nas.graph.fold import fold_batchnorms
from nas.graph.layers import ConvLayer
from nas.teachers import Teacher
from search_spaces import build_candidate, candidate_macs


def macs_table(
    teacher: Teacher, layers: list[ConvLayer], names: dict[str, list[str]], size
) -> CostTable:
    """Multiply-adds of every candidate, exact; the key frame from the counter."""
    keyframe = count_macs(teacher.module, size)
    candidates = {
        layer.path: {name: candidate_macs(name, layer) * layer.calls for name in names[layer.path]}
        for layer in layers
    }
    other = keyframe - sum(layer.macs for layer in layers)
    return CostTable(CostKind.MACS, keyframe, other, candidates)


def block_latencies(
    layers: list[ConvLayer],
    names: dict[str, list[str]],
    *,
    device: torch.device,
    threads: int,
    channels_last: bool = False,
) -> dict[str, dict[str, float]]:
    """Measured seconds of every candidate alone at its layer's input, times the layer's calls
    (cached on disk per device, and per layout: channels-last entries end in `:nhwc`)."""
    table = LatencyTable.for_device(device, threads)
    layout = ":nhwc" if channels_last else ""
    candidates: dict[str, dict[str, float]] = {}
    for layer in layers:
        candidates[layer.path] = {}
        for name in names[layer.path]:

            def measure(name=name, layer=layer) -> float:
                block = build_candidate(name, layer).to(device)
                shape = (1, layer.c_in, *layer.in_hw)
                return time_module(
                    block, shape, device=device, threads=threads, repeats=5,
                    channels_last=channels_last,
                ).median  # fmt: skip

            seconds = table.get(f"delta:{name}:{conv_key(layer)}{layout}", measure)
            candidates[layer.path][name] = seconds * layer.calls
    return candidates


def latency_table(
    teacher: Teacher,
    layers: list[ConvLayer],
    names: dict[str, list[str]],
    size,
    *,
    device: torch.device,
    threads: int,
    channels_last: bool = False,
) -> CostTable:
    """Measured seconds of every candidate (`block_latencies`) and of the key frame, in the
    layout the student will run in (`channels_last`).

    The key frame is the teacher with its BatchNorms folded, as a delta model runs it. What it
    runs outside the searched convs (activations, squeeze-excitation, additions) is shared out
    among the layers by the size of their outputs, which those operations read, and added to
    each layer's candidates but `zero`: a layer that passes no change leaves what reads its
    output unchanged, and the built model skips that (`nas.delta.replay`)."""
    candidates = block_latencies(
        layers, names, device=device, threads=threads, channels_last=channels_last
    )
    folded = fold_batchnorms(teacher.module, layers).eval()
    keyframe = time_module(
        folded, (1, 3, *size), device=device, threads=threads, channels_last=channels_last
    ).median
    other = max(0.0, keyframe - sum(costs["full"] for costs in candidates.values()))
    outputs = {layer.path: layer.c_out * math.prod(layer.out_hw) * layer.calls for layer in layers}
    total = sum(outputs.values())
    for path, costs in candidates.items():
        for name in costs:
            if name != NO_CHANGE:
                costs[name] += other * outputs[path] / total
    return CostTable(CostKind.LATENCY, keyframe, 0.0, candidates)
