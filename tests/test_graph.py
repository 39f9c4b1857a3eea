"""The layer graph: convs in execution order, their shapes, and the BatchNorms to fold."""

import pytest
import torch
from torch import nn

from nas.graph.layers import layer_graph
from nas.teachers import load_teacher


def test_tiny_net_shapes_in_execution_order(tiny_net):
    layers = layer_graph(tiny_net, (32, 48))
    assert [layer.path for layer in layers] == ["stem.0", "dw", "pw", "dilated", "head"]
    stem, dw, pw, dilated, head = layers
    assert (stem.c_in, stem.c_out, stem.stride, stem.in_hw, stem.out_hw) == (
        3,
        8,
        (2, 2),
        (32, 48),
        (16, 24),
    )
    assert stem.bn_path == "stem.1" and dw.bn_path is None
    assert dw.depthwise and not pw.depthwise and dw.groups == 8
    assert dilated.dilation == (2, 2) and dilated.padding == (2, 2) and dilated.out_hw == (16, 24)
    assert head.c_out == 3 and head.bias and not stem.bias
    assert [layer.index for layer in layers] == list(range(5))


def test_graph_matches_real_run_shapes(tiny_net):
    """Shapes from the meta trace equal those of a real forward pass on CPU."""
    seen = {}

    def record(path):
        def hook(module, inputs, output):
            seen[path] = (inputs[0].shape, output.shape)

        return hook

    hooks = [
        m.register_forward_hook(record(p))
        for p, m in tiny_net.named_modules()
        if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        tiny_net(torch.randn(1, 3, 37, 53))
    for hook in hooks:
        hook.remove()
    for layer in layer_graph(tiny_net, (37, 53)):
        x_shape, y_shape = seen[layer.path]
        assert (layer.c_in, *layer.in_hw) == tuple(x_shape[1:])
        assert (layer.c_out, *layer.out_hw) == tuple(y_shape[1:])


def test_trace_leaves_module_untouched(tiny_net):
    before = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    layer_graph(tiny_net, (16, 16))
    assert all(torch.equal(before[k], v) for k, v in tiny_net.state_dict().items())
    assert all(p.device.type == "cpu" for p in tiny_net.parameters())


def test_reused_conv_counts_calls():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return self.conv(self.conv(x))

    (layer,) = layer_graph(Twice(), (8, 8))
    assert layer.calls == 2
    assert layer.macs == 2 * 3 * 8 * 8 * 3 * 9


def test_string_padding():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding="same", dilation=2), nn.Conv2d(4, 4, 3, padding="valid")
    )
    same, valid = layer_graph(net, (10, 10))
    assert same.padding == (2, 2) and same.out_hw == (10, 10)
    assert valid.padding == (0, 0) and valid.out_hw == (8, 8)


def test_deeplabv3_graph_folds_batchnorms():
    teacher = load_teacher("deeplabv3", device="meta")
    layers = layer_graph(teacher.module, (520, 520))
    assert len(layers) == len([m for m in teacher.module.modules() if isinstance(m, nn.Conv2d)])
    by_path = {layer.path: layer for layer in layers}
    first = by_path["backbone.0.0"]
    assert (
        first.bn_path == "backbone.0.1" and first.in_hw == (520, 520) and first.out_hw == (260, 260)
    )
    # The last classifier conv has a bias and no BatchNorm after it.
    assert by_path["classifier.4"].bn_path is None and by_path["classifier.4"].bias
    # Every BatchNorm of the model follows a conv directly, so each is found with its conv.
    bns = {p for p, m in teacher.module.named_modules() if isinstance(m, nn.BatchNorm2d)}
    found = {layer.bn_path for layer in layers if layer.bn_path}
    assert found <= bns and len(found) >= len(bns) - 1  # ASPP pooling's BN follows a 1x1 output
    assert sum(layer.depthwise for layer in layers) > 10


@pytest.mark.parametrize("size", [(97, 131), (1024, 2048)])
def test_graph_any_input_size(size):
    teacher = load_teacher("deeplabv3_resnet101", device="meta")
    layers = layer_graph(teacher.module, size)
    assert layers[0].in_hw == size and len(layers) == 112
