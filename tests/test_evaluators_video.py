"""Video evaluators: DIS flow and warping, temporal consistency, segmentation mIoU, by distance."""

import pytest
import torch
import torch.nn.functional as F

from evaluators import (
    EVALUATORS,
    ByDistance,
    SegmentationMetric,
    TemporalConsistency,
    consistency_mask,
    dis_flow,
    warp,
    warp_nearest,
)
from evaluators.agreement import miou
from nas.core.errors import NasError
from nas.data import load_frames, open_video
from nas.teachers import OutputKind

SHIFT = (2, 3)  # (dy, dx): frame t+1 is frame t moved 2 pixels down and 3 right


@pytest.fixture(scope="module")
def shifted_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """A real frame (72 x 88) and the same scene translated by SHIFT, both cut from one frame."""
    big = load_frames(open_video("sample:carphone", max_frames=1), size=(80, 96)).frames[0]
    dy, dx = SHIFT
    return big[:, 4:76, 4:92], big[:, 4 - dy : 76 - dy, 4 - dx : 92 - dx]


@pytest.fixture(scope="module")
def shapes():
    """Eight frames of moving shapes with exact labels, and those labels as one-hot logits."""
    stack = load_frames(open_video("synthetic:frames=8,size=64x96"))
    return stack.frames, F.one_hot(stack.labels.long(), 3).permute(0, 3, 1, 2).float()


def test_dis_flow_recovers_a_translation(shifted_pair):
    frame_t, frame_t1 = shifted_pair
    flow = dis_flow(frame_t, frame_t1)
    assert flow.shape == (2, 72, 88) and flow.dtype == torch.float32
    assert float(flow[0].median()) == pytest.approx(SHIFT[1], abs=0.5)  # dx first
    assert float(flow[1].median()) == pytest.approx(SHIFT[0], abs=0.5)


def test_warp_with_the_flow_reproduces_frame_t(shifted_pair):
    frame_t, frame_t1 = shifted_pair
    flow = dis_flow(frame_t, frame_t1)
    warped = warp(frame_t1[None].float(), flow[None])[0]
    error = (warped - frame_t.float()).abs()[:, 6:-6, 6:-6]
    assert float(error.mean()) < 2.0  # of 255
    mask = consistency_mask(frame_t, warped, 10.0)
    assert mask.shape == (72, 88) and float(mask[6:-6, 6:-6].float().mean()) > 0.99
    assert float(consistency_mask(frame_t, frame_t1.float(), 10.0).float().mean()) < 0.9


def test_warp_convention_on_an_exact_shift():
    x = torch.arange(42.0).view(1, 1, 6, 7)
    flow = torch.tensor([2.0, 1.0]).view(1, 2, 1, 1).expand(1, 2, 6, 7)  # dx = 2, dy = 1
    out = warp(x, flow)
    assert torch.equal(out[..., :5, :5], x[..., 1:, 2:])  # out(p) = x(p + flow(p))
    assert out[0, 0, 5, 6] == x[0, 0, 5, 6]  # border padding: the nearest edge value
    assert warp(x, flow, padding="zeros")[0, 0, 5, 6] == 0
    labels = torch.arange(42, dtype=torch.uint8).view(1, 6, 7)
    moved = warp_nearest(labels, flow)
    assert moved.dtype == torch.uint8 and torch.equal(moved[:, :5, :5], labels[:, 1:, 2:])


def test_warp_is_differentiable():
    x = torch.rand(1, 2, 8, 8, requires_grad=True)
    flow = torch.full((1, 2, 8, 8), 0.5)
    warp(x, flow).sum().backward()
    assert x.grad is not None
    assert float(x.grad.sum()) == pytest.approx(2 * 8 * 8)  # bilinear weights sum to 1 (border)


def test_flow_refuses_frames_too_small():
    frame = torch.zeros(3, 8, 40, dtype=torch.uint8)  # a size at which DIS would crash
    with pytest.raises(NasError, match="at least 16x16"):
        dis_flow(frame, frame)


def test_tc_of_a_static_video_is_one():
    generator = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (1, 3, 24, 32), dtype=torch.uint8, generator=generator)
    logits = torch.randn(1, 5, 24, 32, generator=generator).expand(4, -1, -1, -1)
    frames = frames.expand(4, -1, -1, -1)
    result = EVALUATORS.get("temporal_consistency")(
        logits, frames, kind=OutputKind.PIXEL_LOGITS, num_classes=5
    )
    assert result == {"tc": pytest.approx(1.0)}


