"""The `nas` command line: the app, the options several commands share, and the commands on one
teacher or student (cost, teachers, train, infer, eval); `nas.cli.study` adds those of a study.

Mistakes in the input print one line (`error: ...`) and exit with code 2; `--debug` shows the
traceback instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from nas.core.errors import NasError
from nas.spec import Mode

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Architecture search for fast video models against a FLOPs or latency budget.",
)
console = Console(width=None if sys.stdout.isatty() else 160)


# Frame pairs of the per-frame modes (no key frames) are 1..PAIR_INTERVAL-1 frames apart.
PAIR_INTERVAL = 3

# Options several commands share.
SPEC = typer.Option(..., "--spec", help="spec.json written by nas search.")
WEIGHTS = typer.Option(None, "--weights", help="student.pt from nas train.")
KEYFRAME_INTERVAL = typer.Option(None, "--keyframe-interval", "-k", help="Default: the spec's.")
DEVICE = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available).")
LAYOUT = typer.Option(
    "auto",
    "--layout",
    help="nhwc (channels-last), nchw, or auto: nhwc on the CPU, where convs run faster in it. "
    "The student runs in it, and a search measures latencies in it.",
)
TEACHER = typer.Option(
    "deeplabv3",
    "--teacher",
    "-t",
    help="Teacher name, onnx:PATH, tflite:PATH or module:callable.",
)
TEACHER_WEIGHTS = typer.Option(None, "--teacher-weights", help="State dict file (torch.save).")
VIDEOS_HELP = (
    "sample:NAME, synthetic[:k=v,...], a file, a folder of frames or of videos, a glob, "
    "cityscapes:ROOT; repeat it for several. Default: every built-in clip for the trained "
    "teachers (prob_map), sample:bikes for the others."
)


@app.callback()
def _root(
    debug: bool = typer.Option(
        False, "--debug", help="Show tracebacks instead of one-line errors."
    ),
) -> None:
    """Options before the command apply to every command."""


def _progress(label: str, counts: str):
    """A bar labelled `label`, the `counts` text (a rich format of the task) and the time."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        TextColumn(counts),
        TimeElapsedColumn(),
        console=console,
    )


def _step_progress(label: str):
    """A bar of steps with a free-text status (loss, cost, ...) and the time taken."""
    return _progress(label, "step {task.completed}/{task.total}  {task.fields[status]}")


def _frame_progress(label: str):
    """A count of frames done (and, in the `keys` field, what else to say), and the time."""
    return _progress(label, "{task.completed} frames{task.fields[keys]}")


def _gflops(macs: float) -> str:
    return f"{macs / 1e9:,.3f}"


@app.command()
def teachers() -> None:
    """List the built-in teachers with their parameters and GFLOPs at the default input size."""
    from nas.cost.macs import cost_report
    from nas.teachers import TEACHERS, load_teacher

    table = Table(title="teachers", title_justify="left")
    columns = ("name", "aliases", "weights", "output", "default input", "params", "GFLOPs")
    for column in columns:
        table.add_column(column, justify="right" if column in ("params", "GFLOPs") else "left")
    for name in TEACHERS:
        try:
            teacher = load_teacher(name, device="meta")
        except NasError as exc:  # a teacher whose data package is missing is listed, not fatal
            table.add_row(
                name, ", ".join(TEACHERS.aliases_of(name)), "", f"unavailable: {exc}", "", "", ""
            )
            continue
        size = teacher.input_spec.default_size
        report = cost_report(teacher.module, size)
        table.add_row(
            name,
            ", ".join(TEACHERS.aliases_of(name)),
            "random init: pass --teacher-weights" if teacher.is_random else "trained, in the box",
            teacher.output_kind.value,
            f"{size[0]}x{size[1]}",
            f"{report.params:,}",
            _gflops(report.macs),
        )
    console.print(table)
    console.print(
        "Also: onnx:PATH (any ONNX model), tflite:PATH (a TFLite model, read without "
        "TensorFlow) and module:callable (your own factory)."
    )


