"""Output sensitivities, against the teacher itself with one conv's output held at the key
frame's, and the weights the search draws from them."""

import pytest
import torch
from torch import nn

from nas.distill import output_loss
from nas.graph import layer_graph
from nas.pipeline import SearchOptions, search
from nas.sensitivity import layer_weights, output_sensitivity
from nas.supernet import DeltaModel
from search_spaces import build_candidate
from tests.conftest import TINY_SEARCH

SIZE = (32, 48)


class Branchy(nn.Module):
    """A stem, a residual branch of two convs, and a head: every change crosses the stem and
    the head, while the branch's is added to the change the shortcut carries."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = x + self.b(torch.relu(self.a(x)))
        return self.head(x)


def _frames():
    generator = torch.Generator().manual_seed(0)
    x_key = torch.randn(2, 3, *SIZE, generator=generator)
    return x_key, x_key + 0.3 * torch.randn(2, 3, *SIZE, generator=generator)


def _held(net: nn.Module, path: str, x_key: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
    """The teacher's output on frame t with conv `path`'s output held at the key frame's."""
    conv = net.get_submodule(path)
    kept = {}
    handle = conv.register_forward_hook(lambda m, args, out: kept.setdefault("out", out))
    net(x_key)
    handle.remove()
    handle = conv.register_forward_hook(lambda m, args, out: kept["out"])
    try:
        return net(x_t)
    finally:
        handle.remove()


def test_sensitivities_match_the_teacher_with_one_conv_held():
    torch.manual_seed(0)
    net = Branchy().eval()
    layers = layer_graph(net, SIZE)
    model = DeltaModel.build(
        net, layers, lambda layer, conv: build_candidate("full", layer, weight=conv.weight)
    ).eval()
    x_key, x_t = _frames()
    model.key_frame(x_key)
    found = output_sensitivity(model, x_t)

    with torch.no_grad():
        y_key, y_t = net(x_key), net(x_t)
        expected = [
            float(output_loss(_held(net, layer.path, x_key, x_t), y_t, y_key)) for layer in layers
        ]
        repeated = float(output_loss(y_key, y_t, y_key))  # the key frame's output, unchanged
    assert [layer.path for layer in layers] == ["stem", "a", "b", "head"]
    assert found.tolist() == pytest.approx(expected, rel=1e-4, abs=1e-7)
    by_path = dict(zip(["stem", "a", "b", "head"], found.tolist(), strict=True))
    # All of the output's change crosses the stem and the head: held, the output repeats the
    # key frame's. Only a share of it crosses the branch.
    assert by_path["stem"] == pytest.approx(repeated, rel=1e-5)
    assert by_path["head"] == pytest.approx(repeated, rel=1e-5)
    assert by_path["a"] < 0.9 * repeated and by_path["b"] < 0.9 * repeated


def test_weights_have_mean_one_keep_the_order_and_are_equal_on_still_frames():
    weights = layer_weights(torch.tensor([1.0, 0.1, 0.0], dtype=torch.float64))
    assert float(weights.mean()) == pytest.approx(1.0)
    assert weights[0] > weights[1] > weights[2] > 0
    assert layer_weights(torch.zeros(3, dtype=torch.float64)).tolist() == [1.0, 1.0, 1.0]


def test_per_frame_models_have_no_sensitivities():
    net = Branchy().eval()
    layers = layer_graph(net, SIZE)
    model = DeltaModel.build(
        net,
        layers,
        lambda layer, conv: build_candidate("full", layer, weight=conv.weight),
        per_frame=True,
    )
    with pytest.raises(ValueError, match="per-frame"):
        output_sensitivity(model, torch.zeros(1, 3, *SIZE))


@pytest.mark.parametrize("weighting", ["output", "uniform"])
def test_the_search_records_what_weighed_its_layers(tmp_path, weighting):
    options = SearchOptions(
        **(TINY_SEARCH | {"budget": "3MFLOPs", "out": str(tmp_path), "layer_weighting": weighting})
    )
    run = search(options)
    sensitivity = run.spec.search.get("output_sensitivity")
    assert run.spec.search["layer_weighting"] == weighting
    if weighting == "uniform":
        assert sensitivity is None
        return
    assert set(sensitivity) == {layer.path for layer in run.spec.layers}
    # The tiny teacher is a chain: every change crosses every conv, and holding any one of them
    # leaves the output at the key frame's.
    values = list(sensitivity.values())
    assert values[0] > 0.5
    assert values == pytest.approx([values[0]] * len(values), rel=1e-5)
