"""Temporal-consistency loss: DIS flow pairs, the occlusion mask, and the masked warped distance."""

import pytest
import torch
import torch.nn.functional as F

from nas.core.errors import NasError
from nas.student.tc_loss import DEFAULT_TC_WEIGHT, FlowPair, flow_pairs, image_mask, tc_loss
from nas.teachers import OutputKind

H, W = 64, 80  # frame size
SIDE, SHIFT = 20, 3  # a textured square SIDE pixels wide moves SHIFT pixels right from t to t+k
X0, Y0 = 20, 22  # the square's top-left corner in frame t


def texture(height: int, width: int, cell: int, seed: int) -> torch.Tensor:
    """Smooth random RGB texture, float 3 x height x width in [0, 255] (blobs of about `cell`)."""
    gen = torch.Generator().manual_seed(seed)
    small = torch.randint(0, 256, (1, 3, height // cell + 2, width // cell + 2), generator=gen)
    big = F.interpolate(small.float(), size=(height + 2 * cell, width + 2 * cell), mode="bilinear")
    return big[0, :, cell : cell + height, cell : cell + width]


BACKGROUND = texture(H, W, cell=16, seed=1) * 0.3 + 80  # faint, so the square dominates
SQUARE = texture(SIDE, SIDE, cell=3, seed=2)


def square_frame(x0: int) -> torch.Tensor:
    frame = BACKGROUND.clone()
    frame[:, Y0 : Y0 + SIDE, x0 : x0 + SIDE] = SQUARE
    return frame.round().clamp(0, 255).to(torch.uint8)


def square_logits(x0: int, size: tuple[int, int] = (H, W), scale: float = 5.0) -> torch.Tensor:
    """Two-class logits 1 x 2 x H x W: class 1 on the square with its corner at column x0."""
    inside = torch.zeros(size)
    inside[Y0 : Y0 + SIDE, x0 : x0 + SIDE] = 1
    return torch.stack([1 - inside, inside])[None] * scale


def smooth_logits(height: int, width: int, shift: float = 0.0) -> torch.Tensor:
    """Smooth two-class logits sampled on a height x width grid spanning the H x W frame."""
    ys = torch.linspace(0, H - 1, height).view(-1, 1)
    xs = torch.linspace(0, W - 1, width).view(1, -1) - shift
    z = 2 * torch.sin(xs / 7) + torch.cos(ys / 9)
    return torch.stack([z, -z])[None]


@pytest.fixture(scope="module")
def moving_square() -> tuple[torch.Tensor, torch.Tensor, FlowPair]:
    frame_t, frame_tk = square_frame(X0)[None], square_frame(X0 + SHIFT)[None]
    return frame_t, frame_tk, flow_pairs(frame_t, frame_tk)


@pytest.fixture(scope="module")
def panning() -> FlowPair:
    """The whole scene moves SHIFT pixels right: two crops of one larger texture."""
    big = texture(H + 10, W + 10, cell=6, seed=4).round().to(torch.uint8)
    frame_t, frame_tk = big[:, 5 : 5 + H, 5 : 5 + W], big[:, 5 : 5 + H, 5 - SHIFT : 5 - SHIFT + W]
    return flow_pairs(frame_t[None], frame_tk[None])


def test_flow_pairs_follow_the_flow_convention(moving_square):
    _, _, pair = moving_square
    assert len(pair) == 1 and pair.size == (H, W)
    assert pair.flow.shape == (1, 2, H, W) and pair.mask.shape == (1, 1, H, W)
    assert pair.flow.dtype == pair.mask.dtype == torch.float32
    inside = pair.flow[0, :, Y0 + 3 : Y0 + SIDE - 3, X0 + 3 : X0 + SIDE - 6]
    assert float(inside[0].median()) == pytest.approx(SHIFT, abs=0.5)  # frame t(p) ~ t+k(p + dx)
    assert float(inside[1].median()) == pytest.approx(0, abs=0.5)
    assert float(pair.flow[0, :, :10, 55:].abs().max()) < 0.5  # the background stays put
    assert float(pair.mask.min()) >= 0 and float(pair.mask.max()) <= 1
    assert not pair.flow.requires_grad and not pair.mask.requires_grad


def test_static_video_costs_exactly_nothing():
    frame = square_frame(X0)[None].expand(2, -1, -1, -1)
    pair = flow_pairs(frame, frame)
    assert torch.equal(pair.mask, torch.ones(2, 1, H, W))
    logits = torch.cat([square_logits(X0), torch.randn(1, 2, H, W)])
    assert tc_loss(logits, logits.clone(), pair, OutputKind.PIXEL_LOGITS).item() == 0.0
    probs = logits[:, :1].sigmoid()
    assert tc_loss(probs, probs.clone(), pair, OutputKind.PROB_MAP).item() == 0.0


def test_predictions_that_stay_put_cost_more_than_ones_that_move(moving_square):
    _, _, pair = moving_square
    pred_t = square_logits(X0)
    stuck = tc_loss(pred_t, square_logits(X0), pair, "pixel_logits")
    following = tc_loss(pred_t, square_logits(X0 + SHIFT), pair, "pixel_logits")
    assert float(stuck) > 0.01
    assert float(following) < float(stuck) / 10


def test_gradients_reach_both_predictions(moving_square):
    _, _, pair = moving_square
    pred_t = square_logits(X0).requires_grad_()
    pred_tk = square_logits(X0).requires_grad_()
    loss = DEFAULT_TC_WEIGHT * tc_loss(pred_t, pred_tk, pair, OutputKind.PIXEL_LOGITS)
    loss.backward()
    for grad in (pred_t.grad, pred_tk.grad):
        assert grad is not None and torch.isfinite(grad).all() and float(grad.abs().sum()) > 0


def test_mask_is_low_where_an_object_appears():
    frame_t = texture(H, W, cell=6, seed=3).round().to(torch.uint8)
    frame_tk = frame_t.clone()
    frame_tk[:, 20:40, 30:50] = torch.tensor([250, 30, 200], dtype=torch.uint8).view(3, 1, 1)
    for pair in (
        flow_pairs(frame_t[None], frame_tk[None]),
        flow_pairs(frame_t[None].float(), frame_tk[None].float()),
    ):
        assert float(pair.mask[0, 0, 22:38, 32:48].mean()) < 0.1  # the new object
        assert float(pair.mask[0, 0, 50:].mean()) > 0.95  # the rest of the scene, well away
    hard = flow_pairs(frame_t[None], frame_tk[None], hard_threshold=10.0).mask
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    assert float(hard[0, 0, 22:38, 32:48].mean()) < 0.1 and float(hard[0, 0, 50:].mean()) > 0.95


def test_image_mask_is_the_papers_exponential():
    a = torch.full((1, 3, 2, 2), 100.0)
    b = a.clone()
    b[0, :, 0, 0] += torch.tensor([58.395, -57.12, 0.0])  # one ImageNet std in R, minus one in G
    mask = image_mask(a, b)
    assert mask[0, 0, 0, 0].item() == pytest.approx(torch.exp(torch.tensor(-2.0)).item())
    assert mask[0, 0, 1, 1].item() == 1.0


def test_batch_split_gives_the_mean_of_the_parts(moving_square, panning):
    _, _, square_pair = moving_square
    pair = FlowPair(
        torch.cat([square_pair.flow, panning.flow]), torch.cat([square_pair.mask, panning.mask])
    )
    pred_t = torch.cat([square_logits(X0), smooth_logits(H, W)])
    pred_tk = torch.cat([square_logits(X0), smooth_logits(H, W)])
    whole = tc_loss(pred_t, pred_tk, pair, "pixel_logits")
    parts = [
        tc_loss(pred_t[i : i + 1], pred_tk[i : i + 1], pair[i : i + 1], "pixel_logits")
        for i in range(2)
    ]
    assert float(whole) == pytest.approx(float(sum(parts)) / 2, rel=1e-5)
    assert float(parts[0]) != pytest.approx(float(parts[1]), rel=0.1)  # not the same pair twice


def test_prob_maps(moving_square):
    _, _, pair = moving_square
    prob_t = square_logits(X0)[:, 1:] / 5  # 1 on the square, 0 elsewhere
    stuck = tc_loss(prob_t, square_logits(X0)[:, 1:] / 5, pair, OutputKind.PROB_MAP)
    following = tc_loss(prob_t, square_logits(X0 + SHIFT)[:, 1:] / 5, pair, OutputKind.PROB_MAP)
    assert float(stuck) > 0.01 and float(following) < float(stuck) / 10
    with pytest.raises(NasError, match="N x 1 x H x W"):
        tc_loss(torch.rand(1, 2, H, W), torch.rand(1, 2, H, W), pair, OutputKind.PROB_MAP)


def test_image_logits_compare_the_two_frames_probabilities():
    logits_t = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]], requires_grad=True)
    logits_tk = torch.tensor([[2.0, 0.0, -1.0], [3.0, 0.5, 0.5]], requires_grad=True)
    loss = tc_loss(logits_t, logits_tk, None, OutputKind.IMAGE_LOGITS)
    p_t, p_tk = logits_t.softmax(1), logits_tk.softmax(1)
    assert float(loss) == pytest.approx(float((p_t - p_tk).square().sum(1).mean()))
    assert float(loss) > 0
    assert tc_loss(logits_t, logits_t, None, "image_logits").item() == 0.0
    loss.backward()
    assert float(logits_t.grad.abs().sum()) > 0 and float(logits_tk.grad.abs().sum()) > 0


