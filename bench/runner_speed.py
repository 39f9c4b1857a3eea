"""Is the saving real? Measured amortised latency of delta models against the teacher.

deeplabv3 (MobileNetV3-Large) at 520x520. Two specs, each exported by a search of --steps steps
(default 150, as `nas search`) on the first 60 frames of the built-in clip: an amortised budget
of 5 GFLOPs at key-frame interval 3, and a third of the teacher at interval 6. Each is run by
`DeltaRunner` over a stream of frames (a key frame every K frames), side by side with the
teacher on the same frames in the same process, in both memory layouts (NCHW, and the
channels-last NHWC that CPU convolutions prefer); prints the measured amortised latency per
frame, the wall-clock speed-up, the multiply-add ratio, and the speed-up as a share of the
multiply-add ratio (the target is at least 80%). The teacher is torchvision's module as shipped;
the same teacher with its BatchNorms folded into the convs (as the delta model's key frame runs
it) is timed beside it.

Each budget is searched twice: with the FLOPs budget alone, and with `--max-latency` beside it
at the target itself (the teacher's time, measured before the search, over 80% of the budget's
multiply-add ratio; both measured in the search's default layout, channels-last on the CPU,
as `nas eval` runs the student). A FLOPs budget alone
removes the multiply-adds that are cheapest to remove, which on a CPU is not where the time
goes; the limit makes the search pay for time as well.

A second table says where a frame's time goes: in the searched convs (the teacher's, BN folded)
or the student blocks (a delta frame's, each with its recurrence `z_k + g(a - a_k)`), and in
everything else the network runs on every frame (activations, squeeze-excitation, additions,
the final upsampling), which multiply-adds do not count. Its blocks' speed-up is set against
the blocks' own multiply-add ratio (teacher convs / delta frame). A third times each running
block alone against the teacher conv it stands in for (the search's per-device latency table)
and counts the blocks that save multiply-adds yet run slower than the conv: savings on paper;
and it gives the layers left `full` as shares of the teacher's conv multiply-adds and conv time
(layers with few multiply-adds but much time are where a FLOPs budget leaves the time).

Multiply-adds are counted as torchvision counts them, which includes the products of kernel
taps with zero padding. The channels-last CPU kernels skip those, and in DeepLabV3's atrous
pyramid at 520x520 they are nearly half the teacher's count (`nas.cost.macs.padding_macs`); so each
line also gives the ratio of the multiply-adds the two models execute (padding products left
out) and the speed-up as a share of that. The second table adds the share a delta model would
reach if its blocks ran at the teacher convs' own pace (ms per executed multiply-add, measured
in the same layout), its key frame at the folded teacher's time and what it runs outside the
blocks as measured: where that is short of the target, only blocks faster per multiply-add than
the teacher's own convs could meet it.

Each spec's line also says how many layers run a block on delta frames (`nas.delta.liveness`), the
search's agreement with the teacher on held-out frames, and the student's error on frames of the
built-in clip as a share of the error of repeating the key frame's output. A spec whose every
layer is idle repeats the key frame's output (a share of 1), and so does one whose predicted
change does not reach the output: their speed-ups say nothing of a model that predicts
anything. torchvision's DeepLabV3 has no trained weights here; its random init gets BatchNorm
statistics measured on the clip (`nas.teachers.batchnorm_stats`), so its output follows its
input, if without a trained model's meaning. `--teacher ppocrv4_det --size 288x640 --budgets
half:3,third:6` measures the same on the trained text detector.

    python bench/runner_speed.py [--device cpu|cuda] [--steps 150] [--rounds 5] [--spec S ...]
                                 [--keep DIR] [--teacher T --size HxW --budgets B:K,...]
                                 [--cheapest] [--fastest] [--closed-branches]

`--fastest` adds, at each interval, every layer at the block the search's latency table times
fastest (`zero` left out, so every layer runs one): the ceiling of what any spec whose every
layer runs a block can gain on this machine, to set against the speed-up the target asks for.
With `--closed-branches` each is also timed with every residual branch closed by a `zero`:
the change then reaches the output along the identities alone, and fewer layers run.

`--forms` prints instead one table of each spec's student as it ships (built from the spec, run
by `DeltaRunner` in the device's layout, as `nas eval` runs it), timed side by side with the
teacher in interleaved rounds on real frames of each built-in clip, with a delta frame in each
form: the recurrence z_k + g(a - a_k) as trained; the linear form c_k + g(a) (c_k = z_k -
g(a_k) kept from the key frame: no subtraction pass, one block call more on the key frame, whose
multiply-adds its ratio counts); and the recurrence skipping the tiles whose input did not
change (`nas.delta.tiles`) at each of `--thresholds`, with the share of tiles it ran. Each row also
gives R on the timed frames, so that a threshold's cost in quality is beside its time:

    python bench/runner_speed.py --forms --teacher u2netp --size 320x320 --spec SPEC.json

`--keep DIR` writes each searched spec to DIR (or reads it from there when a previous run left
it), so the timings can be rerun without searching again.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from evaluators import ErrorVsKey
from nas.core.errors import NasError
from nas.core.layout import layout_for
from nas.core.sizes import parse_size
from nas.cost.amortised import amortised
from nas.cost.budget import Budget, CostKind, parse_budget
from nas.cost.latency import fixed_threads, time_module
from nas.cost.macs import count_macs, padding_macs
from nas.data import load_frames, open_video
from nas.delta.liveness import NO_CHANGE, idle_layers, layer_sources
from nas.delta.runner import DeltaRunner
from nas.delta.tiles import TileSkip
from nas.graph.fold import fold_batchnorms
from nas.graph.layers import layer_graph
from nas.searching.make_spec import make_spec
from nas.searching.options import SearchOptions
from nas.searching.pipeline import prepare, search
from nas.searching.tables import block_latencies, macs_table
from nas.spec import DeltaForm, Spec, load_spec, save_spec
from nas.student.build import build_student, idle_layers_of, teacher_for
from nas.student.holdout import held_out_agreement
from nas.student.speed import SPEED_TARGET, time_student, timing_frames
from nas.teachers import load_teacher
from search_spaces import build_candidate

CLIP = "sample:bikes"  # real frames, for how much of the change a student predicts

# Both models run in each memory layout; channels-last is the faster one for convs on CPU.
LAYOUTS = {"NCHW": torch.contiguous_format, "NHWC": torch.channels_last}


def per_frame(fns, frames, rounds: int, device: torch.device) -> list[float]:
    """Median over rounds of the mean seconds per frame of each of `fns` over the stream; the
    functions take turns within each round, so drifts of the machine's speed hit all alike."""
    times = [[] for _ in fns]
    for _ in range(rounds + 1):  # the first round warms up
        for fn, spent in zip(fns, times, strict=True):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn(frames)
            if device.type == "cuda":
                torch.cuda.synchronize()
            spent.append((time.perf_counter() - start) / len(frames))
    return [statistics.median(spent[1:]) for spent in times]


