"""Pooling and resizing as matrix products agree with PyTorch's own kernels."""

import pytest
import torch
import torch.nn.functional as F

from nas.core.resample import avg_pool, bilinear


@pytest.mark.parametrize("hw", [(33, 33), (17, 30), (8, 8), (1, 1), (65, 7)])
def test_avg_pool_matches_ceil_mode_avg_pool2d(hw):
    x = torch.randn(2, 5, *hw, generator=torch.Generator().manual_seed(0))
    expected = F.avg_pool2d(x, 2, ceil_mode=True)
    got = avg_pool(x, 2)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("hw", "size"),
    [
        ((17, 17), (33, 33)),
        ((9, 5), (17, 10)),
        ((33, 33), (520, 520)),
        ((1, 1), (4, 3)),
        ((12, 12), (5, 7)),
    ],
)
def test_bilinear_matches_interpolate(hw, size):
    x = torch.randn(1, 7, *hw, generator=torch.Generator().manual_seed(1))
    expected = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    got = bilinear(x, size)
    assert got.shape == expected.shape
    # PyTorch computes the sampling weights in float32, the matrices hold them in float64.
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=5e-5)


def test_channels_last_keeps_its_layout_and_values():
    x = torch.randn(1, 6, 9, 9).to(memory_format=torch.channels_last)
    pooled = avg_pool(x, 2)
    assert pooled.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(pooled, F.avg_pool2d(x, 2, ceil_mode=True))
    torch.testing.assert_close(
        bilinear(pooled, (9, 9)),
        F.interpolate(pooled, size=(9, 9), mode="bilinear", align_corners=False),
    )


def test_gradients_match_the_reference_ops():
    x = torch.randn(1, 3, 11, 13, requires_grad=True)
    y = bilinear(avg_pool(x, 2), (11, 13))
    (grad,) = torch.autograd.grad((y * y).sum(), x)
    ref = F.interpolate(
        F.avg_pool2d(x, 2, ceil_mode=True), size=(11, 13), mode="bilinear", align_corners=False
    )
    (expected,) = torch.autograd.grad((ref * ref).sum(), x)
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-5)


def test_inference_mode_and_float64():
    x = torch.randn(1, 2, 10, 10, dtype=torch.float64)
    with torch.inference_mode():
        got = bilinear(avg_pool(x, 2), (10, 10))
    assert got.dtype == torch.float64
    ref = F.interpolate(F.avg_pool2d(x, 2, ceil_mode=True), size=(10, 10), mode="bilinear")
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
