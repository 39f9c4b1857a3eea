"""Skipping what cannot change on a delta frame: the key frame's outputs, replayed.

A `zero` block returns the key frame's output, and so does everything computed only from such
outputs (`nas.delta.liveness`): the activations after it, a squeeze-excitation, the layers behind it
that see no other change, a whole residual branch whose projection is `zero`. At inference a
delta frame need not run any of it: each largest such module (a path in the network) keeps its
output from the key frame and returns a copy of it instead of running. The copy is what the
network would have computed, bit for bit, at the cost of one memory copy; without the replay a
delta model pays on every frame for the activations, additions and pooling of the parts that
change nothing, which multiply-adds do not count.

    model.use_replay(replay_for(model, read_wiring(model, size), picks))
    # the model now records those modules' outputs on key frames and replays them on delta frames
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from nas.delta.liveness import INPUT, NO_CHANGE, Wiring, idle_layers, output_tensors
from nas.delta.model import DeltaModel, storage

# Modules that compute nothing: replaying one would only add a copy.
_PASSTHROUGH = (nn.Identity, nn.Dropout)


def _ancestors(path: str) -> Iterator[str]:
    """ "a.b.c" -> "a.b", "a", "" (the network itself)."""
    while path:
        path = path.rpartition(".")[0]
        yield path


def frozen_modules(wiring: Wiring, idle: set[str], model: DeltaModel) -> tuple[str, ...]:
    """The largest modules of `model.net` whose output is computed only from the outputs of `idle`
    layers (`nas.delta.liveness.idle_layers`): on delta frames, the key frame's. The internals of a
    searched layer are its own business (its block decides what it runs)."""
    inside = tuple(f"{layer.path}." for layer in model.layers)
    frozen = {
        path
        for path, sources in wiring.modules.items()
        if sources is not None
        and INPUT not in sources
        and set(sources) <= idle
        and not path.startswith(inside)
        and not isinstance(model.net.get_submodule(path), _PASSTHROUGH)
    }
    return tuple(
        path
        for path in wiring.modules
        if path in frozen and not any(parent in frozen for parent in _ancestors(path))
    )


def replay_for(model: DeltaModel, wiring: Wiring | None, picks: dict[str, str]) -> Replay | None:
    """The replay of a delta model whose layers run `picks` (path -> candidate), given its
    wiring; None where no `zero` leaves anything unchanged."""
    zeros = {path for path, name in picks.items() if name == NO_CHANGE}
    if wiring is None or not zeros or model.per_frame:
        return None
    paths = frozen_modules(wiring, idle_layers(wiring.layers, zeros), model)
    return Replay(paths) if paths else None


def _copy(out):
    if isinstance(out, torch.Tensor):
        return out.clone()
    if isinstance(out, dict):
        return type(out)((key, value.clone()) for key, value in out.items())
    return type(out)(value.clone() for value in out)


class Replay:
    """The key-frame outputs of the `paths` modules, returned on delta frames instead of running
    them. Outputs the network changes in place after the module returns (a residual `out +=`)
    are kept as copies; which those are is found on the first key frame (`check`)."""

    def __init__(self, paths: tuple[str, ...]) -> None:
        self.paths = tuple(paths)
        self.outputs: dict[str, object] = {}
        self.copied: set[str] = set()  # paths whose output the network changes in place
        self._versions: dict[str, tuple[int, ...]] = {}

    def clear(self) -> None:
        self.outputs.clear()

    @contextmanager
    def recording(self, net: nn.Module, *, check: bool = False, kept: set[int] | None = None):
        """Keep each module's output of this (key) frame. `check`: outside inference mode, also
        note the versions of the outputs, for `check_versions` after the frame. `kept`: a set
        the storages of the kept outputs are added to."""

        def keep(path: str):
            def hook(module, args, out):
                self.outputs[path] = _copy(out) if path in self.copied else out
                if kept is not None:
                    kept.update(storage(t) for t in output_tensors(self.outputs[path]))
                if check:
                    self._versions[path] = tuple(t._version for t in output_tensors(out))

            return hook

        hooks = [net.get_submodule(path).register_forward_hook(keep(path)) for path in self.paths]
        try:
            yield self
        finally:
            for h in hooks:
                h.remove()

    def check_versions(self) -> None:
        """After a checking key frame: mark the outputs the network changed in place."""
        for path, versions in self._versions.items():
            now = tuple(t._version for t in output_tensors(self.outputs[path]))
            if now != versions:
                self.copied.add(path)
        self._versions.clear()

    @contextmanager
    def replaying(self, net: nn.Module, *, fresh: bool = True):
        """Within: each module with a kept output returns it without running: a copy where the
        network changes it in place, or where `fresh` (in-place activations that nothing stops
        from writing into it are on); the kept tensor itself otherwise."""
        swapped = []
        for path in self.paths:
            if path not in self.outputs:
                continue
            module = net.get_submodule(path)
            out = self.outputs[path]
            if fresh or path in self.copied:
                module.forward = lambda *args, _out=out, **kwargs: _copy(_out)
            else:
                module.forward = lambda *args, _out=out, **kwargs: _out
            swapped.append(module)
        try:
            yield self
        finally:
            for module in swapped:
                del module.forward