def split_time(model, convs, frame, device: torch.device, rounds: int) -> tuple[float, float]:
    """Median seconds of `model(frame)` in `convs` (forward hooks) and outside them."""
    spent: list[float] = []
    started: dict[int, float] = {}

    def before(module, args):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started[id(module)] = time.perf_counter()

    def after(module, args, out):
        if device.type == "cuda":
            torch.cuda.synchronize()
        spent[-1] += time.perf_counter() - started[id(module)]

    hooks = [
        h
        for c in convs
        for h in (c.register_forward_pre_hook(before), c.register_forward_hook(after))
    ]
    inside, total = [], []
    try:
        for _ in range(rounds + 1):
            spent.append(0.0)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(frame)
            if device.type == "cuda":
                torch.cuda.synchronize()
            total.append(time.perf_counter() - start)
            inside.append(spent[-1])
    finally:
        for h in hooks:
            h.remove()
    median_in = statistics.median(inside[1:])
    return median_in, statistics.median(total[1:]) - median_in


def executed(spec: Spec) -> tuple[float, float, float]:
    """The multiply-adds the teacher and a delta frame of `spec` execute (their counts less the
    products with zero padding), and the teacher's that its convs execute."""
    teacher = teacher_for(spec)
    size = tuple(spec.input_size)
    layers = {layer.path: layer for layer in layer_graph(teacher.module, size)}
    teacher_padding = padding_macs(teacher.module, (1, 3, *size))
    delta = 0
    for choice in spec.layers:
        if choice.candidate == NO_CHANGE:
            continue
        layer = layers[choice.path]
        block = build_candidate(choice.candidate, layer)
        padding = padding_macs(block, (1, layer.c_in, *layer.in_hw)) * layer.calls
        delta += choice.macs - padding
    conv_macs = sum(layer.macs for layer in layers.values())
    return spec.totals.teacher_macs - teacher_padding, delta, conv_macs - teacher_padding


