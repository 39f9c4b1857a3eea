"""The cost model: multiply-adds and parameters, per layer and in total, at any input size.

Multiply-adds are counted as torchvision counts them: conv and linear (matmul) multiply-adds,
which is `torch.utils.flop_counter` divided by 2. In this toolkit "FLOPs" means that number
(the convention of torchvision, fvcore and the Delta Distillation paper); "GMACs" is a synonym.
Counting runs on `meta` tensors, so it takes a fraction of a second at any input size.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nas.graph import ConvLayer, GraphRecorder
from nas.trace import traced_forward


def conv_out_size(
    size: int, *, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """Output length of a convolution along one axis (PyTorch's formula)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_macs(
    *, c_in: int, c_out: int, kernel: tuple[int, int], out_hw: tuple[int, int], groups: int = 1
) -> int:
    """Multiply-adds of one conv call: each output sums (c_in / groups) * kh * kw products."""
    return c_out * out_hw[0] * out_hw[1] * (c_in // groups) * kernel[0] * kernel[1]


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _counter() -> FlopCounterMode:
    return FlopCounterMode(display=False)


def count_macs(module: nn.Module, input_size: tuple[int, int], *, batch: int = 1) -> int:
    """Total multiply-adds of one forward pass at `input_size` (H, W)."""
    _, counter = traced_forward(module, (batch, 3, *input_size), _counter)
    return counter.get_total_flops() // 2


def count_macs_by_module(
    module: nn.Module, input_size: tuple[int, int], *, batch: int = 1
) -> dict[str, int]:
    """Multiply-adds per module path, from the counter (parents include their children)."""
    _, counter = traced_forward(module, (batch, 3, *input_size), _counter)
    by_module = {}
    for name, ops in counter.get_flop_counts().items():
        # The counter names modules "<RootClass>.<path>"; "Global" is the whole pass.
        path = "" if name == "Global" else name.partition(".")[2]
        if name == "Global" or "." in name:
            by_module[path] = sum(ops.values()) // 2
    return by_module


@dataclass(frozen=True)
class CostReport:
    """Costs of one model at one input size."""

    input_size: tuple[int, int]
    macs: int  # total multiply-adds of one forward pass
    params: int
    layers: tuple[ConvLayer, ...]  # every conv, in execution order

    @property
    def conv_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9


class _CountAndGraph:
    """The flop counter and the graph recorder watching one and the same pass."""

    def __init__(self, module: nn.Module) -> None:
        self.counter = _counter()
        self.graph = GraphRecorder(module)

    def __enter__(self) -> _CountAndGraph:
        self.graph.__enter__()
        self.counter.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.counter.__exit__(*exc)
        self.graph.__exit__(*exc)


def cost_report(module: nn.Module, input_size: tuple[int, int]) -> CostReport:
    """Total multiply-adds (counter), parameters and the per-layer conv graph of `module`,
    from one traced pass."""
    _, seen = traced_forward(module, (1, 3, *input_size), lambda: _CountAndGraph(module))
    return CostReport(
        input_size=input_size,
        macs=seen.counter.get_total_flops() // 2,
        params=count_params(module),
        layers=tuple(seen.graph.conv_layers()),
    )
