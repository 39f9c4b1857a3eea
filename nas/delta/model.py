"""The delta model: a teacher whose searched convs predict the change of their output.

Delta Distillation (see DESIGN.md, "Delta mode"): every searched conv l of the teacher (BN folded,
so it is linear) is replaced by a `DeltaConv`. On a key frame it runs the teacher conv exactly
and caches its input a_k and output z_k; on a later frame t it returns

    z_t = z_k + g(a_t - a_k)

where a_t is the input the delta model itself reconstructed, so errors propagate exactly as at
inference, and g is the student block. Everything else (activations, pooling, additions,
upsampling) runs unchanged on the reconstructed full features. While searching, g is a
`nas.searching.mixed.MixedDelta` (candidate blocks with architecture logits); in a student built
from a spec it is the chosen block, and nothing of the search is left in the model.

At inference (`nas.delta.runner`) a key frame keeps only what the layer's delta frames read:
nothing for a `full` block (delta frames rerun its conv on the full input, exactly), the output
alone for `zero`, the output and the pooled input for a block that pools first (`DownBlock`: by
linearity pool(a - a_k) = pool(a) - pool(a_k), a quarter of the subtraction).

The per-frame modes (see DESIGN.md) are the same recurrence with a fixed "key frame" of zero
input: a_k = 0 and z_k = the conv's bias, so z_t = b + g(a_t) runs the student block on every
frame's full features, and every candidate (initialised from the bias-free folded weight)
serves unchanged. In resolution mode the student runs on frames downscaled to `student_size`
while the teacher's targets stay at full size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from nas.core.layout import in_layout, is_channels_last
from nas.core.resample import bilinear
from nas.delta.tiles import TileSkip, tiled_convs
from nas.graph.fold import fold_batchnorms
from nas.graph.layers import ConvLayer
from nas.teachers.base import select_output

if TYPE_CHECKING:
    from nas.delta.replay import Replay


def storage(t: torch.Tensor) -> int:
    """The address of `t`'s storage: the same for every view of it."""
    return t.untyped_storage().data_ptr()


class Phase(str, Enum):
    KEY = "key"  # run the teacher conv exactly and cache input and output
    TEACHER = "teacher"  # run the teacher conv exactly and keep its output as the target
    DELTA = "delta"  # predict the output from the change of the input


@dataclass
class FrameState:
    """What every layer of a delta model needs to know of the frame it runs: one object that
    the model shares with its layers and sets once per frame."""

    phase: Phase = Phase.KEY
    # Whether a delta output must never be the cached tensor itself: in-place activations are
    # on (an inference delta frame) and the key frame's tensors are not known to guard them
    # (its key frame ran outside inference mode).
    fresh_output: bool = False
    # Input changes a - a_k of this frame, shared by the layers that read the same input
    # against the same key (ASPP's parallel branches).
    shared_deltas: dict | None = None
    # Storages of the tensors kept from an inference key frame, shared by the model's layers
    # and its replay: in-place activations must not write into them.
    kept: set[int] | None = None
    # Whether the model runs channels-last (set from the frames): an input that arrives in
    # another layout (a concatenation of mixed layouts) is converted first, as the convs'
    # kernels are slower in the other layout (`nas.core.layout`).
    channels_last: bool = False