def error_against_repeating(spec: Spec, teacher, student, frames: int = 13) -> float:
    """`evaluators.ErrorVsKey` of the student (as exported, no retraining) on the delta frames
    of the first `frames` frames of the built-in clip, key frames every K: 1 for a student whose
    predicted change does not reach the output, 0 for one that predicts the teacher's exactly."""
    stack = load_frames(open_video(CLIP, max_frames=frames), size=tuple(spec.input_size))
    against_key = ErrorVsKey()
    with torch.inference_mode():
        for i, x in enumerate(teacher.input_spec.normalize(stack.frames)[:, None]):
            y_teacher = teacher(x)
            if i % spec.keyframe_interval == 0:
                y_key = student.key_frame(x)
                continue
            against_key.update(student.delta_frame(x), y_key, y_teacher)
    error = against_key.compute()
    return float("nan") if error is None else error


def running_note(spec: Spec) -> str:
    """How many of the spec's layers run a block on delta frames (and idle blocks paid for),
    what its search measured, and how much of the teacher's change between frames the
    student's output predicts."""
    teacher = teacher_for(spec)
    student = build_student(spec, teacher)
    idle = idle_layers_of(spec, student)
    paid = sum(layer.path in idle and layer.candidate != NO_CHANGE for layer in spec.layers)
    running = len(spec.layers) - len(idle)
    agreement = spec.metrics.get("val_agreement")
    searched_ms = spec.metrics.get("amortised_ms")  # its search's own end-to-end timing
    return (
        f"{running} of {len(spec.layers)} layers run a block on delta frames"
        + (f", agreement with the teacher {agreement:.4f}" if agreement is not None else "")
        + (f", {searched_ms:.1f} ms per frame as its search measured it" if searched_ms else "")
        + (f" ({paid} idle blocks paid for)" if paid else "")
        + ("; the output repeats the key frame's" if running == 0 else "")
        + f"; error on {CLIP} {error_against_repeating(spec, teacher, student):.3f}"
        " of repeating the key frame's output"
    )


def paper_savings(spec: Spec, device: torch.device, threads: int) -> tuple:
    """The running blocks of `spec` timed alone against the teacher convs they replace: how
    many, their ms and the convs' ms, the convs' multiply-adds over theirs, and how many of
    them run slower than their conv (the multiply-adds they save, the ms they lose), and the
    layers left `full`: their share of the teacher's conv multiply-adds and of its conv time."""
    teacher = teacher_for(spec, device=str(device))
    layers = layer_graph(teacher.module, spec.input_size)
    picks = {layer.path: layer.candidate for layer in spec.layers if layer.candidate != NO_CHANGE}
    names = {layer.path: sorted({"full", picks.get(layer.path, "full")}) for layer in layers}
    seconds = block_latencies(layers, names, device=device, threads=threads)
    macs = macs_table(teacher, layers, names, spec.input_size).candidates
    ms = {path: {name: 1e3 * t for name, t in costs.items()} for path, costs in seconds.items()}
    slower = [path for path, name in picks.items() if ms[path][name] > ms[path]["full"]]
    block_macs = sum(macs[path][name] for path, name in picks.items())
    kept = [path for path, name in picks.items() if name == "full"]

    def share(costs: dict, paths: list[str]) -> float:
        """The layers `paths` at `full`, as a share of every layer's `full` in `costs`."""
        return sum(costs[p]["full"] for p in paths) / sum(costs[p]["full"] for p in costs)

    return (
        len(picks),
        sum(ms[path][name] for path, name in picks.items()),
        sum(ms[path]["full"] for path in picks),
        sum(macs[path]["full"] for path in picks) / block_macs if block_macs else float("nan"),
        len(slower),
        sum(macs[path]["full"] - macs[path][picks[path]] for path in slower),
        sum(ms[path][picks[path]] - ms[path]["full"] for path in slower),
        share(macs, kept),
        share(ms, kept),
    )


FRACTIONS = {"half": 2, "third": 3}  # budgets as a fraction of the teacher's multiply-adds


