"""Calibration of a delta student on its own inputs: each block refitted, in closed form, to what
the layers before it actually hand it.

A block's start (truncated SVD of the teacher weight, plain or data-aware) is fitted to the
*teacher's* input changes. In the student, layer l sees the change the student itself
reconstructed, d_s = a_t(student) - a_k, which already carries the errors of every layer before
it. `refit_student` goes through the delta layers in execution order and refits each low-rank
block to map d_s to the teacher's true output change at that layer,

    y = z_t(teacher) - z_k(teacher) = W' (a_t(teacher) - a_k)        (BN folded: linear)

so each block also corrects part of what the layers before it lost. With patch columns x_s
(student) and x_T (teacher) at the same sampled output positions, and M the block's matrix
(c_out x c_in*kh*kw: `expand @ reduce`), the fit is the
reduced-rank ridge regression

    min_{rank M <= R}  sum ||W' x_T - M x_s||^2 + lam ||M - W'||^2

whose solution needs only the moments S = sum x_s x_s^T + lam I and C = W' sum x_T x_s^T + lam W':
with G = C S^(-1/2) = U diag(s) V^T, M = U_R diag(s_R) V_R^T S^(-1/2), split as
B = U_R s_R^(1/2) (the 1x1 `expand`) and A = s_R^(1/2) V_R^T S^(-1/2) (the k x k `reduce`).
The ridge pulls towards the teacher's own weight (not towards zero), so a direction the data
never excites keeps the teacher's behaviour, and where the student's inputs are the teacher's
the fit at full rank is W' itself: the teacher exactly. `lam` is `ridge` times the mean
eigenvalue of sum x_s x_s^T.

Moments are accumulated in float64 over all batches, at `positions` output positions per batch
and layer, drawn from a seeded generator (deterministic); a quarter of them are held out, and a
layer keeps its refitted block only where that lowers its error on them (with few samples for
its dimension a fit can follow noise, and an error that grows here grows through every layer
after it). Layer l is fitted with layers < l
already refitted: one (partial) pass of the key frame, the teacher and the student per layer and
batch, each stopped as soon as layer l's input is seen, so the cost is about
3/2 x layers x batches forward passes (seconds on a CPU for a small net; see bench/refit.py).

Not refitted (reported in `RefitReport.skipped`): `full` blocks (an inference delta frame reruns
the teacher conv on the full input, whatever the block holds), `zero` blocks, grouped convs,
`sep` and `down2_` blocks (their factorisations do not reduce to one matrix regression), layers
a forward pass runs more than once, and layers whose input never changes. Delta mode only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from nas.core.errors import NasError
from nas.delta.model import DeltaConv, DeltaModel
from nas.graph.layers import ConvLayer
from search_spaces import FullBlock, LowRankBlock
from search_spaces._blocks import Geometry

POSITIONS = 4096  # sampled output positions per layer and batch
HELD_OUT = 0.25  # the share of them that checks the fit instead of making it


@dataclass(frozen=True)
class LayerFit:
    """One refitted layer: its relative error sum ||y_hat - y||^2 / sum ||y||^2 on held-out
    positions (y the teacher's output change) with the old block and with the block kept (the
    refitted one where it did better there, else the old), both on the student's own inputs
    (layers before it already calibrated)."""

    before: float
    after: float
    rank: int
    samples: int


@dataclass
class RefitReport:
    layers: dict[str, LayerFit] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # path -> why not refitted
    undone: list[str] = field(default_factory=list)  # refits the output's judge undid
    seconds: float = 0.0


class _Stop(Exception):
    """Raised by a capture hook: the rest of the forward pass is not needed."""


def _capture(model: DeltaModel, conv: DeltaConv, run) -> torch.Tensor | None:
    """The input of `conv` when `run()` runs `model`, the pass stopped right there (None: the
    pass never reached it)."""
    seen: list[torch.Tensor] = []

    def hook(module, args) -> None:
        seen.append(args[0].detach())
        raise _Stop

    handle = conv.register_forward_pre_hook(hook)
    try:
        run()
    except _Stop:
        pass
    finally:
        handle.remove()
    return seen[0] if seen else None


def patch_columns(delta: torch.Tensor, layer: ConvLayer, flat: torch.Tensor) -> torch.Tensor:
    """The conv's receptive fields at output positions `flat` (indices into N x H_out x W_out),
    as D x n float64 columns in the weight's order (c_in, kh, kw), zero padding included."""
    geometry = Geometry.of(layer)
    out_h, out_w = geometry.out_hw(tuple(delta.shape[-2:]))
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
        layer.kernel,
        layer.stride,
        layer.padding,
        layer.dilation,
    )
    n = flat // (out_h * out_w)
    rest = flat % (out_h * out_w)
    oy, ox = rest // out_w, rest % out_w
    padded = F.pad(delta, (pw, pw, ph, ph))
    taps = [
        padded[n, :, oy * sh + i * dh, ox * sw + j * dw] for i in range(kh) for j in range(kw)
    ]  # each n x c_in
    return torch.stack(taps, dim=2).reshape(len(flat), -1).T.double()


