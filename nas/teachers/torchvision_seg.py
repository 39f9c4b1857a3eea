"""torchvision's segmentation family: DeepLabV3 (ResNet-50/101, MobileNetV3) and LR-ASPP.

No weights can be downloaded here: models are built with `weights=None` and a seeded random
init, and a user's torchvision-format checkpoint is loaded from a file. `aux=True` keeps the
auxiliary head, only to reproduce torchvision's published costs; the teacher itself never uses it.
"""

from __future__ import annotations

from pathlib import Path

from nas.core.torchvision_compat import import_torchvision
from nas.teachers.base import IMAGENET, InputSpec, OutputKind, Teacher
from nas.teachers.batchnorm_stats import measure_batchnorm_stats
from nas.teachers.registry import TEACHERS
from nas.teachers.weights import (
    class_count,
    load_into,
    read_state_dict,
    seeded_init,
    weights_id,
)

DEFAULT_CLASSES = 21  # torchvision's COCO subset with the Pascal VOC categories
INPUT = InputSpec(**IMAGENET, size_multiple=8, default_size=(520, 520))

# name -> (torchvision builder, has an aux head, state-dict key whose rows are the classes)
_FAMILY = {
    "deeplabv3_mobilenet_v3_large": ("deeplabv3_mobilenet_v3_large", True, "classifier.4.weight"),
    "deeplabv3_resnet50": ("deeplabv3_resnet50", True, "classifier.4.weight"),
    "deeplabv3_resnet101": ("deeplabv3_resnet101", True, "classifier.4.weight"),
    "lraspp_mobilenet_v3_large": (
        "lraspp_mobilenet_v3_large",
        False,
        "classifier.high_classifier.weight",
    ),
}


def _make_builder(name: str):
    tv_name, has_aux, class_key = _FAMILY[name]

    def build(
        *,
        weights: Path | None = None,
        num_classes: int | None = None,
        aux: bool = False,
        device: str = "cpu",
    ) -> Teacher:
        state = read_state_dict(weights) if weights is not None else None
        if state is not None and not aux:
            state = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}
        num_classes = class_count(state, class_key, given=num_classes, default=DEFAULT_CLASSES)
        segmentation = import_torchvision().models.segmentation
        kwargs = dict(weights=None, weights_backbone=None, num_classes=num_classes)
        if has_aux:
            kwargs["aux_loss"] = aux
        module = seeded_init(lambda: getattr(segmentation, tv_name)(**kwargs), device=device)
        if state is not None:
            load_into(module, state, who=name, source=str(weights))
        else:
            measure_batchnorm_stats(module, INPUT)
        return Teacher(
            name=name,
            module=module.eval(),
            input_spec=INPUT,
            output_kind=OutputKind.PIXEL_LOGITS,
            num_classes=num_classes,
            weights_id=weights_id(weights),
            output_key="out",
        )

    build.__doc__ = f"torchvision's `{tv_name}` as a teacher (eval mode, no aux head by default)."
    build.has_aux = has_aux
    return build


TEACHERS.register(
    "deeplabv3_mobilenet_v3_large",
    _make_builder("deeplabv3_mobilenet_v3_large"),
    aliases=("deeplabv3",),
)
for _name in ("deeplabv3_resnet50", "deeplabv3_resnet101", "lraspp_mobilenet_v3_large"):
    TEACHERS.register(_name, _make_builder(_name))