@app.command()
def cost(
    teacher: str = TEACHER,
    input_size: str | None = typer.Option(
        None, "--input-size", help="HxW, e.g. 520x520 (default: the teacher's)."
    ),
    per_layer: bool = typer.Option(False, "--per-layer", help="One row per conv layer."),
    latency: str | None = typer.Option(
        None, "--latency", help="Also measure latency on this device (cpu, cuda)."
    ),
    aux: bool = typer.Option(
        False, "--aux", help="Count the auxiliary head (torchvision's published figures)."
    ),
    teacher_weights: Path | None = TEACHER_WEIGHTS,
    num_classes: int | None = typer.Option(
        None,
        "--num-classes",
        help="Classes of a torchvision teacher's head (DeepLabV3 family, classifiers).",
    ),
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads for latency (default: all cores)."
    ),
    budget: str | None = typer.Option(
        None, "--budget", help="Compare with a budget, e.g. 5GFLOPs, 40ms or 50% (of the teacher)."
    ),
    layout: str = typer.Option(
        "nchw",
        "--layout",
        help="Layout latency is measured in: nchw (as shipped), nhwc, or auto (nhwc on the CPU).",
    ),
) -> None:
    """Multiply-adds (GFLOPs), parameters and, optionally, latency of a teacher."""
    from nas.core.layout import check_layout, layout_for
    from nas.core.sizes import check_multiple, parse_size
    from nas.cost.budget import CostKind, parse_budget, resolve_budget
    from nas.cost.latency import conv_latencies, default_threads, parse_device, time_module
    from nas.cost.macs import cost_report, padding_macs
    from nas.teachers import load_teacher

    size = parse_size(input_size) if input_size is not None else None
    device = parse_device(latency) if latency is not None else None
    check_layout(layout)
    channels_last = device is not None and layout_for(device, layout)
    limit = parse_budget(budget) if budget is not None else None
    if limit is not None and limit.kind is CostKind.LATENCY and device is None:
        raise NasError(
            f"a latency budget ({limit}) needs a device to measure on: add --latency cpu"
        )
    model = load_teacher(
        teacher,
        weights=teacher_weights,
        num_classes=num_classes,
        aux=aux,
        device=str(device) if device is not None else "meta",
    )
    size = size or model.input_spec.default_size
    check_multiple(size, model.input_spec.size_multiple, who=f"teacher {model.name}")
    report = cost_report(model.module, size)
    has_aux = any(name.startswith("aux_classifier") for name, _ in model.module.named_children())

    summary = Table(show_header=False, box=None, pad_edge=False)
    summary.add_row("teacher", model.name + (" (aux head on)" if has_aux else ""))
    summary.add_row("input", f"1x3x{size[0]}x{size[1]}")
    summary.add_row(
        "GFLOPs", f"{_gflops(report.macs)}  (multiply-adds, as torchvision counts them)"
    )
    summary.add_row("parameters", f"{report.params:,}")
    summary.add_row(
        "conv layers", f"{len(report.layers)}  ({_gflops(report.conv_macs)} GFLOPs in convs)"
    )
    padding = padding_macs(model.module, (1, 3, *size))
    summary.add_row(
        "zero padding",
        f"{_gflops(padding)} GFLOPs of those multiply zero padding "
        f"({100 * padding / report.macs:.1f}%; channels-last CPU kernels skip them)",
    )
    timings = {}
    if device is not None:
        threads = threads or default_threads()
        whole = time_module(
            model.module, (1, 3, *size), device=device, threads=threads,
            channels_last=channels_last,
        )  # fmt: skip
        summary.add_row(
            f"latency ({device}, {'nhwc' if channels_last else 'nchw'}, {threads} threads)",
            f"{whole.median * 1e3:.2f} ms median of {whole.repeats} "
            f"(range {whole.low * 1e3:.2f}-{whole.high * 1e3:.2f})",
        )
        if per_layer:
            timings = conv_latencies(
                report.layers, device=device, threads=threads, channels_last=channels_last
            )
    if limit is not None:
        limit = resolve_budget(limit, teacher_macs=report.macs)  # `50%`: of the teacher counted
        actual = whole.median if limit.kind is CostKind.LATENCY else report.macs
        summary.add_row(f"budget {limit}", _budget_verdict(limit.value / actual))
    console.print(summary)

    if per_layer:
        table = Table(title="conv layers in execution order", title_justify="left")
        for column in ("#", "path", "c_in>c_out", "k/s/g/d", "in>out", "BN", "MFLOPs", "%"):
            table.add_column(column, justify="right" if column in ("#", "MFLOPs", "%") else "left")
        if timings:
            table.add_column("ms", justify="right")
        for layer in report.layers:
            row = [
                str(layer.index),
                layer.path,
                f"{layer.c_in}>{layer.c_out}",
                f"{layer.kernel[0]}x{layer.kernel[1]}/{layer.stride[0]}/{layer.groups}/{layer.dilation[0]}",
                f"{layer.in_hw[0]}x{layer.in_hw[1]}>{layer.out_hw[0]}x{layer.out_hw[1]}",
                "yes" if layer.bn_path else "",
                f"{layer.macs / 1e6:,.1f}",
                f"{100 * layer.macs / report.macs:.1f}",
            ]
            if timings:
                row.append(f"{timings[layer.path] * 1e3:.3f}")
            table.add_row(*row)
        console.print(table)


