"""torchvision's ImageNet classifiers as teachers: ResNet-50 and MobileNetV3-Large.

One prediction per frame (`IMAGE_LOGITS`, N x classes), for recognition on video: frames are
fed like torchvision's ImageNet weights want them (RGB, ImageNet mean/std) at 224x224 by
default; any size that is a multiple of 32 works, the network ends in global average pooling.

As for the segmentation family, nothing is downloaded: models are built with `weights=None`
and the zoo's seeded random init, and a user's torchvision-format state dict (as
`torch.save(model.state_dict())` or the reference scripts write it) is loaded from a file.
`num_classes` sizes the final Linear (1000 by default); with a weights file and no
`num_classes`, the class count is read off the checkpoint's final Linear.
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

DEFAULT_CLASSES = 1000  # ImageNet-1k
INPUT = InputSpec(**IMAGENET, size_multiple=32, default_size=(224, 224))

# name -> state-dict key of the final Linear's weight, whose rows are the classes
HEADS = {
    "resnet50": "fc.weight",
    "mobilenet_v3_large": "classifier.3.weight",
}


def _make_builder(name: str):
    head_key = HEADS[name]

    def build(
        *,
        weights: Path | None = None,
        num_classes: int | None = None,
        aux: bool = False,
        device: str = "cpu",
    ) -> Teacher:
        state = read_state_dict(weights) if weights is not None else None
        num_classes = class_count(state, head_key, given=num_classes, default=DEFAULT_CLASSES)
        models = import_torchvision().models
        module = seeded_init(
            lambda: getattr(models, name)(weights=None, num_classes=num_classes), device=device
        )
        if state is not None:
            load_into(module, state, who=name, source=str(weights))
        else:
            measure_batchnorm_stats(module, INPUT)
        return Teacher(
            name=name,
            module=module.eval(),
            input_spec=INPUT,
            output_kind=OutputKind.IMAGE_LOGITS,
            num_classes=num_classes,
            weights_id=weights_id(weights),
        )

    build.__doc__ = f"torchvision's `{name}` ImageNet classifier as a teacher (eval mode)."
    build.has_aux = False  # `aux` is accepted, as by every builder, and has nothing to switch on
    return build


for _name in HEADS:
    TEACHERS.register(_name, _make_builder(_name))