def test_half_size_predictions_give_a_similar_loss(panning):
    assert float(panning.flow[0, 0].median()) == pytest.approx(SHIFT, abs=0.5)
    full = tc_loss(smooth_logits(H, W), smooth_logits(H, W), panning, "pixel_logits")
    half_size = (H // 2, W // 2)
    half = tc_loss(smooth_logits(*half_size), smooth_logits(*half_size), panning, "pixel_logits")
    assert float(full) > 0.01
    assert float(half) == pytest.approx(float(full), rel=0.15)
    flow, mask = panning.at(half_size)
    assert flow.shape == (1, 2, *half_size) and mask.shape == (1, 1, *half_size)
    ratio = (half_size[1] - 1) / (W - 1)  # flow vectors in the half-size map's pixels
    assert float(flow[0, 0].median()) == pytest.approx(
        float(panning.flow[0, 0].median()) * ratio, abs=0.1
    )
    following = tc_loss(
        smooth_logits(*half_size), smooth_logits(*half_size, shift=SHIFT), panning, "pixel_logits"
    )
    assert float(following) < float(half) / 10


def test_mistakes_are_reported(moving_square):
    frame_t, frame_tk, pair = moving_square
    with pytest.raises(NasError, match="needs the flow"):
        tc_loss(square_logits(X0), square_logits(X0), None, "pixel_logits")
    with pytest.raises(NasError, match="one flow pair per prediction pair"):
        tc_loss(torch.rand(2, 2, H, W), torch.rand(2, 2, H, W), pair, "pixel_logits")
    with pytest.raises(NasError, match="of one shape"):
        tc_loss(torch.rand(1, 2, H, W), torch.rand(1, 2, H // 2, W // 2), pair, "pixel_logits")
    with pytest.raises(NasError, match="expected one frame t\\+k per frame t"):
        flow_pairs(frame_t, frame_tk[:, :, :32])
    with pytest.raises(NasError, match="expected RGB frames"):
        flow_pairs(frame_t[0], frame_tk[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_frames_and_predictions_on_the_gpu(moving_square):
    frame_t, frame_tk, cpu_pair = moving_square
    pair = flow_pairs(frame_t.cuda(), frame_tk.cuda().float())
    assert pair.flow.device.type == "cpu" and torch.allclose(pair.mask, cpu_pair.mask)
    pred_t = square_logits(X0).cuda().requires_grad_()
    pred_tk = square_logits(X0).cuda().half().requires_grad_()
    loss = tc_loss(pred_t, pred_tk, pair, "pixel_logits")
    assert loss.device.type == "cuda" and loss.dtype == torch.float32
    expected = tc_loss(square_logits(X0), square_logits(X0), cpu_pair, "pixel_logits")
    assert float(loss) == pytest.approx(float(expected), rel=1e-3)
    loss.backward()
    assert pred_tk.grad is not None and torch.isfinite(pred_tk.grad).all()