@app.command()
def train(
    spec_path: Path = SPEC,
    video: list[str] | None = typer.Option(None, "--video", help="Training video: " + VIDEOS_HELP),
    steps: int | None = typer.Option(
        None, "--steps", help="Training steps (default: from --epochs)."
    ),
    epochs: float = typer.Option(1.0, "--epochs", help="Passes over the training clips."),
    batch_size: int = typer.Option(2, "--batch-size", help="Clips per step."),
    lr: float = typer.Option(
        1e-4, "--lr", help="Peak learning rate of the student blocks (warm-up, then cosine)."
    ),
    calibrate: bool = typer.Option(
        True,
        "--calibrate/--no-calibrate",
        help="Fit the low-rank blocks to the student's own inputs, in closed form, first.",
    ),
    eval_every: int = typer.Option(
        50,
        "--eval-every",
        min=1,
        help="Steps between measures of R on held-out clips; the best-measured weights are kept.",
    ),
    finetune: bool = typer.Option(False, "--finetune", help="Also fine-tune the teacher's layers."),
    checkpoint_every: int = typer.Option(
        50, "--checkpoint-every", help="Steps between checkpoints."
    ),
    max_frames: int = typer.Option(150, "--max-frames", help="Frames read from the video."),
    seed: int = typer.Option(0, "--seed", help="Seed of every random draw."),
    device: str | None = DEVICE,
    teacher_weights: Path | None = TEACHER_WEIGHTS,
    out: Path | None = typer.Option(None, "--out", help="Folder for checkpoint.pt and student.pt."),
) -> None:
    """Retrain a student from its spec; rerunning the same command resumes from its checkpoint."""

    from nas.cost.latency import resolve_device
    from nas.data import open_videos, videos_or_default
    from nas.spec import load_spec
    from nas.student.build import build_student, teacher_for
    from nas.student.clips import clip_batches, start_stats, video_clips
    from nas.student.train import (
        CHECKPOINT,
        TrainConfig,
        calibrate_student,
        held_out_r,
        train_student,
    )

    spec = load_spec(spec_path)
    videos = videos_or_default(video, spec.teacher.output_kind)
    source = open_videos(videos, max_frames=max_frames)  # every file checked before any work
    dev = resolve_device(device)
    teacher = teacher_for(spec, weights=teacher_weights, device=str(dev))
    size = tuple(spec.teacher_input_size or spec.input_size)  # the frames: the teacher's size
    train_clips, val_clips = video_clips(
        teacher,
        videos,
        size=size,
        interval=spec.interval or PAIR_INTERVAL,
        max_frames=max_frames,
        val_fraction=0.2,
        draws=steps * batch_size if steps else None,
        source=source,
    )
    stats = start_stats(spec, teacher, train_clips, batch_size=batch_size, device=dev, seed=seed)
    student = build_student(spec, teacher, stats=stats).to(dev)
    batches = clip_batches(train_clips, teacher, batch_size=batch_size, device=dev)
    out = out or spec_path.parent / "train"
    if calibrate and spec.mode == Mode.DELTA and not (out / CHECKPOINT).is_file():
        console.print(calibrate_student(student, batches, seed=seed).summary)
    if steps is None:
        steps = max(1, round(epochs * len(train_clips.pairs) / batch_size))
    config = TrainConfig(
        steps=steps,
        lr=lr,
        checkpoint_every=checkpoint_every,
        finetune=finetune,
        seed=seed,
        tc_weight=spec.search.tc_weight if spec.mode != Mode.DELTA else 0.0,
        blockwise_fraction=spec.search.blockwise_fraction,
    )
    progress = _step_progress("train")
    val_r = "-"
    with progress:
        task = progress.add_task("train", total=steps, status="")

        def on_step(row) -> None:
            nonlocal val_r
            if row.val_r is not None:
                val_r = f"{row.val_r:.3f}"
            status = (
                f"loss {row.loss:.4f}  layer {row.layer_loss:.4f}  output {row.output_loss:.4f}"
                f"  lr {row.lr:.1e}  val R {val_r}"
            )
            progress.update(task, completed=row.step + 1, status=status)

        weights = train_student(
            student,
            teacher,
            batches,
            out=out,
            config=config,
            on_step=on_step,
            validate=held_out_r(teacher, val_clips, spec, device=dev),
            eval_every=eval_every,
        )
    console.print(f"student weights written to {weights}")


