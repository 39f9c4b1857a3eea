"""How much each searched layer's change matters at the output: the weights of the search's
architecture objective.

With every other layer exact, layer l is made to pass no change (its output stays the key
frame's), and the output's error against the teacher's on frame t is measured relative to the
teacher's own output change (`nas.distill.output_loss`). That sensitivity s_l is 1 where all of
the output's change passes through l (a conv every path to the output crosses, like a head's
first conv) and near 0 where the output hardly depends on l's change (a residual branch whose
change the layers after it wash out).

The architecture objective weighs each layer's expected error by s_l (normalised to mean 1), a
first-order model of the output's error as sum_l s_l e_l. Weighted equally, every layer's error
counts as much, so a search under budget pressure cuts the costliest layer however much of the
output passes through it: a low-rank block on a text detector's head conv, a quarter of its
multiply-adds, left its output repeating the key frame's.

    s = output_sensitivity(model, x_t)    # after a key frame: one value per searched layer
    w = layer_weights(s)                  # mean 1: the weights of the layers' errors
"""

from __future__ import annotations

import torch
from torch import nn

from nas.distill import output_loss
from nas.supernet import DeltaModel

# Below this the output does not change between the frames: no layer can matter more.
STILL = 1e-6


class _Exact(nn.Module):
    """Stands in for a block: the layer runs its conv on the frame, z_k + W(a - a_k) = W a + b."""

    delta_shortcut = "conv"


class _NoChange(nn.Module):
    """Stands in for a block: the layer's output stays the key frame's."""

    delta_shortcut = "key"


def _output_with(model: DeltaModel, x_t: torch.Tensor, still: set[str]) -> torch.Tensor:
    """The delta model's output on frame t with every layer exact but those in `still`, which
    pass no change; its own blocks are put back after."""
    convs = model.delta_convs()
    blocks = [conv.block for _, conv in convs]
    try:
        for layer, conv in convs:
            conv.block = _NoChange() if layer.path in still else _Exact()
        return model.delta_frame(x_t)
    finally:
        for (_, conv), block in zip(convs, blocks, strict=True):
            conv.block = block


def output_sensitivity(model: DeltaModel, x_t: torch.Tensor) -> torch.Tensor:
    """s_l for every searched layer (in `delta_convs` order) of a delta model whose key frame
    has run, on frames `x_t` (float64)."""
    if model.per_frame:
        raise ValueError("output sensitivities need key frames: per-frame models have none")
    paths = [layer.path for layer, _ in model.delta_convs()]
    with torch.no_grad():
        y_teacher = _output_with(model, x_t, set())
        y_key = _output_with(model, x_t, set(paths))
        values = [
            float(output_loss(_output_with(model, x_t, {path}), y_teacher, y_key)) for path in paths
        ]
    return torch.tensor(values, dtype=torch.float64)


def layer_weights(sensitivity: torch.Tensor, floor: float = 0.01) -> torch.Tensor:
    """Weights of the layers' errors, mean 1: the sensitivities, each raised by `floor` of their
    mean (one batch's estimate of 0 still weighs a little); equal where the output is still."""
    mean = float(sensitivity.mean())
    if mean < STILL:
        return torch.ones_like(sensitivity)
    raised = sensitivity + floor * mean
    return raised / raised.mean()
