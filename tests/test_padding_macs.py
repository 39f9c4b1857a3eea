"""Products with zero padding: what the multiply-add count includes but a kernel may skip.

The reference is independent of the counting code: a convolution of an all-ones input with an
all-ones kernel (same geometry) sums, at each output, the taps that land on the input."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas.cost.macs import conv_padding_macs, count_macs, padding_macs
from nas.graph.layers import conv_macs, layer_graph
from nas.teachers import load_teacher


def _reference(conv: nn.Conv2d, in_hw) -> int:
    """Padding products of one call, from ones convolved with ones."""
    ones = torch.ones(1, 1, *in_hw, dtype=torch.float64)
    kernel = torch.ones(1, 1, *conv.kernel_size, dtype=torch.float64)
    read = F.conv2d(ones, kernel, stride=conv.stride, padding=conv.padding, dilation=conv.dilation)
    every = read.numel() * conv.kernel_size[0] * conv.kernel_size[1]
    return int(every - read.sum().item()) * (conv.in_channels // conv.groups) * conv.out_channels


@pytest.mark.parametrize(
    ("c_in", "c_out", "kernel", "stride", "padding", "dilation", "groups", "in_hw"),
    [
        (8, 4, 3, 1, 1, 1, 1, (9, 7)),
        (8, 8, 3, 2, 1, 1, 8, (10, 11)),  # depthwise, stride 2, odd and even sizes
        (6, 4, 5, 1, 2, 1, 1, (5, 5)),
        (4, 4, 3, 1, 12, 12, 1, (33, 33)),  # ASPP rates on a 33 x 33 map
        (4, 4, 3, 1, 24, 24, 1, (33, 33)),
        (4, 4, 3, 1, 36, 36, 1, (33, 33)),
        (4, 2, (3, 1), (2, 1), (1, 0), (2, 1), 1, (17, 9)),
        (4, 4, 3, 1, "same", 2, 1, (12, 10)),
    ],
)
def test_padding_products_match_a_convolution_of_ones(
    c_in, c_out, kernel, stride, padding, dilation, groups, in_hw
):
    conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, groups)
    assert conv_padding_macs(conv, in_hw) == _reference(conv, in_hw)


def test_no_padding_or_read_padding_has_no_padding_products():
    assert conv_padding_macs(nn.Conv2d(4, 4, 3), (9, 9)) == 0
    assert conv_padding_macs(nn.Conv2d(4, 4, 3, padding=2, padding_mode="reflect"), (9, 9)) == 0
    assert conv_padding_macs(nn.Conv2d(4, 4, 3, padding=1), (9, 9)) > 0


def test_deeplab_rate_36_branch_executes_its_centre_tap_only():
    """At 520 x 520 the map is 33 x 33: the rate-36 conv reads the input with its centre tap
    alone, so it executes exactly the multiply-adds of a 1 x 1 conv; the network's padding
    products are its convs' own."""
    teacher = load_teacher("deeplabv3")
    size = (520, 520)
    layers = {layer.path: layer for layer in layer_graph(teacher.module, size)}
    aspp = layers["classifier.0.convs.3.0"]
    assert aspp.dilation == (36, 36) and aspp.in_hw == (33, 33)
    conv = teacher.module.get_submodule(aspp.path)
    centre = conv_macs(c_in=aspp.c_in, c_out=aspp.c_out, kernel=(1, 1), out_hw=aspp.out_hw)
    assert aspp.macs - conv_padding_macs(conv, aspp.in_hw) == centre
    total = padding_macs(teacher.module, (1, 3, *size))
    by_layer = sum(
        conv_padding_macs(teacher.module.get_submodule(p), layer.in_hw) * layer.calls
        for p, layer in layers.items()
    )
    assert total == by_layer
    assert total > 0.4 * count_macs(teacher.module, size)  # the pyramid: most of the network
