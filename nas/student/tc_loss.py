"""Differentiable temporal-consistency (TC) loss for per-frame students.

Liu, Shen, Yu and Wang, "Efficient Semantic Video Segmentation with Per-frame Inference" (ECCV
2020) train a per-frame network with a temporal loss between frames t and t+k: the prediction of
frame t+k, warped onto frame t by optical flow, should equal the prediction of frame t wherever
the warped image t+k matches image t. With `Q` the predicted class probabilities, `I` the images,
`^` the backward warp of t+k onto t (`evaluators.flow.warp`) and `i` the pixels:

    O(i)  = exp(-|I_t(i) - ^I_t+k(i)|)                       soft non-occlusion mask, in (0, 1]
    l_tc  = sum_i O(i) ||Q_t(i) - ^Q_t+k(i)||^2 / sum_i O(i)   per pair, then mean over pairs

How this module reads the formulation, and where it departs from the published code
(github.com/irfanICMLL/ETC-Real-time-Per-frame-Semantic-video-segmentation, `model/flow_model.py`):

- The mask is computed on the network's input scale, as there: images normalised by the ImageNet
  statistics, so a difference of d grey levels in channel c counts `d / (255 * std_c)`. The code
  takes `exp(-|sum_c diff_c|)`, a *signed* sum over channels in which a red-to-green change can
  cancel out; here `|.|` is the L1 norm over the channels, `exp(-sum_c |diff_c|)`, which agrees
  with it wherever the channels change in the same direction and never mistakes a change of colour
  for a match. A hard variant (`evaluators.flow.consistency_mask`) is available through
  `flow_pairs(..., hard_threshold=...)`.
- The distance is on class probabilities (softmax over the classes), squared and summed over
  classes, as the paper writes it (`q` is a class probability there); the published code applies
  a mean squared error to the logits (`mse(z_t * O, ^z_t+k * O)`, so O squared, averaged over
  classes and pixels). Probabilities bound the loss (at most 2 a pixel) and do not push logits
  that already agree on the class towards equal magnitudes.
- The weighted sum is normalised by the mask's sum (the paper divides by the pixel count), so the
  loss is a weighted mean over the trusted pixels, independent of the image size and of how much
  of the frame is occluded; each pair is normalised on its own and pairs are averaged, so a batch
  split into parts gives the mean of the parts' losses.
- The flow is OpenCV's DIS (`evaluators.flow.dis_flow`, computed once per batch on the CPU,
  without gradient) rather than FlowNet 2.0; flow and mask are constants for the loss, whose
  gradient reaches both predictions (the paper does not stop either).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from evaluators.flow import consistency_mask, dis_flow, warp
from nas.core.errors import NasError
from nas.spec import DEFAULT_TC_WEIGHT  # noqa: F401  (the weight the spec records by default)
from nas.teachers.base import IMAGENET, OutputKind

# Per-channel scale of image differences in the mask: the ImageNet std in grey levels, the units
# of the normalised images the paper's mask is computed on.
MASK_SCALE = tuple(255.0 * s for s in IMAGENET["std"])

_EPS = 1e-8


@dataclass(frozen=True)
class FlowPair:
    """Flow from frame t to t+k and the mask of where it can be trusted, for a batch of pairs.

    `flow` is float32 N x 2 x H x W in pixels (`evaluators.flow` convention: frame_t(p) ~
    frame_tk(p + flow(p)), dx first); `mask` is float32 N x 1 x H x W in [0, 1], 1 where the
    warped image t+k matches image t. Both at the images' size, on the CPU, without gradient.
    """

    flow: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self) -> None:
        f, m = self.flow, self.mask
        if f.dim() != 4 or f.shape[1] != 2 or m.shape != (f.shape[0], 1, *f.shape[2:]):
            raise NasError(
                f"flow of shape {tuple(f.shape)} and mask of shape {tuple(m.shape)}: expected "
                "N x 2 x H x W and N x 1 x H x W"
            )

    def __len__(self) -> int:
        return self.flow.shape[0]

    def __getitem__(self, index: slice) -> FlowPair:
        """The pairs `index` (a slice) of the batch."""
        if not isinstance(index, slice):
            raise NasError("a FlowPair is indexed by a slice of its pairs (pair[a:b])")
        return FlowPair(self.flow[index], self.mask[index])

    @property
    def size(self) -> tuple[int, int]:
        return (self.flow.shape[2], self.flow.shape[3])

    def at(
        self, size: tuple[int, int], device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flow and mask resampled to `size` (height, width), flow vectors scaled to that size.

        Sizes relate as `warp` samples them, corner pixels on corner pixels (align_corners): a
        displacement of dx image pixels is `dx * (w - 1) / (W - 1)` pixels of a map w wide. The
        flow is interpolated bilinearly; the mask is area-averaged when shrunk (a thin occluded
        band still lowers the pixel it falls in) and interpolated bilinearly otherwise.
        """
        flow, mask = self.flow, self.mask
        height, width = self.size
        h, w = size
        if (h, w) != (height, width):
            flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=True)
            scale = torch.tensor(
                [(w - 1) / max(width - 1, 1), (h - 1) / max(height - 1, 1)], dtype=flow.dtype
            )
            flow = flow * scale.view(1, 2, 1, 1)
            if h <= height and w <= width:
                mask = F.interpolate(mask, size=(h, w), mode="area")
            else:
                mask = F.interpolate(mask, size=(h, w), mode="bilinear", align_corners=True)
        return flow.to(device), mask.to(device)