def searched(
    teacher_name: str,
    size: tuple[int, int],
    budget_text: str,
    interval: int,
    steps: int,
    device: str,
    *,
    limited: bool,
    keep: Path | None,
) -> Spec | str:
    """The spec of a search of `steps` steps at `budget_text` ("half", "third": of the
    teacher), or why there is none. `limited`: with `--max-latency` at the target, the
    teacher's time (measured now) over `SPEED_TARGET` times the budget's multiply-add ratio.
    `keep`: a folder where the spec is kept (and found again by a later run)."""
    name = f"{teacher_name}-{budget_text}-K{interval}{'-limited' if limited else ''}.json"
    kept = keep / name if keep else None
    if kept is not None and kept.exists():
        return load_spec(kept)
    teacher = load_teacher(teacher_name, device=device)
    macs = count_macs(teacher.module, size)
    budget = (
        Budget(CostKind.MACS, macs / FRACTIONS[budget_text])
        if budget_text in FRACTIONS
        else parse_budget(budget_text)
    )
    max_latency = None
    if limited:
        channels_last = layout_for(torch.device(device))  # the layout the search measures in
        seconds = time_module(
            teacher.module.eval(), (1, 3, *size), device=device, channels_last=channels_last
        ).median
        max_latency = f"{1e3 * seconds / (SPEED_TARGET * macs / budget.value):.1f}ms"
    with tempfile.TemporaryDirectory() as out:
        options = SearchOptions(
            teacher=teacher_name, budget=str(budget), max_latency=max_latency,
            keyframe_interval=interval, steps=steps, device=device, out=out, max_frames=60,
            val_batches=1, input_size=f"{size[0]}x{size[1]}",
        )  # fmt: skip
        try:
            spec = search(options).spec
            if kept is not None:
                save_spec(spec, kept)
            return spec
        except NasError as exc:
            return f"{budget} <={max_latency} K={interval}: {exc}"


def cheapest(
    teacher_name: str, size: tuple[int, int], interval: int, device: str, *, by: str = "macs"
) -> Spec:
    """Every layer at its cheapest block that passes a change on, by multiply-adds (`by="macs"`:
    the least a delta model that predicts anything runs on a delta frame) or by the search's
    measured latency table in its layout (`by="latency"`: the fastest such delta model, the
    ceiling of any spec whose every layer runs a block)."""
    teacher_macs = count_macs(load_teacher(teacher_name).module, size)
    budget = f"{teacher_macs / 1e9}GFLOPs" if by == "macs" else "3600s"  # not searched
    with tempfile.TemporaryDirectory() as out:
        run = prepare(
            SearchOptions(
                teacher=teacher_name, budget=budget, keyframe_interval=interval, device=device,
                out=out, max_frames=24, input_size=f"{size[0]}x{size[1]}",
            )
        )  # fmt: skip
    costs = run.macs if by == "macs" else run.costs
    picks = {
        path: min((name for name in found if name != NO_CHANGE), key=found.get)
        for path, found in costs.candidates.items()
    }
    spec = make_spec(
        run.teacher, run.layers, picks, run.macs, run.budget, run.size, run.options, {}
    )
    return spec.model_copy(update={"search": spec.search.model_copy(update={"cheapest": by})})


def residual_projections(module: torch.nn.Module) -> set[str]:
    """The last conv of every residual branch (torchvision's inverted residuals that add their
    input back): with it `zero`, the branch passes no change and is replayed whole."""
    found = set()
    for path, sub in module.named_modules():
        if getattr(sub, "use_res_connect", False) and hasattr(sub, "block"):
            convs = [p for p, c in sub.block.named_modules() if isinstance(c, torch.nn.Conv2d)]
            found.add(f"{path}.block.{convs[-1]}")
    return found


def closed_branches(spec: Spec) -> Spec | None:
    """`spec` with every residual branch closed (its projection `zero`, and the layers that
    leaves idle): the change reaches the output through the identities alone. None for a
    teacher without residual branches."""
    teacher = teacher_for(spec)
    closing = residual_projections(teacher.module) | {
        layer.path for layer in spec.layers if layer.candidate == NO_CHANGE
    }
    if not closing - {layer.path for layer in spec.layers if layer.candidate == NO_CHANGE}:
        return None
    sources = layer_sources(build_student(spec, teacher), tuple(spec.input_size))
    idle = idle_layers(sources, closing)
    removed = [layer for layer in spec.layers if layer.path in idle]
    delta = spec.totals.delta_frame_macs - sum(layer.macs for layer in removed)
    totals = spec.totals.model_copy(
        update={
            "delta_frame_macs": delta,
            "amortised_macs": amortised(spec.totals.teacher_macs, delta, spec.keyframe_interval),
            "student_params": spec.totals.student_params - sum(layer.params for layer in removed),
        }
    )
    layers = [
        layer.model_copy(update={"candidate": NO_CHANGE, "macs": 0, "params": 0})
        if layer.path in idle
        else layer
        for layer in spec.layers
    ]
    search = spec.search.model_copy(update={"closed_branches": True})
    return spec.model_copy(update={"layers": layers, "totals": totals, "search": search})