@app.command()
def infer(
    spec_path: Path = SPEC,
    video: str = typer.Option(..., "--video", help="Video to run on (see nas search)."),
    out: Path = typer.Option(..., "--out", help="A folder for PNG masks, or a .mp4 overlay video."),
    weights: Path | None = WEIGHTS,
    keyframe_interval: int | None = KEYFRAME_INTERVAL,
    adaptive: float | None = typer.Option(
        None, "--adaptive", help="New key frame when the input changed by more than this."
    ),
    max_frames: int | None = typer.Option(
        None, "--max-frames", help="Stop after this many frames."
    ),
    device: str | None = DEVICE,
    teacher_weights: Path | None = TEACHER_WEIGHTS,
    layout: str = LAYOUT,
    side_by_side: bool | None = typer.Option(
        None,
        "--side-by-side/--student-only",
        help="For a video --out: the teacher's overlay (left) beside the student's (right), each "
        "frame labelled key or delta +d (the default; runs the teacher on every frame too), or "
        "the student's alone. Mask folders hold the student's masks only.",
    ),
) -> None:
    """Run a student on a video with key frames; write its predictions as masks or a video."""
    import torch

    from nas.core.layout import in_layout, layout_for
    from nas.cost.latency import resolve_device
    from nas.data import open_video, resize_crop
    from nas.delta.runner import DeltaRunner
    from nas.student.build import load_student
    from nas.student.infer import VIDEO_SUFFIXES, overlay, step_label, to_mask, writer_for
    from nas.student.infer import side_by_side as beside

    to_video = out.suffix.lower() in VIDEO_SUFFIXES
    if side_by_side and not to_video:
        raise NasError(
            f"--side-by-side needs a video --out ({', '.join(VIDEO_SUFFIXES)}): {out} would be a "
            "folder of the student's masks"
        )
    both = to_video if side_by_side is None else side_by_side
    channels_last = layout_for(resolve_device(device), layout)
    spec, teacher, student, dev = load_student(
        spec_path, weights=weights, teacher_weights=teacher_weights, device=device
    )
    source = open_video(video, max_frames=max_frames)
    runner = DeltaRunner(
        student,
        interval=keyframe_interval or spec.keyframe_interval,
        adaptive_threshold=adaptive,
        channels_last=channels_last,
    )
    size = tuple(spec.teacher_input_size or spec.input_size)
    kind, classes = teacher.output_kind, teacher.num_classes
    if both and channels_last:
        teacher.module.to(memory_format=torch.channels_last)
    writer = writer_for(out)
    keys = frames = 0
    progress = _frame_progress("infer")
    try:
        with progress:
            task = progress.add_task("infer", total=None, keys=", 0 key")
            for starts, frame in source.frames_with_starts():
                if starts:  # each sequence (each file of a folder) starts with a key frame
                    runner.reset()
                image = resize_crop(frame, size).image
                x = teacher.input_spec.normalize(image[None].to(dev))
                step = runner.step(x)
                mask = to_mask(step.prediction, kind)
                if both:  # the teacher on this frame too, left of the student
                    with torch.inference_mode():
                        reference = to_mask(teacher(in_layout(x, channels_last)), kind)
                    writer.write_image(
                        beside(
                            overlay(image, reference, kind, classes),
                            overlay(image, mask, kind, classes),
                            ("teacher", step_label(step.is_key, step.distance, student.per_frame)),
                        )
                    )
                else:
                    writer.write(image, mask, kind, classes)
                frames += 1
                keys += step.is_key
                progress.update(task, completed=frames, keys=f", {keys} key")
    finally:
        writer.close()
    console.print(
        f"{frames} frames ({keys} key frames) written to {out}"
        + (", teacher (left) and student (right) side by side" if both else "")
    )


