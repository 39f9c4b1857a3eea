"""Data-aware low-rank starts: measured on the deltas a layer sees, they beat the plain SVD."""

import pytest
import torch
from torch import nn

from nas.graph.layers import layer_graph
from nas.student.statistics import delta_statistics
from search_spaces import InputStats, build_candidate, max_rank


def _correlated_deltas(c_in: int, n: int, seed: int) -> torch.Tensor:
    """Input changes that live mostly in a few channel directions, as real ones do."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(c_in, 3, generator=g)
    coeffs = torch.randn(n, 3, 12, 12, generator=g)
    noise = 0.05 * torch.randn(n, c_in, 12, 12, generator=g)
    return torch.einsum("cb,nbhw->nchw", basis, coeffs) + noise


@pytest.mark.parametrize(("kind", "kernel"), [("lowrank", 1), ("lowrank", 3), ("sep", 3)])
def test_data_aware_start_beats_plain_svd_and_stays_exact(kind, kernel):
    torch.manual_seed(0)  # the conv's init: not whatever the tests before left the generator at
    conv = nn.Conv2d(16, 24, kernel, padding=kernel // 2, bias=False)
    net = nn.Sequential(conv)
    (layer,) = layer_graph(net, (12, 12), channels=16)
    key = torch.zeros(4, 16, 12, 12)
    frames = _correlated_deltas(16, 4, seed=0)
    stats = delta_statistics(net, net, [layer], [(key, frames)], generator=torch.Generator())
    test = _correlated_deltas(16, 4, seed=0)  # the deltas it was measured on
    with torch.no_grad():
        target = conv(test)

        def error(block):
            return float((block(test) - target).pow(2).mean() / target.pow(2).mean())

        rank = 3
        plain = build_candidate(f"{kind}_r{rank}", layer, weight=conv.weight)
        aware = build_candidate(
            f"{kind}_r{rank}", layer, weight=conv.weight, stats=stats[layer.path]
        )
        assert error(aware) < 0.8 * error(plain)
        top = max_rank(kind, layer)
        exact = build_candidate(
            f"{kind}_r{top}", layer, weight=conv.weight, stats=stats[layer.path]
        )
        assert error(exact) < 1e-8


def test_statistics_layouts_and_limits():
    net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8))
    layers = layer_graph(net, (10, 10), channels=4)
    pairs = [(torch.zeros(2, 4, 10, 10), torch.randn(2, 4, 10, 10))]
    stats = delta_statistics(net, net, layers, pairs, generator=torch.Generator())
    assert set(stats) == {"0"}  # grouped convs take only full and zero: no statistics
    assert stats["0"].patch.shape == (36, 36) and stats["0"].vertical.shape == (12, 12)
    small = delta_statistics(net, net, layers, pairs, generator=torch.Generator(), max_dim=20)
    assert small["0"].patch is None and small["0"].vertical.shape == (12, 12)
    assert isinstance(small["0"], InputStats)
