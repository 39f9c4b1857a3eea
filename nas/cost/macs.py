"""The cost model: multiply-adds and parameters, per layer and in total, at any input size.

Multiply-adds are counted as torchvision counts them: conv and linear (matmul) multiply-adds,
which is `torch.utils.flop_counter` divided by 2. In this toolkit "FLOPs" means that number
(the convention of torchvision, fvcore and the Delta Distillation paper); "GMACs" is a synonym.
Counting runs on `meta` tensors, so it takes a fraction of a second at any input size.

That count includes the products of a kernel tap with a conv's zero padding, which a fast
kernel (oneDNN's, channels-last) never computes. For most networks they are a few percent; for
DeepLabV3's atrous pyramid at output stride 16 they are most of it (at 520x520 the rate-36
branch's off-centre taps read nothing but padding on its 33x33 map). `padding_macs` counts
them, so that what a network executes, `count_macs - padding_macs`, can be set beside what it
is said to cost.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nas.graph.layers import ConvLayer, GraphRecorder
from nas.graph.trace import traced_forward


def conv_out_size(
    size: int, *, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """Output length of a convolution along one axis (PyTorch's formula)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


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


def _axis_taps(size: int, kernel: int, stride: int, before: int, after: int, dilation: int) -> int:
    """Pairs (output position, kernel tap) along one axis whose tap reads the input, not the
    `before` / `after` zero padding."""
    out = (size + before + after - dilation * (kernel - 1) - 1) // stride + 1
    return sum(
        0 <= o * stride - before + j * dilation < size for o in range(out) for j in range(kernel)
    )


def _padding(conv: nn.Conv2d) -> list[tuple[int, int]]:
    """(before, after) zero padding per spatial axis, whatever form the conv was given it in."""
    if conv.padding_mode != "zeros":  # reflected or replicated padding is read like the input
        return [(0, 0), (0, 0)]
    if conv.padding == "valid":
        return [(0, 0), (0, 0)]
    if conv.padding == "same":
        totals = [d * (k - 1) for k, d in zip(conv.kernel_size, conv.dilation, strict=True)]
        return [(t // 2, t - t // 2) for t in totals]
    return [(p, p) for p in conv.padding]


def conv_padding_macs(conv: nn.Conv2d, in_hw: tuple[int, int]) -> int:
    """Multiply-adds of one call of `conv` on an `in_hw` input that multiply zero padding."""
    read = every = 1
    for n, k, s, (before, after), d in zip(
        in_hw, conv.kernel_size, conv.stride, _padding(conv), conv.dilation, strict=True
    ):
        read *= _axis_taps(n, k, s, before, after, d)
        every *= ((n + before + after - d * (k - 1) - 1) // s + 1) * k  # outputs x taps
    return (every - read) * (conv.in_channels // conv.groups) * conv.out_channels


class _PaddingProducts:
    """Forward hooks on every conv of a module, adding up the products with padding."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.macs = 0
        self._hooks: list = []

    def _seen(self, conv: nn.Conv2d, args, out) -> None:
        batch = args[0].shape[0] if args[0].dim() == 4 else 1
        self.macs += batch * conv_padding_macs(conv, tuple(args[0].shape[-2:]))

    def __enter__(self) -> _PaddingProducts:
        self._hooks = [
            m.register_forward_hook(self._seen)
            for m in self.module.modules()
            if isinstance(m, nn.Conv2d)
        ]
        return self

    def __exit__(self, *exc) -> None:
        for hook in self._hooks:
            hook.remove()


def padding_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one pass on an input of `input_shape` (N, C, H, W) that `count_macs`
    counts but that multiply a conv's zero padding: work a kernel may skip."""
    _, seen = traced_forward(module, tuple(input_shape), lambda: _PaddingProducts(module))
    return seen.macs
