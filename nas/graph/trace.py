"""One forward pass that costs nothing: on `meta` tensors, with a real-device fallback.

Shapes, layer graphs and multiply-add counts need a forward pass but no numbers. On the `meta`
device a pass over ResNet-101 at 1024x2048 takes a fraction of a second. Modules that read tensor
values while they run (onnx2torch's Resize reads its scales) cannot run on `meta`; they are run
once on zeros on their own device instead.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import torch
from torch import nn
from torch.func import functional_call

Observer = TypeVar("Observer", bound=AbstractContextManager)


def module_device(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _meta_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: torch.empty_like(t, device="meta")
        for name, t in (*module.named_parameters(), *module.named_buffers())
    }


def _meta_pass(module: nn.Module, input_shape: tuple[int, ...]) -> Any:
    """`module` on an empty `meta` input, its own parameters untouched (swapped for `meta`
    copies unless it is on `meta` already)."""
    x = torch.empty(input_shape, device="meta")
    if module_device(module).type == "meta":
        return module(x)
    return functional_call(module, _meta_state(module), (x,))


def traced_forward(
    module: nn.Module, input_shape: tuple[int, ...], observe: Callable[[], Observer]
) -> tuple[Any, Observer]:
    """Run `module` once on an input of `input_shape` inside a fresh `observe()` context.

    Returns the output and the observer (hooks, a flop counter, ...) that watched the run which
    succeeded. The module's own parameters are never touched.
    """
    device = module_device(module)
    attempts = ["meta"] if device.type == "meta" else ["meta", "real"]
    for attempt in attempts:
        observer = observe()
        try:
            with observer, torch.no_grad():
                if attempt == "meta":
                    out = _meta_pass(module, input_shape)
                else:
                    out = module(torch.zeros(input_shape, device=device))
            return out, observer
        except (NotImplementedError, RuntimeError):
            if attempt == attempts[-1]:
                raise
    raise AssertionError("unreachable")


def runs_on_meta(module: nn.Module, input_shape: tuple[int, ...]) -> bool:
    """Whether `module` runs on `meta` tensors, i.e. reads no tensor values while it runs.
    Modules that do (any onnx2torch graph) must stay on a real device to be counted."""
    try:
        with torch.no_grad():
            _meta_pass(module, input_shape)
    except (NotImplementedError, RuntimeError):
        return False
    return True
