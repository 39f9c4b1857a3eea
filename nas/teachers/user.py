"""A user's own teacher from `module:callable`, e.g. `mypkg.models:build_teacher`.

The callable is called with no arguments (plus `num_classes=` when `--num-classes` is given)
and returns either an `nn.Module` or a full `Teacher` (named `module:callable`, whatever name
it carries, so that a spec can load it again). A bare module is fed ImageNet-normalised
RGB at 520x520 (any size a multiple of 8), and its output kind is read off its output shape;
return a `Teacher` to say otherwise.
"""

from __future__ import annotations

import importlib
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

from torch import nn

from nas.core.errors import NasError
from nas.graph.trace import runs_on_meta, traced_forward
from nas.teachers.base import (
    IMAGENET,
    InputSpec,
    Teacher,
    file_sha256,
    infer_output_kind,
    select_output,
)
from nas.teachers.weights import load_into, read_state_dict

USER_INPUT = InputSpec(**IMAGENET, size_multiple=8, default_size=(520, 520))


def resolve_callable(target: str):
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise NasError(
            f"invalid teacher '{target}': expected module:callable, e.g. mypkg.models:build"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise NasError(
            f"cannot import module '{module_name}' for teacher '{target}': {exc}"
        ) from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise NasError(f"module '{module_name}' has no callable '{attr}' (teacher '{target}')")
        obj = getattr(obj, part)
    if not callable(obj):
        raise NasError(f"'{target}' is not callable: expected a function that returns a model")
    return obj


def user_teacher(
    target: str,
    *,
    weights: Path | None = None,
    num_classes: int | None = None,
    aux: bool = False,
    device: str = "cpu",
) -> Teacher:
    factory = resolve_callable(target)
    built = factory(num_classes=num_classes) if num_classes is not None else factory()
    if isinstance(built, Teacher):
        teacher = replace(built, name=target)  # the name a spec reloads it by
    elif isinstance(built, nn.Module):
        probe, _ = traced_forward(built, (1, 3, *USER_INPUT.default_size), nullcontext)
        kind, classes = infer_output_kind(select_output(probe, None).shape)
        teacher = Teacher(
            name=target,
            module=built,
            input_spec=USER_INPUT,
            output_kind=kind,
            num_classes=classes,
            weights_id="user:" + target,
        )
    else:
        raise NasError(
            f"'{target}' returned a {type(built).__name__}: expected an nn.Module or a Teacher"
        )
    if weights is not None:
        load_into(teacher.module, read_state_dict(weights), who=target, source=str(weights))
        teacher = replace(teacher, weights_id=file_sha256(weights))
    teacher.module.eval()
    shape = (1, 3, *teacher.input_spec.default_size)
    if device == "meta" and not runs_on_meta(teacher.module, shape):
        device = "cpu"  # its forward reads tensor values: counting it needs one real pass
    if device != "cpu":
        teacher.module.to(device)
    return teacher
