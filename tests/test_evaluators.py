"""Every registered evaluator runs and reports what its docstring promises."""

import pytest
import torch

from evaluators import EVALUATORS
from evaluators.agreement import miou
from nas.cost.macs import count_params
from nas.graph.layers import layer_graph
from nas.teachers import OutputKind


def _logits(seed: int) -> torch.Tensor:
    return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


CALLS = {
    "cost": lambda net: EVALUATORS.get("cost")(net, input_size=(32, 32)),
    "latency": lambda net: EVALUATORS.get("latency")(net, input_size=(32, 32), repeats=3),
    "agreement": lambda net: EVALUATORS.get("agreement")(
        _logits(0), _logits(1), kind=OutputKind.PIXEL_LOGITS
    ),
    "temporal_consistency": lambda net: EVALUATORS.get("temporal_consistency")(
        _logits(0).repeat_interleave(2, -1).repeat_interleave(2, -2),  # 16 x 16, DIS's least
        torch.randint(
            0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
        ),
        kind=OutputKind.PIXEL_LOGITS,
        num_classes=4,
    ),
    "segmentation": lambda net: EVALUATORS.get("segmentation")(
        _logits(0), _logits(1).argmax(1), num_classes=4
    ),
    "recognition": lambda net: EVALUATORS.get("recognition")(
        _logits(0).mean((2, 3))[None],
        _logits(0).mean((2, 3))[None],
        labels=[int(_logits(0).mean((2, 3)).mean(0).argmax())],
    ),
    "by_distance": lambda net: EVALUATORS.get("by_distance")(
        _logits(0), _logits(1), [0, 1], kind=OutputKind.PIXEL_LOGITS
    ),
}


def test_every_evaluator_has_a_test():
    assert set(CALLS) == set(EVALUATORS.names())


@pytest.mark.parametrize("name", EVALUATORS.names())
def test_every_evaluator_runs(name, tiny_net):
    result = CALLS[name](tiny_net.eval())
    assert result and all(value > 0 for value in result.values())


def test_cost_evaluator_matches_layer_sum(tiny_net):
    result = EVALUATORS.get("cost")(tiny_net, input_size=(32, 32))
    assert result["gflops"] * 1e9 == pytest.approx(
        sum(x.macs for x in layer_graph(tiny_net, (32, 32)))
    )
    assert result["params"] == count_params(tiny_net)


@pytest.mark.parametrize("kind", list(OutputKind))
def test_agreement_with_itself_is_perfect(kind):
    x = torch.rand(2, 1, 8, 8) if kind is OutputKind.PROB_MAP else _logits(0)
    x = x.flatten(1) if kind is OutputKind.IMAGE_LOGITS else x
    result = EVALUATORS.get("agreement")(x, x, kind=kind)
    assert result == {"agreement": 1.0, "mae": 0.0}


def test_miou_against_hand_count():
    a = torch.tensor([0, 0, 1, 1, 2])
    b = torch.tensor([0, 1, 1, 1, 0])
    # class 0: inter 1, union 3; class 1: inter 2, union 3; class 2: inter 0, union 1
    assert miou(a, b, 3) == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)


def test_prob_map_iou():
    teacher = torch.zeros(1, 1, 2, 2)
    teacher[0, 0, 0] = 0.9  # two positive pixels
    student = torch.zeros(1, 1, 2, 2)
    student[0, 0, 0, 0] = 0.8  # one of them
    result = EVALUATORS.get("agreement")(student, teacher, kind=OutputKind.PROB_MAP, threshold=0.5)
    assert result["agreement"] == pytest.approx(0.5)


@pytest.mark.parametrize("with_key", [True, False])
def test_stream_scores_by_hand(with_key):
    """`StreamScores` over a stream: the mean of each frame's agreement and MAE, R and the error
    against the key frame from the sums over every frame, worked out here from the formulas."""
    from evaluators import StreamScores

    generator = torch.Generator().manual_seed(0)
    teacher = [torch.rand(1, 1, 8, 8, generator=generator) for _ in range(4)]
    student = [t + 0.1 * torch.randn(t.shape, generator=generator) for t in teacher]
    key = torch.rand(1, 1, 8, 8, generator=generator)
    scores = StreamScores(OutputKind.PROB_MAP)
    for s, t in zip(student, teacher, strict=True):
        scores.update(s, t, key if with_key else None)
    found = scores.compute()

    def iou(a, b):
        a, b = a > 0.3, b > 0.3
        return float((a & b).sum() / (a | b).sum())

    assert found["agreement"] == pytest.approx(
        sum(iou(s, t) for s, t in zip(student, teacher, strict=True)) / 4
    )
    assert found["mae"] == pytest.approx(
        sum(float((s - t).abs().mean()) for s, t in zip(student, teacher, strict=True)) / 4
    )
    if not with_key:
        assert found["r"] is None and found["error_vs_key"] is None
        return
    own = sum(float((s - t).pow(2).sum()) for s, t in zip(student, teacher, strict=True))
    repeated = sum(float((key - t).pow(2).sum()) for t in teacher)
    assert found["r"] == pytest.approx(1 - own / repeated)
    mean_abs = [float((s - t).abs().mean()) for s, t in zip(student, teacher, strict=True)]
    assert found["error_vs_key"] == pytest.approx(
        sum(mean_abs) / sum(float((key - t).abs().mean()) for t in teacher)
    )
