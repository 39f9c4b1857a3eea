"""Cost evaluators: multiply-adds and parameters (exact, on `meta`), and measured latency."""

from __future__ import annotations

from torch import nn

from evaluators.registry import EVALUATORS
from nas.cost.latency import time_module
from nas.cost.macs import count_macs, count_params


@EVALUATORS.register("cost")
def cost(model: nn.Module, *, input_size: tuple[int, int]) -> dict[str, float]:
    """GFLOPs (multiply-adds, torchvision's convention) of one frame, and parameters."""
    return {"gflops": count_macs(model, input_size) / 1e9, "params": float(count_params(model))}


@EVALUATORS.register("latency")
def latency(
    model: nn.Module,
    *,
    input_size: tuple[int, int],
    device: str = "cpu",
    threads: int | None = None,
    repeats: int = 10,
) -> dict[str, float]:
    """Median milliseconds per frame on `device` after warm-up, threads fixed."""
    timing = time_module(
        model, (1, 3, *input_size), device=device, threads=threads, repeats=repeats
    )
    return {"latency_ms": timing.median * 1e3}
