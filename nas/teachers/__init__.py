"""The teacher zoo: registered builders, plus `onnx:PATH`, `tflite:PATH` and `module:callable`
teachers.

load_teacher("deeplabv3")                         # alias of deeplabv3_mobilenet_v3_large
load_teacher("deeplabv3_resnet50", weights=Path("ckpt.pth"), num_classes=19)
load_teacher("resnet50", num_classes=10)          # an image classifier: N x classes logits
load_teacher("u2netp")                            # trained U²-Net-p, shipped in a wheel
load_teacher("selfie")                            # MediaPipe selfie segmentation (TFLite)
load_teacher("onnx:models/detector.onnx")
load_teacher("tflite:models/segmenter.tflite")
load_teacher("mypkg.models:build_teacher")
"""

from __future__ import annotations

from pathlib import Path

from nas.core.errors import NasError
from nas.teachers import torchvision_seg as _torchvision_seg
from nas.teachers.base import InputSpec, OutputKind, Teacher
from nas.teachers.onnx import check_no_weight_options, onnx_teacher
from nas.teachers.registry import TEACHERS, TeacherBuilder
from nas.teachers.user import user_teacher

# isort: split
# Registered in the order the zoo lists them: the segmentation family (the default first), the
# trained dense teachers, then the classifiers.
from nas.teachers import selfie as _selfie
from nas.teachers import u2net as _u2net

# isort: split
from nas.teachers import torchvision_cls as _torchvision_cls

__all__ = ["TEACHERS", "InputSpec", "OutputKind", "Teacher", "TeacherBuilder", "load_teacher"]

del _selfie, _torchvision_cls, _torchvision_seg, _u2net  # imported for their registrations


def load_teacher(
    name: str,
    *,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    aux: bool = False,
    device: str = "cpu",
) -> Teacher:
    """Build a teacher by registry name, `onnx:PATH`, `tflite:PATH` or `module:callable`, in eval
    mode."""
    weights = Path(weights) if weights is not None else None
    if name.startswith("onnx:"):
        check_no_weight_options(name, weights, num_classes)
        return onnx_teacher(name[len("onnx:") :], device=device)
    if name.startswith("tflite:"):
        from nas.teachers.tflite import tflite_teacher

        check_no_weight_options(name, weights, num_classes)
        return tflite_teacher(name[len("tflite:") :], device=device)
    if ":" in name and name not in TEACHERS:
        return user_teacher(name, weights=weights, num_classes=num_classes, aux=aux, device=device)
    if name not in TEACHERS:
        raise NasError(
            f"unknown teacher '{name}'; known: {', '.join(TEACHERS.names(aliases=True))}, "
            "or onnx:PATH, tflite:PATH, or module:callable"
        )
    builder = TEACHERS.get(name)
    return builder(weights=weights, num_classes=num_classes, aux=aux, device=device)