def resize_input(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Frames downscaled to the student's input size (antialiased bilinear, as an image)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Features or outputs resized to `size` (bilinear); unchanged when already that size."""
    if x.dim() != 4:
        return x
    return bilinear(x, size)


# A layer's per-frame state: plain attributes, set on every frame. `nn.Module.__setattr__` looks
# each name up among parameters, buffers and submodules first: ~400 such sets a key frame.
_FRAME_STATE = frozenset(
    {
        "a_key",
        "z_key",
        "target",
        "target_input",
        "prediction",
        "input_hw",
        "forced",
        "kept_less",
        "pooled_key",
        "offset",
        "key_scale",
        "_versions",
    }
)


class DeltaConv(nn.Module):
    """One teacher conv (BN folded) in a delta model: exact on key frames, then z_k + g(a - a_k)."""

    def __setattr__(self, name: str, value) -> None:
        if name in _FRAME_STATE:
            self.__dict__[name] = value  # never a parameter, buffer or submodule
        else:
            super().__setattr__(name, value)

    def __init__(self, conv: nn.Conv2d, block: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.block = block
        self.frame = FrameState()  # a `DeltaModel` gives all its layers one, shared
        self.a_key: torch.Tensor | None = None
        self.z_key: torch.Tensor | None = None
        self.target: torch.Tensor | None = None  # teacher's output on frame t (TEACHER phase)
        self.target_input: torch.Tensor | None = None  # teacher's input on frame t (TEACHER)
        self.prediction: torch.Tensor | None = None  # own output on frame t (DELTA phase)
        self.input_hw: tuple[int, int] | None = None  # the student's input size (DELTA phase)
        self.per_frame = False  # keys fixed at a_k = 0, z_k = bias (see the module docstring)
        self.forced: torch.Tensor | None = None  # from the teacher's input on frame t (DELTA)
        # Whether the network changes this layer's input or output in place after the conv
        # (`out += identity`): then the caches must be copies. Found on the first key frame.
        self.copy_cache = False
        self.kept_less = False  # whether the last key frame kept only what inference reads
        self.pooled_key: torch.Tensor | None = None  # pool(a_k), for a block that pools first
        # c_k = z_k - g(a_k), kept by an inference key frame in the linear form (`linear`).
        self.offset: torch.Tensor | None = None
        # Inference in the linear form z_t = c_k + g(a_t) (see `_keep_for_inference`), which a
        # spec chooses (`nas.spec.DeltaForm`, counting its key frame's block call); off: the
        # recurrence z_k + g(a_t - a_k). Set by `DeltaModel.use_linear`.
        self.linear = False
        # Delta frames at inference skip the tiles whose input did not change (`nas.delta.tiles`),
        # running the block's convs `tiled` (None: the block runs densely).
        self.skip: TileSkip | None = None
        self.tiled: list[nn.Conv2d] | None = None
        self.key_scale: float | None = None  # mean |a_k|, the skipping threshold's unit
        self._versions: tuple[int, int] = (0, 0)

    @property
    def phase(self) -> Phase:
        return self.frame.phase

    def cache_was_changed(self) -> bool:
        """Whether the cached key tensors were modified in place since the key frame."""
        return (self.a_key._version, self.z_key._version) != self._versions

    def _input_delta(self, a: torch.Tensor) -> torch.Tensor:
        """a - a_k, computed once per frame for all layers that read `a` against one key."""
        shared = self.frame.shared_deltas
        if shared is None:
            return a - self.a_key
        key = (id(a), self.a_key.data_ptr(), tuple(self.a_key.shape), self.a_key.stride())
        found = shared.get(key)
        if found is not None and found[0] is a:  # the entry holds `a`, so its id is still a's
            return found[1]
        delta = a - self.a_key
        shared[key] = (a, delta)
        return delta

    def _keep_for_inference(self, a: torch.Tensor, z: torch.Tensor, shortcut: str | None) -> None:
        """An inference key frame keeps only what the layer's delta frames read: nothing for a
        `conv` shortcut (delta frames rerun the conv), the output alone for `key`; for any other
        block, in the linear form, c_k = z_k - g(a_k) alone: every block is linear, so
        z_k + g(a_t - a_k) = c_k + g(a_t), and a delta frame runs the block on its own input and
        adds c_k (no subtraction pass, one tensor read fewer), for one g on the key frame.
        Outside the linear form: the output and the pooled input for a block that pools first
        (`DownBlock`). What is not kept is not held across frames, and the activation after it
        may run in place."""
        self.a_key = None
        self.z_key = None
        self.kept_less = True
        if shortcut == "conv":
            return
        if shortcut is None and self.linear:
            self.offset = z - self.block(a)  # (a block output may broadcast: a pooled 1x1)
            return
        self.z_key = z.clone() if self.copy_cache else z
        self.frame.kept.add(storage(self.z_key))
        if shortcut is None:  # a pooling block: its pooled key input is a new tensor
            self.pooled_key = self.block.pool(a)

    def _pools_first(self, block: nn.Module) -> bool:
        """Whether `block` pools its input before anything else (a `DownBlock`), which a
        delta layer of the full-size model (not a per-frame one) may do to its key input."""
        return not self.per_frame and getattr(type(block), "from_pooled", None) is not None

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        frame = self.frame
        block = self.block
        a = in_layout(a, frame.channels_last)
        # Looked up on the class: a module's own lookup of a missing name raises inside.
        shortcut = getattr(type(block), "delta_shortcut", None)
        if frame.phase is Phase.DELTA:
            inference = not torch.is_grad_enabled()
            if inference and shortcut == "conv" and self.skip is None:
                return self.conv(a)  # z_k + W(a - a_k) = W a + b, exactly
            z_key = self.z_key
            if inference and shortcut == "key" and z_key is not None:  # z_k + 0
                return z_key.clone() if self.copy_cache or frame.fresh_output else z_key
            self.input_hw = tuple(a.shape[-2:])
            if inference and self.skip is not None and self.tiled is not None:
                # z_k + g(a - a_k) on the tiles that changed
                if self.key_scale is None:  # the threshold's unit, once per key frame
                    key = self.a_key
                    self.key_scale = float(torch.linalg.vector_norm(key, 1)) / key.numel()
                return self.skip.run(self.tiled, self._input_delta(a), z_key, self.key_scale)
            if inference and self.offset is not None:  # c_k + g(a), the linear form
                out = block(a)
                return (
                    out.add_(self.offset) if out.shape == self.offset.shape else out + self.offset
                )
            if inference and self.pooled_key is not None:  # z_k + g(pool(a) - pool(a_k))
                pooled = block.pool(a).sub_(self.pooled_key)
                return block.from_pooled(pooled, self.input_hw).add_(z_key)
            if self.a_key is None or (not self.per_frame and self.a_key.shape != a.shape):
                raise RuntimeError(
                    "delta frame without a matching key frame: "
                    + (
                        "a key frame run in inference mode keeps only what inference needs; "
                        "run it outside to train"
                        if self.kept_less
                        else "run the key frame first"
                    )
                )
            if inference:  # the same result with less work
                # The block's output is new: add the key (or bias) into it in place; a per-frame
                # block takes the input itself (a_k = 0), not a copy of it minus zero.
                out = block(a if self.per_frame else self._input_delta(a))
                if out.shape != z_key.shape and (
                    torch.broadcast_shapes(out.shape, z_key.shape) != out.shape
                ):
                    return z_key + out
                return out.add_(z_key)
            z = z_key + block(a - self.a_key)
            self.prediction = z
            if self.target_input is not None:  # teacher forcing, for this layer's own loss
                teacher_input = resize(self.target_input, self.input_hw)
                self.forced = z_key + block(teacher_input - self.a_key)
            return z.clone()
        z = self.conv(a)
        if frame.phase is Phase.KEY:
            self.pooled_key = self.offset = self.key_scale = None
            kept = frame.kept
            keeps_less = self.skip is None and (
                shortcut is not None or self.linear or self._pools_first(block)
            )
            if kept is not None and (shortcut == "key" or keeps_less):
                self._keep_for_inference(a, z, shortcut)
                return z
            self.kept_less = False
            if self.copy_cache:
                self.a_key, self.z_key = a.detach().clone(), z.detach().clone()
            else:
                self.a_key, self.z_key = a.detach(), z.detach()
            if kept is not None:
                kept.update((storage(self.a_key), storage(self.z_key)))
            if not z.is_inference():  # inference tensors keep no version counter
                self._versions = (self.a_key._version, self.z_key._version)
        else:
            self.target = z.detach().clone()
            self.target_input = a.detach().clone()
        return z


class DeltaModel(nn.Module):
    """A teacher whose searched convs are `DeltaConv`s; `net` keeps the teacher's module paths."""

    def __init__(
        self,
        net: nn.Module,
        layers: list[ConvLayer],
        output_key: str | None,
        *,
        per_frame: bool = False,
        student_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.layers = list(layers)
        self.output_key = output_key
        self.per_frame = per_frame  # no key frames: z = b + g(a) on every frame
        self.student_size = student_size  # per-frame input size, when frames come larger
        self._caches_checked = False
        self._inplace: list[nn.Module] = []  # the teacher's in-place activations
        # Modules that cannot change on delta frames, replayed from the key frame at inference
        # (`nas.delta.replay`; set by `nas.build_student` for specs with `zero` blocks).
        self.replay: Replay | None = None
        self._key_shape: tuple[int, ...] | None = None
        # Storages of what the last key frame kept, if it ran in inference mode (`_run`).
        self._key_kept: set[int] | None = None
        # The layers, looked up once, and the frame state they share (set once per frame).
        self._convs = [(layer, net.get_submodule(layer.path)) for layer in self.layers]
        self.frame = FrameState()
        for _, conv in self._convs:
            conv.frame = self.frame

    @classmethod
    def build(
        cls,
        module: nn.Module,
        layers: list[ConvLayer],
        make_block: Callable[[ConvLayer, nn.Conv2d], nn.Module],
        *,
        output_key: str | None = None,
        per_frame: bool = False,
        student_size: tuple[int, int] | None = None,
    ) -> DeltaModel:
        """Fold BNs into a copy of `module`; wrap each layer's folded conv with its student block.

        `make_block(layer, folded_conv)` returns the block g for that layer (a `MixedDelta` in
        the search, the chosen candidate in a student), initialised from the folded weights.
        """
        net = fold_batchnorms(module, layers)
        # Activations in place would write into the cached key outputs: off, except on delta
        # frames at inference (see `_run`), where every tensor they see is new.
        inplace = [sub for sub in net.modules() if getattr(sub, "inplace", None) is True]
        for sub in inplace:
            sub.inplace = False
        for layer in layers:
            conv = net.get_submodule(layer.path)
            net.set_submodule(layer.path, DeltaConv(conv, make_block(layer, conv)))
        model = cls(net, layers, output_key, per_frame=per_frame, student_size=student_size)
        model._inplace = inplace
        model.clear()  # sets the fixed keys of the per-frame modes
        return model

    def train(self, mode: bool = True) -> DeltaModel:
        """Only the student blocks ever train: the teacher's own layers stay in eval mode, so its
        BatchNorms keep their statistics and its dropout stays off, in training as at inference.
        """
        super().train(mode)
        for module in self.net.modules():
            module.training = False
        for _, conv in self.delta_convs():
            conv.block.train(mode)
        return self

    def delta_convs(self) -> list[tuple[ConvLayer, DeltaConv]]:
        return list(self._convs)

    def _replaying(self, phase: Phase, inplace: bool, check: bool, kept: set[int] | None):
        """Recording the replayed modules' outputs on key frames; replaying them on delta frames
        at inference (in training every layer runs: its prediction is needed)."""
        if self.replay is None or self.per_frame:
            return contextlib.nullcontext()
        if phase is Phase.KEY:
            return self.replay.recording(self.net, check=check, kept=kept)
        if phase is Phase.DELTA and inplace:
            return self.replay.replaying(self.net, fresh=self.frame.fresh_output)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _inplace_unless(self, guarded: set[int]):
        """Each in-place activation runs in place unless its input's storage is `guarded`."""

        def choose(module, args):
            x = args[0] if args else None
            module.inplace = isinstance(x, torch.Tensor) and storage(x) not in guarded

        handles = [sub.register_forward_pre_hook(choose) for sub in self._inplace]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _check_key(self, x: torch.Tensor, phase: Phase) -> None:
        """A delta frame needs a key frame of its shape before it (per-frame modes: none)."""
        if self.per_frame or phase is Phase.TEACHER:
            return
        if phase is Phase.KEY:
            self._key_shape = tuple(x.shape)
        elif self._key_shape != tuple(x.shape):
            raise RuntimeError("delta frame without a matching key frame: run the key frame first")

    def _run(self, x: torch.Tensor, phase: Phase, *, check: bool = False) -> torch.Tensor:
        self._check_key(x, phase)
        # In place saves a full-size allocation per activation; safe only where no key cache or
        # autograd graph can see the tensors written: every activation on an inference delta
        # frame, those whose input is not kept on an inference key frame.
        inplace = phase is Phase.DELTA and not torch.is_grad_enabled()
        inference_key = (
            phase is Phase.KEY and torch.is_inference_mode_enabled() and not self.per_frame
        )
        # Never written in place: the frame itself (the caller's), and what an inference key
        # frame keeps for the delta frames (filled as it runs); so a delta frame may hand the
        # kept tensors on as they are, with no copy.
        guarded = {storage(x)} if inplace or inference_key else None
        kept = guarded if inference_key else None
        if phase is Phase.KEY:
            self._key_kept = kept
        elif inplace and self._key_kept is not None:
            guarded |= self._key_kept
        for sub in self._inplace:
            sub.inplace = inplace
        frame = self.frame
        frame.phase = phase
        frame.fresh_output = inplace and bool(self._inplace) and self._key_kept is None
        frame.shared_deltas = {} if inplace else None  # input changes shared within this frame
        frame.kept = kept
        frame.channels_last = is_channels_last(x)
        activations = contextlib.nullcontext() if guarded is None else self._inplace_unless(guarded)
        try:
            with self._replaying(phase, inplace, check, kept), activations:
                out = self.net(x)
        finally:
            for sub in self._inplace:
                sub.inplace = False
            frame.shared_deltas = None
            frame.kept = None
        out = select_output(out, self.output_key)
        if inplace and self._key_kept and storage(out) in self._key_kept:
            return out.clone()  # the caller's to change: never a tensor the key frame kept
        return out

    def use_skipping(self, skip: TileSkip | None) -> DeltaModel:
        """Skip, on inference delta frames, the tiles whose input did not change (`nas.delta.tiles`;
        None: run every layer densely). Caches are dropped: the next frame must be a key frame."""
        for _, conv in self.delta_convs():  # per-frame modes have no key frame to skip from
            conv.skip = skip
            conv.tiled = None if skip is None or self.per_frame else tiled_convs(conv.block)
        self.clear()
        return self

    def use_linear(self, linear: bool) -> DeltaModel:
        """Run inference delta frames in the linear form c_k + g(a_t) (False: the recurrence
        z_k + g(a_t - a_k)); the same outputs. Caches are dropped: the next frame must be a key
        frame."""
        for _, conv in self.delta_convs():
            conv.linear = linear and not self.per_frame
        self.clear()
        return self

    def use_replay(self, replay: Replay | None) -> DeltaModel:
        """Replay `replay`'s modules from the key frame on delta frames (None: run them all).
        Caches are dropped: the next frame must be a key frame."""
        self.replay = replay
        self._caches_checked = False
        self.clear()
        return self

    def key_frame(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's exact output on a key frame; caches every layer's input and output.

        Caches are the network's own tensors, not copies, unless the network was seen to change
        them in place; the first time that happens the layers are marked and the frame rerun.
        """
        if not self._caches_checked:
            # Version counters exist outside inference mode only: check there, once.
            with torch.inference_mode(False), torch.no_grad():
                self._run(x.clone(), Phase.KEY, check=True)
                for _, conv in self.delta_convs():
                    conv.copy_cache = conv.copy_cache or conv.cache_was_changed()
                if self.replay is not None:
                    self.replay.check_versions()
            self._caches_checked = True
        with torch.no_grad():
            return self._run(x, Phase.KEY)

    def teacher_frame(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's exact output on frame t; keeps every layer's true output as a target."""
        with torch.no_grad():
            return self._run(x, Phase.TEACHER)

    def delta_frame(self, x: torch.Tensor) -> torch.Tensor:
        """The delta model's output on frame t, from the cached key frame.

        Per-frame modes: the student on frame t alone; a frame larger than `student_size` is
        downscaled first and a dense output upsampled back to the frame's size.
        """
        if self.per_frame and self.student_size and tuple(x.shape[-2:]) != self.student_size:
            size = tuple(x.shape[-2:])
            return resize(self._run(resize_input(x, self.student_size), Phase.DELTA), size)
        return self._run(x, Phase.DELTA)

    def clear(self) -> None:
        """Forget every cached tensor (per-frame modes: back to their fixed keys)."""
        if self.replay is not None:
            self.replay.clear()
        self._key_shape = None
        self._key_kept = None
        for _, conv in self.delta_convs():
            conv.a_key = conv.z_key = conv.target = conv.target_input = None
            conv.pooled_key = conv.offset = conv.key_scale = None
            conv.kept_less = False
            conv.prediction = conv.forced = None
            conv.per_frame = self.per_frame
            if self.per_frame:
                weight = conv.conv.weight
                bias = conv.conv.bias
                conv.a_key = weight.new_zeros(())
                conv.z_key = (
                    bias.detach().view(1, -1, 1, 1) if bias is not None else weight.new_zeros(())
                )

    def _apply(self, fn, *args, **kwargs):
        """Moving the model (`.to(device)`) moves the per-frame keys with it."""
        result = super()._apply(fn, *args, **kwargs)
        if self.per_frame:
            self.clear()
        return result