@app.command("eval")
def evaluate_command(
    spec_path: Path = SPEC,
    video: list[str] | None = typer.Option(
        None, "--video", help="Video to evaluate on: " + VIDEOS_HELP
    ),
    weights: Path | None = WEIGHTS,
    keyframe_interval: int | None = KEYFRAME_INTERVAL,
    max_frames: int | None = typer.Option(
        120, "--max-frames", help="Frames to evaluate, of each sequence."
    ),
    skip_frames: int = typer.Option(
        0,
        "--skip-frames",
        min=0,
        help="Leave out each sequence's first N frames (e.g. those the student was trained on).",
    ),
    device: str | None = DEVICE,
    teacher_weights: Path | None = TEACHER_WEIGHTS,
    out: Path | None = typer.Option(
        None, "--out", help="CSV file (default: eval.csv beside the spec)."
    ),
    layout: str = LAYOUT,
    baselines: bool = typer.Option(
        True,
        "--baselines/--no-baselines",
        help="Also the teacher on smaller frames and the uniform student at the student's cost "
        "(they take time; the key frame repeated is always there, at no cost).",
    ),
) -> None:
    """Teacher against student and the cheap answers at its cost on a video: GFLOPs, latency,
    agreement, R, TC, mIoU; one table and a verdict."""
    import csv
    import io

    from nas.core.io import atomic_write_text
    from nas.core.layout import layout_for
    from nas.cost.latency import resolve_device
    from nas.data import open_videos, videos_or_default
    from nas.spec import load_spec
    from nas.student.build import load_student
    from nas.student.evaluate import evaluate

    channels_last = layout_for(resolve_device(device), layout)
    # Every video file is opened before the models load: a bad one is named before any work.
    video = videos_or_default(video, load_spec(spec_path).teacher.output_kind)
    open_videos(video)
    spec, teacher, student, dev = load_student(
        spec_path, weights=weights, teacher_weights=teacher_weights, device=device
    )
    interval = keyframe_interval or spec.keyframe_interval
    progress = _frame_progress("eval")
    with progress:
        task = progress.add_task("eval", total=None, keys="")
        result = evaluate(
            spec, teacher, student, video, interval=interval, max_frames=max_frames, device=dev,
            skip_frames=skip_frames, channels_last=channels_last, baselines=baselines,
            on_frame=lambda n: progress.update(task, completed=n),
        )  # fmt: skip
    table = Table(
        title=f"{spec.teacher.name} against its {spec.mode} student, {result.frames} frames, "
        + (f"key frame every {interval}" if spec.interval else "no key frames")
        + f" on {dev}"
        + (" (channels-last)" if channels_last else "")
        + ", and the cheap answers at the same cost",
        title_justify="left",
    )
    for column in ("metric", *result.columns):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for metric, *values in result.rows:
        table.add_row(
            metric,
            *("" if v is None else str(v) if isinstance(v, int) else f"{v:.4f}" for v in values),
        )
    console.print(table)
    k = result.repeat_interval
    console.print(
        f"key frame repeated, every {k}: the teacher on frames 0, {k}, {2 * k}, ... of each "
        "sequence, its output repeated in between, at the student's amortised GFLOPs (latency: "
        f"teacher ms / {k}, derived, not measured). R: the share of the teacher's change since "
        "the key frame recovered (0: the key frame repeated, 1: the teacher); R against the key "
        "frame repeated: the share of its squared error removed, over all frames.",
        soft_wrap=True,
    )
    if result.lowres_size is not None:
        h, w = result.lowres_size
        console.print(
            f"teacher at {h}x{w}: the teacher on the frames downscaled to {h}x{w}, the largest "
            "size of their aspect ratio in its size multiple at which it costs no more than the "
            "student amortised, its output upsampled back (latency measured).",
            soft_wrap=True,
        )
    if result.uniform_fraction is not None:
        console.print(
            "uniform student: the student's delta model with every dense conv low-rank at one "
            f"rank fraction, {result.uniform_fraction:.3f}, the largest at the student's "
            "amortised GFLOPs (grouped convs full), from the data-aware start, untrained, with "
            "the student's key frames (latency measured).",
            soft_wrap=True,
        )
    for line in result.left_out:
        console.print(line, soft_wrap=True)
    if not baselines:
        console.print(
            "teacher on smaller frames and uniform student left out: --no-baselines",
            soft_wrap=True,
        )
    if result.by_distance:
        console.print(
            "agreement by distance from the key frame: "
            + ", ".join(f"{row['distance']}: {row['agreement']:.4f}" for row in result.by_distance)
        )
    console.print(f"verdict: {result.verdict}", soft_wrap=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["metric", *result.columns])
    writer.writerows(result.rows)
    others = [""] * (len(result.columns) - 2)  # the student's only
    for row in result.by_distance:
        writer.writerow([f"agreement at distance {row['distance']}", "", row["agreement"], *others])
    target = out or spec_path.parent / "eval.csv"
    atomic_write_text(target, buffer.getvalue())
    console.print(f"table written to {target}")


def _budget_verdict(fraction: float) -> str:
    if fraction >= 1:
        return f"{100 * fraction:.1f}% of the teacher: the teacher already fits"
    return f"{100 * fraction:.1f}% of the teacher: a {1 / fraction:.2f}x reduction per frame"


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning input errors into one line and exit code 2."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        app(args=args, prog_name="nas")  # usage errors of the parser itself exit 2 there
    except NasError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