def label_of(spec: Spec) -> str:
    """How a spec is named in the tables: its budget (and time limit), or what made it."""
    interval = spec.keyframe_interval
    closed = " closed" if getattr(spec.search, "closed_branches", None) else ""
    by = getattr(spec.search, "cheapest", None)
    if by:
        return f"{'fastest' if by == 'latency' else 'cheapest'}{closed} K={interval}"
    if closed:
        return f"{spec.budget.text}{closed} K={interval}"
    limit = spec.search.max_latency
    return f"{spec.budget.text}{f' <={limit}' if limit else ''} K={interval}"


CLIPS = ("sample:carphone", "sample:bikes", "sample:bigbuckbunny")


def forms(thresholds: list[float]) -> dict[str, tuple[bool, TileSkip | None]]:
    """A delta frame's forms (`nas.delta.model.DeltaConv`): name -> (linear, skipping)."""
    found = {"recurrence": (False, None), "linear": (True, None)}
    for threshold in thresholds:
        found[f"skip {threshold:g}"] = (False, TileSkip(threshold=threshold))
    return found


def set_form(student, linear: bool, skip: TileSkip | None) -> None:
    student.use_linear(linear).use_skipping(skip)


def forms_table(
    specs: list[Spec],
    device: torch.device,
    threads: int,
    rounds: int,
    thresholds: list[float],
    clips: list[str],
) -> None:
    """Each spec's student as it ships (`nas.build_student`, run by `DeltaRunner` in the device's
    layout), a delta frame in each form, timed side by side with the teacher's module
    (`nas.student.speed.time_student`, interleaved rounds) on four key-frame intervals of real
    frames of each of `clips`: the amortised speed-up beside the multiply-add ratio (for the linear
    form with the key frame's extra block calls counted), R on those frames, and for skipping the
    share of tiles run."""
    channels_last = layout_for(device)
    print(
        f"\nAs it ships, on real frames ({'NHWC' if channels_last else 'NCHW'}; ms per frame; "
        "teacher and student in interleaved rounds):"
    )
    print(
        f"{'spec':24} {'clip':20} {'form':10} {'teacher':>8} {'key':>7} {'delta':>7} "
        f"{'amortised':>9} {'speed-up':>8} {'MAC ratio':>9} {'R':>7} {'tiles run':>9}"
    )
    for spec in specs:
        teacher = teacher_for(spec, device=str(device))
        student = build_student(spec, teacher).to(device)
        interval = spec.keyframe_interval
        normalize = teacher.input_spec.normalize
        for clip in clips:
            stack = load_frames(open_video(clip, max_frames=4 * interval), size=spec.input_size)
            frames = timing_frames((normalize(x[None]) for x in stack.frames), interval, 4)
            for form, (linear, skip) in forms(thresholds).items():
                set_form(student, linear, skip)
                scores = held_out_agreement(
                    teacher, student, [stack.frames], interval=interval,
                    student_size=tuple(spec.input_size), device=device,
                )  # fmt: skip
                r = scores["r"]
                share = "" if skip is None else f"{100 * skip.active_share:8.0f}%"
                t = time_student(
                    student, teacher, frames, interval, device=device, threads=threads,
                    channels_last=channels_last, rounds=rounds,
                )  # fmt: skip
                form_spec = spec.in_form(DeltaForm.LINEAR if linear else DeltaForm.RECURRENCE)
                ratio = spec.totals.teacher_macs / form_spec.totals.amortised_macs
                ms = amortised(t["keyframe_s"], t["delta_frame_s"], interval) * 1e3
                speedup = t["teacher_s"] * 1e3 / ms
                print(
                    f"{label_of(spec):24} {clip:20} {form:10} {t['teacher_s'] * 1e3:8.1f} "
                    f"{t['keyframe_s'] * 1e3:7.1f} {t['delta_frame_s'] * 1e3:7.1f} {ms:9.1f} "
                    f"{speedup:8.2f} {ratio:9.2f} {r:7.3f} {share:>9}",
                    flush=True,
                )
        set_form(student, False, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=150, help="search steps for each spec")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument(
        "--spec", action="append", default=[], help="measure this spec instead of searching"
    )
    parser.add_argument("--keep", type=Path, help="keep the searched specs in this folder")
    parser.add_argument(
        "--cheapest", action="store_true",
        help="also time, at each interval, every layer at its cheapest non-zero block",
    )  # fmt: skip
    parser.add_argument(
        "--fastest", action="store_true",
        help="also time, at each interval, every layer at its fastest non-zero block (measured)",
    )  # fmt: skip
    parser.add_argument(
        "--closed-branches", action="store_true",
        help="also time each FLOPs spec (and with --fastest, each fastest one) with every "
        "residual branch closed by a zero",
    )  # fmt: skip
    parser.add_argument("--teacher", default="deeplabv3")
    parser.add_argument("--size", default="520x520")
    parser.add_argument(
        "--budgets", default="5GFLOPs:3,third:6",
        help="budget:interval pairs; a budget is a FLOPs figure, or half / third of the teacher",
    )  # fmt: skip
    parser.add_argument(
        "--forms", action="store_true",
        help="only the table of the student as it ships, each delta-frame form, on real frames",
    )  # fmt: skip
    parser.add_argument(
        "--clips", default=",".join(CLIPS), help="with --forms: the built-in clips to time on"
    )
    parser.add_argument(
        "--thresholds", default="0,0.02,0.05",
        help="with --forms: skipping thresholds to time (share of a layer's mean |input|)",
    )  # fmt: skip
    args = parser.parse_args()
    size = parse_size(args.size)
    budgets = [
        (text, int(interval))
        for text, interval in (pair.split(":") for pair in args.budgets.split(","))
    ]
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    threads = torch.get_num_threads()
    print(
        f"{args.teacher} at {size[0]}x{size[1]} on {device} ({threads} threads), "
        f"torch {torch.__version__}"
    )
    print(
        f"{'spec':30} {'layout':8} {'teacher ms':>10} {'folded ms':>9} {'delta ms':>9} "
        f"{'speed-up':>8} {'MAC ratio':>9} {'share':>6} {'executed':>8} {'share':>6}"
    )
    splits, alone = [], []

    def search_for(budget: str, interval: int, limited: bool) -> Spec | str:
        where = (args.teacher, size, budget, interval, args.steps, args.device)
        return searched(*where, limited=limited, keep=args.keep)

    specs = [load_spec(path) for path in args.spec] or [
        search_for(budget, interval, limited)
        for budget, interval in budgets
        for limited in ((False,) if args.forms else (False, True))
    ]

    def closed_ones(found: list[Spec]) -> list[Spec]:
        """`found` with every residual branch closed, where `--closed-branches` asks for it."""
        if not args.closed_branches:
            return []
        return [closed for closed in map(closed_branches, found) if closed is not None]

    fastest = []
    if args.fastest:
        fastest = [
            cheapest(args.teacher, size, interval, args.device, by="latency")
            for _, interval in budgets
        ]
    specs += closed_ones([s for s in specs if not isinstance(s, str) and not s.search.max_latency])
    if args.cheapest:
        specs += [cheapest(args.teacher, size, interval, args.device) for _, interval in budgets]
    specs += fastest + closed_ones(fastest)
    if args.forms:
        thresholds = [float(v) for v in args.thresholds.split(",") if v]
        found = [s for s in specs if not isinstance(s, str)]
        forms_table(found, device, threads, args.rounds, thresholds, args.clips.split(","))
        return
    for spec in specs:
        if isinstance(spec, str):
            print(f"no spec: {spec}")
            continue
        interval = spec.keyframe_interval
        generator = torch.Generator().manual_seed(0)
        base = torch.randn(1, 3, *spec.input_size, generator=generator)
        stream = [
            base + 0.05 * i * torch.randn(1, 3, *spec.input_size, generator=generator)
            for i in range(args.frames)
        ]
        mac_ratio = spec.totals.teacher_macs / spec.totals.amortised_macs
        teacher_run, delta_run, convs_run = executed(spec)
        run_ratio = teacher_run / amortised(teacher_run, delta_run, interval)
        label = label_of(spec)
        print(f"  {label}: {running_note(spec)}")
        for layout, memory_format in LAYOUTS.items():
            teacher = teacher_for(spec, device=str(device)).module.to(memory_format=memory_format)
            layers = layer_graph(teacher, spec.input_size)
            folded = fold_batchnorms(teacher, layers).to(memory_format=memory_format)
            student = build_student(spec, teacher_for(spec, device=str(device)))
            runner = DeltaRunner(student.to(device, memory_format=memory_format), interval=interval)
            frames = [x.to(device, memory_format=memory_format) for x in stream]

            def run_teacher(xs, teacher=teacher):
                with torch.inference_mode():
                    for x in xs:
                        teacher(x)

            def run_folded(xs, folded=folded):
                with torch.inference_mode():
                    for x in xs:
                        folded(x)

            def run_delta(xs, runner=runner):
                for _ in runner.run(xs):
                    pass

            with fixed_threads(threads):
                t_teacher, t_folded, t_delta = per_frame(
                    (run_teacher, run_folded, run_delta), frames, args.rounds, device
                )
                with torch.inference_mode():
                    teacher_split = split_time(
                        folded, [folded.get_submodule(layer.path) for layer in layers], frames[1],
                        device, args.rounds,
                    )  # fmt: skip
                    student.key_frame(frames[0])
                    delta_split = split_time(
                        student.delta_frame, [c for _, c in student.delta_convs()], frames[1],
                        device, args.rounds,
                    )  # fmt: skip
            speedup = t_teacher / t_delta
            print(
                f"{label:30} {layout:8} {t_teacher * 1e3:10.1f} {t_folded * 1e3:9.1f} "
                f"{t_delta * 1e3:9.1f} {speedup:8.2f} {mac_ratio:9.2f} "
                f"{100 * speedup / mac_ratio:5.0f}% {run_ratio:8.2f} "
                f"{100 * speedup / run_ratio:5.0f}%"
            )
            conv_macs = sum(layer.macs for layer in layers)
            block_macs = sum(choice.macs for choice in spec.layers)
            block_ratio = f"{conv_macs / block_macs:9.2f}" if block_macs else f"{'-':>9}"
            # Blocks at the teacher convs' pace, all else as measured: the share that reaches.
            pace = teacher_split[0] / convs_run
            paced = amortised(t_folded, delta_split[1] + delta_run * pace, interval)
            paced_share = t_teacher / paced / mac_ratio
            splits.append((label, layout, teacher_split, delta_split, block_ratio, paced_share))
        alone.append((label, paper_savings(spec, device, threads)))
    print("\nWhere a frame's time goes (ms per frame; teacher BN folded, one delta frame):")
    print(
        f"{'spec':30} {'layout':8} {'teacher convs':>13} {'other':>6} {'delta blocks':>12} "
        f"{'other':>6} {'blocks speed-up':>15} {'MAC ratio':>9} {'share at teacher pace':>21}"
    )
    for label, layout, (t_in, t_out), (d_in, d_out), block_ratio, paced_share in splits:
        faster = f"{t_in / d_in:15.2f}" if d_in else f"{'-':>15}"  # none ran: all replayed
        print(
            f"{label:30} {layout:8} {t_in * 1e3:13.1f} {t_out * 1e3:6.1f} {d_in * 1e3:12.1f} "
            f"{d_out * 1e3:6.1f} {faster} {block_ratio} {100 * paced_share:20.0f}%"
        )
    print(
        "\nBlocks timed alone (NCHW, the search's latency table), against the teacher's convs "
        "they stand in for:"
    )
    print(
        f"{'spec':30} {'blocks':>6} {'ms':>6} {'conv ms':>7} {'MAC ratio':>9} "
        f"{'slower than conv':>16} {'their MMACs saved':>17} {'ms lost':>7} "
        f"{'full: MACs':>10} {'full: ms':>8}"
    )
    for label, (n, ms, conv_ms, ratio, slower, saved, lost, full_macs, full_ms) in alone:
        print(
            f"{label:30} {n:6} {ms:6.1f} {conv_ms:7.1f} {ratio:9.2f} {slower:16} "
            f"{saved / 1e6:17.1f} {lost:7.2f} {100 * full_macs:9.0f}% {100 * full_ms:7.0f}%"
        )


if __name__ == "__main__":
    main()