def _positions(delta: torch.Tensor, layer: ConvLayer, count: int, generator) -> torch.Tensor:
    out_h, out_w = Geometry.of(layer).out_hw(tuple(delta.shape[-2:]))
    total = delta.shape[0] * out_h * out_w
    if total <= count:
        return torch.arange(total)
    return torch.randperm(total, generator=generator)[:count]


def _block_matrix(block: LowRankBlock) -> torch.Tensor:
    """The block's map as a c_out x (c_in*kh*kw) matrix, float64."""
    expand = block.expand.weight.detach().double().flatten(1)
    return expand @ block.reduce.weight.detach().double().flatten(1)


def _why_not(layer: ConvLayer, block) -> str | None:
    if layer.calls != 1:
        return f"runs {layer.calls} times a frame"
    if layer.groups != 1:
        return "grouped conv"
    if isinstance(block, FullBlock):  # delta frames rerun the teacher conv: nothing to fit
        return "full: runs the teacher conv at inference"
    if not isinstance(block, LowRankBlock):
        return f"{type(block).__name__} is not refitted"
    return None


def _inverse_root(moment: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(moment)
    values = values.clamp_min(float(values.max()) * 1e-13 + 1e-300)
    return (vectors / values.sqrt()) @ vectors.T


def _solve(sss: torch.Tensor, sts: torch.Tensor, weight: torch.Tensor, rank: int, ridge: float):
    """The refitted matrix M of rank <= `rank`, and its factors (expand, reduce).

    sss = sum x_s x_s^T, sts = sum x_T x_s^T; weight W' (c_out x D)."""
    dim = sss.shape[0]
    lam = ridge * float(torch.trace(sss)) / dim
    moment = sss + lam * torch.eye(dim, dtype=sss.dtype)
    cross = weight @ sts + lam * weight  # sum y x_s^T + lam W'
    inverse_root = _inverse_root(moment)
    u, s, vh = torch.linalg.svd(cross @ inverse_root, full_matrices=False)
    root = s[:rank].sqrt()
    expand = u[:, :rank] * root
    reduce = (root[:, None] * vh[:rank]) @ inverse_root
    return expand @ reduce, expand, reduce


def _relative_error(matrix, weight, sss, sts, stt) -> float:
    """sum ||W' x_T - M x_s||^2 / sum ||W' x_T||^2, from the moments."""
    energy = torch.trace(weight @ stt @ weight.T)
    error = energy - 2 * torch.trace(weight @ sts @ matrix.T) + torch.trace(matrix @ sss @ matrix.T)
    return float(error.clamp_min(0) / energy) if energy > 0 else 0.0


def _write(block: LowRankBlock, expand: torch.Tensor, reduce: torch.Tensor) -> None:
    """The factors into the block (the rank is the block's: at most min(c_out, D), the SVD's)."""
    with torch.no_grad():
        block.reduce.weight.copy_(reduce.reshape(block.reduce.weight.shape))
        block.expand.weight.copy_(expand.reshape(block.expand.weight.shape))


def refit_student(
    student: DeltaModel,
    batches: Sequence[tuple[torch.Tensor, ...]],
    *,
    ridge: float = 0.1,
    positions: int = POSITIONS,
    seed: int = 0,
    judge: Callable[[], float] | None = None,
) -> RefitReport:
    """Refit `student`'s low-rank blocks in place, layer by layer in execution order,
    on (key frame, frame t) batches (`batches` is read once per layer: a list, not a stream;
    extra items such as labels are ignored). Returns each layer's relative error before and
    after on held-out positions, and the layers left as they were.

    `judge()`: a score of the whole student's output (higher is better, e.g. R on other
    batches), asked before the first layer and after each layer's refit; a refit that lowers it
    is undone at once, so the layers after it fit to the inputs of the student that is kept
    (`report.undone` names them)."""
    if student.per_frame:
        raise NasError("refit_student calibrates delta-mode students only")
    if not batches:
        raise NasError("refit_student needs at least one (key frame, frame) batch")
    start = time.perf_counter()
    report = RefitReport()
    was_training = student.training
    replay = student.replay
    student.eval()
    if replay is not None:  # every layer must run on delta frames, and stopped passes must
        student.use_replay(None)  # not leave a half-recorded replay behind
    generator = torch.Generator().manual_seed(seed)
    try:
        with torch.no_grad():
            student.key_frame(batches[0][0])  # settles the model's one-off cache check
            best = judge() if judge is not None else None
            for layer, conv in student.delta_convs():
                block = conv.block
                why = _why_not(layer, block)
                if why is not None:
                    report.skipped[layer.path] = why
                    continue
                if judge is not None:  # the factors to go back to
                    old = (
                        block.expand.weight.detach().clone(),
                        block.reduce.weight.detach().clone(),
                    )
                fit = _refit_layer(student, layer, conv, batches, ridge, positions, generator)
                if fit is None:
                    report.skipped[layer.path] = "its input did not change at the sampled positions"
                    continue
                report.layers[layer.path] = fit
                if best is not None and fit.after < fit.before:  # refitted: judged by the output
                    score = judge()
                    if score < best:  # worse there: the layer keeps its old factors
                        _write(block, *old)
                        report.undone.append(layer.path)
                    else:
                        best = score
    finally:
        student.clear()
        if replay is not None:
            student.use_replay(replay)
        student.train(was_training)
    report.seconds = time.perf_counter() - start
    return report


def _refit_layer(student, layer, conv, batches, ridge, positions, generator) -> LayerFit | None:
    dim = layer.c_in * layer.kernel[0] * layer.kernel[1]
    sss = torch.zeros(dim, dim, dtype=torch.float64)
    sts = torch.zeros_like(sss)
    stt = torch.zeros_like(sss)
    samples = 0
    held = [torch.zeros_like(sss) for _ in range(3)]  # the same moments, held-out positions
    for batch in batches:
        x_key, x_t = batch[0], batch[1]
        a_key = _capture(student, conv, lambda x=x_key: student.key_frame(x))
        a_teacher = _capture(student, conv, lambda x=x_t: student.teacher_frame(x))
        a_student = _capture(student, conv, lambda x=x_t: student.delta_frame(x))
        if a_key is None or a_teacher is None or a_student is None:
            continue
        flat = _positions(a_key, layer, positions, generator)
        xs = patch_columns((a_student - a_key).cpu(), layer, flat)
        xt = patch_columns((a_teacher - a_key).cpu(), layer, flat)
        cut = max(1, round(xs.shape[1] * (1 - HELD_OUT)))
        sss += xs[:, :cut] @ xs[:, :cut].T
        sts += xt[:, :cut] @ xs[:, :cut].T
        stt += xt[:, :cut] @ xt[:, :cut].T
        held[0] += xs[:, cut:] @ xs[:, cut:].T
        held[1] += xt[:, cut:] @ xs[:, cut:].T
        held[2] += xt[:, cut:] @ xt[:, cut:].T
        samples += cut
    if samples == 0 or float(torch.trace(sss)) == 0.0:
        return None
    block = conv.block
    weight = conv.conv.weight.detach().double().cpu().flatten(1)
    old = _block_matrix(block).cpu()
    rank = block.reduce.out_channels
    matrix, expand, reduce = _solve(sss, sts, weight, rank, ridge)
    before = _relative_error(old, weight, *held)
    after = _relative_error(matrix, weight, *held)
    if after < before:  # a fit that does not generalise to held-out positions is not kept
        _write(block, expand, reduce)
    return LayerFit(before=before, after=min(after, before), rank=rank, samples=samples)
