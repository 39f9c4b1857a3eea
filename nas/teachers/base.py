"""What every teacher carries: its module and how to feed and read it.

Data loading, distillation losses and evaluators read these fields instead of guessing.
"""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import torch
from torch import nn

from nas.core.errors import NasError
from nas.graph.trace import traced_forward


class OutputKind(str, Enum):
    """How to read a teacher's output tensor."""

    PIXEL_LOGITS = "pixel_logits"  # N x classes x H x W, argmax per pixel (segmentation)
    PROB_MAP = "prob_map"  # N x 1 x H x W, probabilities in [0, 1] (e.g. text detection)
    IMAGE_LOGITS = "image_logits"  # N x classes, one prediction per frame (recognition)


@dataclass(frozen=True)
class InputSpec:
    """How frames are fed: `(frame / 255 - mean) / std` per channel, at sizes of `multiple`.

    Frames are RGB everywhere in the toolkit; `channel_order="bgr"` teachers (trained on OpenCV
    images, like PaddleOCR's) get the channels flipped here, and `mean`/`std` are in that order.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size_multiple: int
    default_size: tuple[int, int]  # (height, width)
    channel_order: str = "rgb"

    def normalize(self, frames: torch.Tensor) -> torch.Tensor:
        """RGB frames, uint8 or float in [0, 255], N x 3 x H x W -> the teacher's input."""
        if self.channel_order == "bgr":
            frames = frames.flip(1)
        mean = torch.tensor(self.mean, device=frames.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=frames.device).view(1, 3, 1, 1)
        return (frames.float() / 255.0 - mean) / std

    def denormalize(self, inputs: torch.Tensor) -> torch.Tensor:
        """The teacher's input back to RGB frames as floats in [0, 255] (`normalize` undone)."""
        mean = torch.tensor(self.mean, device=inputs.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=inputs.device).view(1, 3, 1, 1)
        frames = ((inputs.detach().float() * std + mean) * 255.0).clamp(0, 255)
        return frames.flip(1) if self.channel_order == "bgr" else frames


IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
UNIT_RANGE = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@dataclass(frozen=True, eq=False)
class Teacher:
    """A trained (or randomly initialised) model in eval mode, with what is needed to use it.

    `module` is the network itself, so module paths (`backbone.0.0`) are the model's own;
    calling the teacher runs it and returns the one output tensor (no aux head, no dict).
    `weights_id` names the weights: a file's SHA-256, or `init:seed=N;bn-stats:...` for a
    seeded random init with BatchNorm statistics measured on frames of a built-in clip.
    """

    name: str
    module: nn.Module
    input_spec: InputSpec
    output_kind: OutputKind
    num_classes: int
    weights_id: str
    output_key: str | None = None  # the entry to read when the module returns a dict

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return select_output(self.module(x), self.output_key)

    @property
    def is_random(self) -> bool:
        """Whether the weights are a seeded random init (no trained model's meaning)."""
        return self.weights_id.startswith(RANDOM_INIT)


RANDOM_INIT = "init:"  # weights_id prefix of a seeded random init


def select_output(out, key: str | None) -> torch.Tensor:
    """The prediction in whatever a network returns: the tensor itself, the `key` entry (default
    `out`) of a dict, or the first of a tuple or list (U²-Net's fused map leads its seven)."""
    if isinstance(out, dict):
        return out[key or "out"]
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


def infer_output_kind(shape: torch.Size) -> tuple[OutputKind, int]:
    """Output kind and class count from an output shape (for teachers that do not say)."""
    if len(shape) == 2:
        return OutputKind.IMAGE_LOGITS, int(shape[1])
    if len(shape) == 4:
        return (
            (OutputKind.PROB_MAP, 1) if shape[1] == 1 else (OutputKind.PIXEL_LOGITS, int(shape[1]))
        )
    raise NasError(
        f"cannot read a teacher output of shape {tuple(shape)}: expected N x C or N x C x H x W"
    )


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_teacher(
    module: nn.Module,
    path: str | Path,
    *,
    name: str,
    input_spec: InputSpec,
    output_kind: OutputKind | None,
    device: str,
    conversion: str | None = None,
) -> Teacher:
    """A teacher from a model file converted to `module`: its output kind (where not given) and
    classes read off one traced pass at the input's default size, its weights named by the
    file's SHA-256 (and `+conversion`, where the graph was rewritten on the way). Materialised
    on a real device even for `meta`: converted graphs read constants (resize scales, shapes)
    at run time, which shape-only tensors cannot give."""
    probe, _ = traced_forward(module, (1, 3, *input_spec.default_size), nullcontext)
    kind, classes = infer_output_kind(select_output(probe, None).shape)
    return Teacher(
        name=name,
        module=module.to("cpu" if device == "meta" else device),
        input_spec=input_spec,
        output_kind=output_kind or kind,
        num_classes=classes,
        weights_id=file_sha256(path) + (f"+{conversion}" if conversion else ""),
    )