def test_tc_follows_motion_and_drops_when_predictions_jump(shapes):
    frames, onehot = shapes
    tc = EVALUATORS.get("temporal_consistency")
    kind = OutputKind.PIXEL_LOGITS
    smooth = tc(onehot, frames, kind=kind, num_classes=3)["tc"]
    jumpy = tc(onehot[[0, 5, 2, 7, 1, 6, 3, 4]], frames, kind=kind, num_classes=3)["tc"]
    assert smooth > 0.8 and jumpy < smooth - 0.1
    # warping along the flow beats not warping at all: the flow direction is right
    still = TemporalConsistency(OutputKind.PIXEL_LOGITS, 3)
    still.update(onehot[:-1], onehot[1:], frames[:-1], frames[1:], flow=torch.zeros(7, 2, 64, 96))
    assert still.compute() < smooth


def test_tc_of_prob_maps_is_two_class_miou():
    metric = TemporalConsistency(OutputKind.PROB_MAP, 1, threshold=0.5)
    frame, flow = torch.zeros(3, 16, 16, dtype=torch.uint8), torch.zeros(2, 16, 16)
    pred_t, pred_t1 = torch.zeros(1, 16, 16), torch.zeros(1, 16, 16)
    pred_t[0, 0, :2] = 0.9
    pred_t1[0, 0, 0] = 0.9
    metric.update(pred_t, pred_t1, frame, frame, flow=flow)
    assert metric.compute() == pytest.approx((1 / 2 + 254 / 255) / 2)
    metric.update(pred_t * 0, pred_t1 * 0, frame, frame, flow=flow)  # no positives: 1
    assert metric.compute() == pytest.approx(((1 / 2 + 254 / 255) / 2 + 1) / 2)


def test_segmentation_against_a_hand_counted_confusion():
    labels = torch.tensor([[0, 0, 1], [1, 2, 255]], dtype=torch.uint8)
    pred = torch.tensor([[0, 1, 1], [1, 0, 2]])  # the last pixel is ignored
    metric = SegmentationMetric(4)  # class 3 never occurs: excluded from the mean
    metric.update(pred, labels)
    expected = torch.zeros(4, 4, dtype=torch.int64)
    expected[:3, :3] = torch.tensor([[1, 1, 0], [0, 2, 0], [1, 0, 0]])  # rows: label
    assert torch.equal(metric.confusion, expected)
    # IoU: class 0 1/3, class 1 2/3, class 2 0; 3 of 5 labelled pixels right
    assert metric.compute() == {"miou": pytest.approx(1 / 3), "pixel_acc": pytest.approx(3 / 5)}
    metric.update(F.one_hot(pred, 4).permute(2, 0, 1).float()[None], labels[None])  # logits too
    assert torch.equal(metric.confusion, 2 * expected)
    assert metric.compute()["miou"] == pytest.approx(1 / 3)
    with pytest.raises(NasError, match="class 7"):
        metric.update(pred, torch.full((2, 3), 7))


def test_segmentation_of_one_frame_is_miou():
    pred = torch.randint(0, 5, (12, 12), generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 4, (12, 12), generator=torch.Generator().manual_seed(2))
    result = EVALUATORS.get("segmentation")(pred, labels, num_classes=5)
    assert result["miou"] == pytest.approx(miou(pred, labels, 5))


def test_by_distance_groups_frames():
    teacher = torch.zeros(1, 1, 2, 2)
    teacher[0, 0, 0] = 0.9  # two positive pixels
    half = teacher.clone()
    half[0, 0, 0, 1] = 0.0  # one of them: agreement 1/2, mae 0.9 / 4
    table = ByDistance(threshold=0.5)
    table.update(2, half, teacher, OutputKind.PROB_MAP)
    table.update(0, teacher, teacher, OutputKind.PROB_MAP)
    table.update(1, torch.cat([teacher, half]), torch.cat([teacher, teacher]), OutputKind.PROB_MAP)
    assert table.table() == [
        {"distance": 0, "frames": 1, "agreement": 1.0, "mae": 0.0},
        {"distance": 1, "frames": 2, "agreement": 0.75, "mae": pytest.approx(0.1125)},
        {"distance": 2, "frames": 1, "agreement": 0.5, "mae": pytest.approx(0.225)},
    ]
    result = EVALUATORS.get("by_distance")(
        torch.cat([teacher, half, half]),
        torch.cat([teacher] * 3),
        [0, 1, 1],
        kind=OutputKind.PROB_MAP,
        threshold=0.5,
    )
    assert result == {
        "agreement_d0": 1.0,
        "mae_d0": 0.0,
        "agreement_d1": 0.5,
        "mae_d1": pytest.approx(0.225),
    }
