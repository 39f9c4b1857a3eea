"""Folding BatchNorm into the conv before it, so each searched conv+BN pair is one linear map.

In eval mode `bn(conv(x)) = s * (W * x + b - mean) + beta` with `s = gamma / sqrt(var + eps)`,
which is the conv with weight `s * W` and bias `s * (b - mean) + beta`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from nas.graph.layers import ConvLayer


def folded_conv(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm | None) -> nn.Conv2d:
    """A new conv (with bias) equal to `bn(conv(x))` in eval mode, or a copy of `conv`."""
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        bias = conv.bias if conv.bias is not None else torch.zeros_like(conv.weight[:, 0, 0, 0])
        if bn is None:
            fused.weight.copy_(conv.weight)
            fused.bias.copy_(bias)
        else:
            gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
            beta = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
            scale = gamma / torch.sqrt(bn.running_var + bn.eps)
            fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
            fused.bias.copy_((bias - bn.running_mean) * scale + beta)
    return fused.eval()


def fold_batchnorms(module: nn.Module, layers: list[ConvLayer]) -> nn.Module:
    """A copy of `module` (eval mode) in which each conv of `layers` absorbs its BatchNorm."""
    folded = copy.deepcopy(module).eval()
    for layer in layers:
        conv = folded.get_submodule(layer.path)
        bn = folded.get_submodule(layer.bn_path) if layer.bn_path else None
        folded.set_submodule(layer.path, folded_conv(conv, bn))
        if layer.bn_path:
            folded.set_submodule(layer.bn_path, nn.Identity())
    return folded
