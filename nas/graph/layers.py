"""The layer graph: every conv of a teacher in execution order, with its shapes.

Found by one traced forward pass (see `nas.graph.trace`) with hooks on every `nn.Conv2d`, so it
works for torchvision models, onnx2torch graph modules and users' own modules alike. A BatchNorm
whose input is exactly a conv's output is recorded with that conv, to be folded into it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from nas.graph.trace import traced_forward


def conv_macs(
    *, c_in: int, c_out: int, kernel: tuple[int, int], out_hw: tuple[int, int], groups: int = 1
) -> int:
    """Multiply-adds of one conv call: each output sums (c_in / groups) * kh * kw products."""
    return c_out * out_hw[0] * out_hw[1] * (c_in // groups) * kernel[0] * kernel[1]


@dataclass(frozen=True)
class ConvLayer:
    """One conv layer of a teacher at one input size (shapes are per call, batch excluded)."""

    index: int
    path: str
    c_in: int
    c_out: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    bias: bool
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    bn_path: str | None  # the BatchNorm applied directly to this conv's output, if any
    calls: int = 1  # how many times the forward pass ran this conv

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.c_in

    @property
    def macs(self) -> int:
        """Multiply-adds of all calls, as torchvision counts them (bias not counted)."""
        return self.calls * conv_macs(
            c_in=self.c_in,
            c_out=self.c_out,
            kernel=self.kernel,
            out_hw=self.out_hw,
            groups=self.groups,
        )

    @property
    def params(self) -> int:
        kh, kw = self.kernel
        return self.c_out * (self.c_in // self.groups) * kh * kw + (self.c_out if self.bias else 0)

    def as_dict(self) -> dict:
        return asdict(self)


def conv_for(layer: ConvLayer, *, bias: bool, **factory) -> nn.Conv2d:
    """A fresh `nn.Conv2d` with the layer's configuration (`factory`: device, dtype)."""
    return nn.Conv2d(
        layer.c_in,
        layer.c_out,
        layer.kernel,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        groups=layer.groups,
        bias=bias,
        **factory,
    )


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _padding(conv: nn.Conv2d) -> tuple[int, int]:
    """Numeric padding, also for `padding="same"` / `"valid"` (leading side when asymmetric)."""
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        return tuple(d * (k - 1) // 2 for d, k in zip(conv.dilation, conv.kernel_size, strict=True))
    return _pair(conv.padding)


class GraphRecorder:
    """Forward hooks that record convs and the BatchNorms fed directly by them."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.layers: dict[str, dict] = {}
        self.outputs: dict[
            int, tuple[torch.Tensor, str]
        ] = {}  # keeps outputs alive: ids stay unique
        self.handles = []

    def __enter__(self) -> GraphRecorder:
        for path, sub in self.module.named_modules():
            if isinstance(sub, nn.Conv2d):
                self.handles.append(sub.register_forward_hook(self._conv_hook(path)))
            elif isinstance(sub, nn.modules.batchnorm._BatchNorm):
                self.handles.append(sub.register_forward_pre_hook(self._bn_hook(path)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.outputs.clear()

    def conv_layers(self) -> list[ConvLayer]:
        return [ConvLayer(**fields) for fields in self.layers.values()]

    def _conv_hook(self, path: str):
        def hook(conv: nn.Conv2d, inputs, output) -> None:
            if path in self.layers:
                self.layers[path]["calls"] += 1
            else:
                x = inputs[0]
                self.layers[path] = dict(
                    index=len(self.layers),
                    path=path,
                    c_in=conv.in_channels,
                    c_out=conv.out_channels,
                    kernel=_pair(conv.kernel_size),
                    stride=_pair(conv.stride),
                    padding=_padding(conv),
                    dilation=_pair(conv.dilation),
                    groups=conv.groups,
                    bias=conv.bias is not None,
                    in_hw=(int(x.shape[-2]), int(x.shape[-1])),
                    out_hw=(int(output.shape[-2]), int(output.shape[-1])),
                    bn_path=None,
                    calls=1,
                )
            self.outputs[id(output)] = (output, path)

        return hook

    def _bn_hook(self, path: str):
        def hook(bn, inputs) -> None:
            found = self.outputs.get(id(inputs[0]))
            if found is not None and found[0] is inputs[0]:
                self.layers[found[1]]["bn_path"] = path

        return hook


def layer_graph(
    module: nn.Module, input_size: tuple[int, int], *, batch: int = 1, channels: int = 3
) -> list[ConvLayer]:
    """Every `nn.Conv2d` of `module` in execution order, at an input of `input_size` (H, W)."""
    shape = (batch, channels, *input_size)
    _, recorder = traced_forward(module, shape, lambda: GraphRecorder(module))
    return recorder.conv_layers()