def _frames_uint8(images: torch.Tensor, name: str) -> torch.Tensor:
    if images.dim() != 4 or images.shape[1] != 3:
        raise NasError(
            f"{name} of shape {tuple(images.shape)}: expected RGB frames N x 3 x H x W, uint8 or "
            "float in [0, 255]"
        )
    images = images.detach().cpu()
    if images.dtype != torch.uint8:
        images = images.float().round().clamp(0, 255).to(torch.uint8)
    return images


def image_mask(images_t: torch.Tensor, warped_tk: torch.Tensor) -> torch.Tensor:
    """The paper's soft mask `exp(-|I_t - ^I_t+k|)` on ImageNet-normalised images: N x 1 x H x W.

    Images are N x 3 x H x W in [0, 255]; `|.|` is the L1 norm over the three channels.
    """
    scale = torch.tensor(MASK_SCALE, device=images_t.device).view(1, 3, 1, 1)
    diff = ((images_t.float() - warped_tk.float()).abs() / scale).sum(1, keepdim=True)
    return torch.exp(-diff)


def _warp_exact(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """`warp`, leaving the pairs whose flow is exactly zero untouched (no resampling round-off)."""
    still = ~flow.flatten(1).any(1)
    if bool(still.all()):
        return x
    warped = warp(x, flow)
    return torch.where(still.view(-1, 1, 1, 1), x, warped)


@torch.no_grad()
def flow_pairs(
    images_t: torch.Tensor,
    images_tk: torch.Tensor,
    *,
    preset: str = "medium",
    hard_threshold: float | None = None,
) -> FlowPair:
    """Flow warping frame t+k onto frame t, and its mask, for a batch of frame pairs.

    `images_t`, `images_tk`: N x 3 x H x W RGB, uint8 or float in [0, 255], on any device (copied
    to the CPU for DIS, `preset` `ultrafast`, `fast` or `medium`). The mask is the paper's soft
    `exp(-|I_t - ^I_t+k|)` (`image_mask`), or with `hard_threshold` the binary
    `evaluators.flow.consistency_mask` (mean |RGB difference| below it, in grey levels).
    """
    frames_t = _frames_uint8(images_t, "images_t")
    frames_tk = _frames_uint8(images_tk, "images_tk")
    if frames_t.shape != frames_tk.shape:
        raise NasError(
            f"images_t of shape {tuple(frames_t.shape)} and images_tk of shape "
            f"{tuple(frames_tk.shape)}: expected one frame t+k per frame t, of one size"
        )
    flow = torch.stack(
        [dis_flow(a, b, preset=preset) for a, b in zip(frames_t, frames_tk, strict=True)]
    )
    warped = _warp_exact(frames_tk.float(), flow)
    if hard_threshold is None:
        mask = image_mask(frames_t, warped)
    else:
        mask = consistency_mask(frames_t, warped, hard_threshold).float().unsqueeze(1)
    return FlowPair(flow, mask)


def _check(pred_t: torch.Tensor, pred_tk: torch.Tensor, kind: OutputKind) -> None:
    if pred_t.shape != pred_tk.shape:
        raise NasError(
            f"predictions of shapes {tuple(pred_t.shape)} and {tuple(pred_tk.shape)}: expected "
            "one prediction of frame t+k per prediction of frame t, of one shape"
        )
    if kind is OutputKind.IMAGE_LOGITS:
        if pred_t.dim() != 2:
            raise NasError(
                f"predictions of shape {tuple(pred_t.shape)}: expected N x C ({kind.value})"
            )
        return
    if pred_t.dim() != 4 or (kind is OutputKind.PROB_MAP and pred_t.shape[1] != 1):
        expected = "N x 1 x H x W" if kind is OutputKind.PROB_MAP else "N x C x H x W"
        raise NasError(
            f"predictions of shape {tuple(pred_t.shape)}: expected {expected} ({kind.value})"
        )


def tc_loss(
    pred_t: torch.Tensor,
    pred_tk: torch.Tensor,
    pair: FlowPair | None,
    kind: OutputKind | str,
) -> torch.Tensor:
    """Temporal-consistency loss of predictions of frames t and t+k: a scalar, mean over pairs.

    - `PIXEL_LOGITS` (N x C x h x w): softmax over classes, the probabilities of t+k warped onto
      frame t; per pixel the squared difference summed over classes; weighted by the mask and
      divided by the mask's sum, per pair.
    - `PROB_MAP` (N x 1 x h x w, probabilities in [0, 1]): the same on the probabilities as given.
    - `IMAGE_LOGITS` (N x C, one prediction per frame, nothing to warp): the squared difference
      of the two frames' softmax probabilities summed over classes; `pair` is not used (None).

    Predictions may be smaller or larger than the images `pair` was computed on: flow and mask
    are resampled to them (`FlowPair.at`). Differentiable in both predictions; computed in float32.
    """
    kind = OutputKind(kind)
    _check(pred_t, pred_tk, kind)
    if kind is OutputKind.IMAGE_LOGITS:
        p_t, p_tk = pred_t.float().softmax(1), pred_tk.float().softmax(1)
        return (p_t - p_tk).square().sum(1).mean()
    if pair is None:
        raise NasError(f"temporal consistency of {kind.value} needs the flow: pass flow_pairs()")
    if len(pair) != pred_t.shape[0]:
        raise NasError(
            f"{len(pair)} flow pairs for predictions of {pred_t.shape[0]} frames: expected one "
            "flow pair per prediction pair"
        )
    if kind is OutputKind.PIXEL_LOGITS:
        p_t, p_tk = pred_t.float().softmax(1), pred_tk.float().softmax(1)
    else:
        p_t, p_tk = pred_t.float(), pred_tk.float()
    flow, mask = pair.at(tuple(p_t.shape[-2:]), p_t.device)
    warped = _warp_exact(p_tk, flow)
    distance = (p_t - warped).square().sum(1, keepdim=True)
    per_pair = (mask * distance).sum((1, 2, 3)) / mask.sum((1, 2, 3)).clamp_min(_EPS)
    return per_pair.mean()
