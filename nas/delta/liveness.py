"""Which searched layers can see a change on a delta frame, given the chosen blocks.

A `zero` block passes no change on: its output is the key frame's. Every layer whose input is
computed only from such outputs (through the unsearched operations between the layers:
activations, pooling, squeeze-excitation) then sees exactly the key frame's input, so its
change a_t - a_k is exactly zero and whatever block it runs returns exactly zero: dead compute.
So is a layer whose output change reaches only such layers, or `zero` blocks (they ignore their
input): it is unused.
In MobileNetV3, a `zero` on a block without a residual connection (say a depthwise conv or a
projection that changes the width) makes everything after it dead, and the delta model repeats
the key frame's output however dear the blocks behind it are.

The wiring between searched layers is read once from the network itself: one pass with a frame
that requires grad, every searched conv's output node recorded, and each conv's input traced
back through the autograd graph to the conv outputs (or the frame) it is computed from.

    sources = layer_sources(model, (520, 520))       # path -> paths (or INPUT) its input reads
    idle = idle_layers(sources, {"backbone.13.block.1.0"})   # layers that change nothing
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from nas.delta.model import DeltaModel, Phase
from nas.teachers.base import select_output

INPUT = "<input>"  # the frame itself, as a source
NO_CHANGE = "zero"  # the candidate that passes no change on (it returns the key frame's output)
OUTPUT = "<output>"  # the network's output, as a consumer: its sources are what it reads


def layer_sources(
    model: DeltaModel, size: tuple[int, int], *, device: torch.device | str | None = None
) -> dict[str, tuple[str, ...]]:
    """For every searched layer (in execution order), the searched layers whose outputs its
    input is computed from, and `INPUT` where it reads the frame (() for an input that does not
    depend on the frame at all); last, under `OUTPUT`, those the network's output is computed
    from. `size`: the frame size the network runs at."""
    return read_wiring(model, size, device=device).layers


@dataclass(frozen=True)
class Wiring:
    """What the network's tensors are computed from, read in one pass.

    `layers`: as `layer_sources`. `modules`: for every module of the network that ran once in
    the pass (path in `model.net`, "" for the network itself), the searched layers (and
    `INPUT`) its output is computed from; None for one that ran more than once, or returned
    something other than tensors (in a tuple, list or dict)."""

    layers: dict[str, tuple[str, ...]]
    modules: dict[str, tuple[str, ...] | None]


def read_wiring(
    model: DeltaModel, size: tuple[int, int], *, device: torch.device | str | None = None
) -> Wiring:
    """The wiring of `model` at frame size `size`: one pass with a frame that requires grad."""
    convs = model.delta_convs()
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    outputs: dict[object, str] = {}  # autograd node of a conv's output -> its layer path
    sources: dict[str, set[str]] = {}
    modules: dict[str, tuple[str, ...] | None] = {}
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    x = x.to(device).requires_grad_(True)

    def before(path: str):
        def hook(module, args):
            sources.setdefault(path, set()).update(_trace(args[0], outputs, x))

        return hook

    def after(path: str):
        def hook(module, args, out):
            if out.grad_fn is not None:
                outputs[out.grad_fn] = path

        return hook

    def module_out(path: str):
        def hook(module, args, out):
            tensors = output_tensors(out)
            if path in modules or tensors is None:
                modules[path] = None
                return
            found: set[str] = set()
            for tensor in tensors:
                found |= _trace(tensor, outputs, x)
            modules[path] = tuple(sorted(found))

        return hook

    hooks = [
        h
        for layer, conv in convs
        for h in (
            conv.register_forward_pre_hook(before(layer.path)),
            conv.register_forward_hook(after(layer.path)),
        )
    ]
    # Registered after the convs' own, so a conv's output node is known when its parents end.
    hooks += [sub.register_forward_hook(module_out(p)) for p, sub in model.net.named_modules()]
    phase = model.frame.phase
    try:
        with torch.inference_mode(False), torch.enable_grad():
            model.frame.phase = Phase.TEACHER  # the teacher's own convs: every path is open
            out = select_output(model.net(x), model.output_key)
            sources[OUTPUT] = _trace(out, outputs, x)
    finally:
        for h in hooks:
            h.remove()
        model.frame.phase = phase
        for _, conv in convs:
            conv.target = conv.target_input = None
    paths = [layer.path for layer, _ in convs] + [OUTPUT]
    layers = {path: tuple(sorted(sources.get(path, ()))) for path in paths}
    return Wiring(layers, modules)


def output_tensors(out) -> list[torch.Tensor] | None:
    """The tensors of a module's output (a tensor, or a tuple, list or dict of them)."""
    if isinstance(out, torch.Tensor):
        return [out]
    values = out.values() if isinstance(out, dict) else out
    if isinstance(out, dict | tuple | list) and all(isinstance(v, torch.Tensor) for v in values):
        return list(values)
    return None


def _trace(tensor: torch.Tensor, outputs: dict[object, str], x: torch.Tensor) -> set[str]:
    """The searched layers (and INPUT) that `tensor` is computed from, walking its autograd
    graph back to the nearest recorded conv outputs."""
    found: set[str] = set()
    if tensor.grad_fn is None:
        return {INPUT} if tensor is x else found
    stack, seen = [tensor.grad_fn], set()  # nodes held, so no wrapper's id is reused
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node in outputs:
            found.add(outputs[node])
            continue
        if getattr(node, "variable", None) is x:  # the frame's AccumulateGrad
            found.add(INPUT)
            continue
        stack.extend(next_node for next_node, _ in node.next_functions)
    return found


def idle_layers(sources: dict[str, tuple[str, ...]], blocking: Iterable[str]) -> set[str]:
    """The layers that pass no change to the output when those in `blocking` (`zero` blocks)
    pass none on: the blocking ones, the dead ones (their input change is exactly zero) and the
    unused ones (their output change reaches only layers that ignore it). Each can be made a
    `zero` block without changing any output."""
    blocking = set(blocking)
    layers = [path for path in sources if path != OUTPUT]
    live: set[str] = set()
    changed = True
    while changed:  # execution order settles it in one pass; repeat for shared modules
        changed = False
        for path in layers:
            if path not in live and any(
                source == INPUT or (source in live and source not in blocking)
                for source in sources[path]
            ):
                live.add(path)
                changed = True
    passing = live - blocking
    used: set[str] = set()
    frontier = [OUTPUT]
    while frontier:  # back from the output, through layers that pass their change on
        consumer = frontier.pop()
        for source in sources[consumer]:
            if source in passing and source not in used:
                used.add(source)
                frontier.append(source)
    return set(layers) - used
