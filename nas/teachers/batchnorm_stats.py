"""BatchNorm statistics of a built-in teacher's random init, measured on frames of a real clip.

A torchvision model built with `weights=None` keeps BatchNorm's initial running statistics
(mean 0, variance 1): in eval mode every BatchNorm passes its input through unscaled. Through
the MobileNetV3 backbone of DeepLabV3 the activations then shrink about tenfold per stage; at
520x520 the classifier receives values near 1e-10 and outputs its own bias, the same on every
frame. Such a teacher does not depend on its input: a delta student has no change to predict,
every student agrees with it, and a search of it learns nothing.

`measure_batchnorm_stats` sets each BatchNorm's running statistics to the mean and variance of
its input on a few frames of the built-in clip. It runs the network once in eval mode, where a
forward pre-hook on each BatchNorm measures its input and sets the statistics before the
BatchNorm uses them: every layer's output on those frames is standardised exactly as eval mode
computes it (no dropout draws, and no gap between the biased variance that training normalises
by and the unbiased one it keeps, which matters where a BatchNorm sees few positions, as after
the atrous pyramid's global pooling). The random teacher then responds to its input at the scale
of a trained one, without a trained one's meaning. The frames are fixed, so the teacher stays
deterministic (its `weights_id` names the clip and the frames).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from nas.data import load_frames, open_video
from nas.teachers.base import InputSpec

CLIP = "sample:bikes"
STRIDE = 100  # frames 0, 100 and 200: three of the clip's scenes
FRAMES = 3


@functools.cache
def _frames(size: tuple[int, int]) -> torch.Tensor:
    """FRAMES frames of CLIP, STRIDE apart, fitted to `size`: a uint8 N x 3 x H x W batch."""
    return load_frames(open_video(CLIP, max_frames=FRAMES, stride=STRIDE), size=size).frames


def _measure(norm: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
    """Forward pre-hook: the BatchNorm's running statistics become those of its input."""
    x = args[0]
    dims = [d for d in range(x.dim()) if d != 1]  # every dimension but the channels
    norm.running_mean.copy_(x.mean(dims))
    norm.running_var.copy_(x.var(dims, correction=0))


def measure_batchnorm_stats(module: nn.Module, input_spec: InputSpec) -> None:
    """Set the running statistics of every BatchNorm in `module` to those of its input on the
    CLIP frames at the teacher's default size, in eval mode (in place). Nothing for a module
    without BatchNorms or a shape-only one (on the meta device)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    first = next(module.parameters(), None)
    if not norms or first is None or first.is_meta:
        return
    x = input_spec.normalize(_frames(tuple(input_spec.default_size))).to(first.device)
    hooks = [norm.register_forward_pre_hook(_measure) for norm in norms]
    training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(x.to(first.dtype))
    finally:
        for hook in hooks:
            hook.remove()
        module.train(training)
