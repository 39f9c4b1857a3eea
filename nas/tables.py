"""Cost tables in the budget's unit: every candidate's cost on every searched layer.

Multiply-adds are exact (the candidates' formulas, the teacher's from the counter); latencies
are measured on the named device, per candidate at its layer's input shape, and cached on disk
(`nas.latency.LatencyTable`). What runs outside the searched convs is the table's fixed part.
"""

from __future__ import annotations

import torch

from nas.budget import CostKind
from nas.cost import count_macs
from nas.graph import ConvLayer
from nas.inner import CostTable
from nas.latency import LatencyTable, conv_key, time_module
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


def latency_table(
    teacher: Teacher,
    layers: list[ConvLayer],
    names: dict[str, list[str]],
    size,
    *,
    device: torch.device,
    threads: int,
) -> CostTable:
    """Measured seconds of every candidate at its layer's input (cached on disk per device)."""
    table = LatencyTable.for_device(device, threads)
    candidates: dict[str, dict[str, float]] = {}
    for layer in layers:
        candidates[layer.path] = {}
        for name in names[layer.path]:

            def measure(name=name, layer=layer) -> float:
                block = build_candidate(name, layer).to(device)
                shape = (1, layer.c_in, *layer.in_hw)
                return time_module(block, shape, device=device, threads=threads, repeats=5).median

            seconds = table.get(f"delta:{name}:{conv_key(layer)}", measure)
            candidates[layer.path][name] = seconds * layer.calls
    keyframe = time_module(teacher.module, (1, 3, *size), device=device, threads=threads).median
    full = sum(costs["full"] for costs in candidates.values())
    return CostTable(CostKind.LATENCY, keyframe, max(0.0, keyframe - full), candidates)
