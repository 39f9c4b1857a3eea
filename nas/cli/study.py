"""The study commands of the `nas` command line: search, export, report, dashboard."""

from __future__ import annotations

import math
import signal
import sys
import threading
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.table import Table

from nas.cli.app import DEVICE, LAYOUT, TEACHER, TEACHER_WEIGHTS, VIDEOS_HELP, app, console
from nas.core.errors import NasError
from nas.spec import Mode, SearchConfig

# The search's hyperparameters' defaults, declared once (`nas.spec.SearchConfig`).
DEFAULT = {name: field.default for name, field in SearchConfig.model_fields.items()}

RUN = typer.Argument(..., help="Run folder of a study (written by nas search).")


def _choice_or_auto(text: str, name: str, parse) -> object | None:
    """`auto` -> None, otherwise `parse(text)`; a one-line error for anything else."""
    if text.strip().lower() == "auto":
        return None
    try:
        return parse(text)
    except ValueError:
        raise NasError(f"invalid {name} '{text}': expected a number or auto") from None


@contextmanager
def _remember_interrupts(seen: list[int]):
    """Ctrl-C raises KeyboardInterrupt as usual and is also noted in `seen`: Python prints and
    drops one that lands in a finalizer (`__del__`, a weakref callback), and the study must still
    stop, at its next step or trial."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupted(signum, frame):
        seen.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


GPU_DEFAULT_MINUTES = 10  # a default study on a GPU starts trials for this long,
GPU_DEFAULT_TRIALS = 8  # at most this many


def _default_study(trials: int | None, timeout: float | None, device: str | None):
    """(more, timeout) of a study whose size the user left to the machine: one more trial on a
    CPU, where a trial takes minutes; on a GPU up to `GPU_DEFAULT_TRIALS` more, started within
    `GPU_DEFAULT_MINUTES` unless --timeout says otherwise."""
    if trials is not None:
        return 1, timeout
    from nas.cost.latency import resolve_device

    if resolve_device(device).type != "cuda":
        return 1, timeout
    return GPU_DEFAULT_TRIALS, timeout or GPU_DEFAULT_MINUTES * 60.0


def _study_progress(trials: int | None, steps: int):
    """Trials done, running and the best so far, over the running trial's step bar."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("[bold]{task.description:>8}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}  {task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
    )
    trials_task = progress.add_task("trials", total=trials, status="starting")
    step_task = progress.add_task("steps", total=steps, status="")
    return progress, trials_task, step_task


@app.command()
def search(
    teacher: str = TEACHER,
    budget: str = typer.Option(
        ...,
        "--budget",
        "-b",
        help="Amortised cost per frame: 5GFLOPs, 40ms, or relative to the teacher: 50%, 2x.",
    ),
    max_latency: str = typer.Option(
        None,
        "--max-latency",
        help="Beside a FLOPs budget, a measured amortised time per frame not to exceed "
        "(e.g. 90ms, or 2x: twice as fast as the teacher here; delta mode).",
    ),
    video: list[str] | None = typer.Option(None, "--video", help=VIDEOS_HELP),
    mode: str = typer.Option(
        "delta",
        "--mode",
        help="delta (key frames + change students), perframe (a student on every frame, "
        "temporal consistency) or resolution (a student on downscaled frames).",
    ),
    tc_weight: float | None = typer.Option(
        None, "--tc-weight", help="Temporal-consistency loss weight (per-frame modes)."
    ),
    trials: int | None = typer.Option(
        None,
        "--trials",
        "-n",
        help="Complete trials the study should hold (default: sized to the machine: one more "
        f"on a CPU; on a GPU up to {GPU_DEFAULT_TRIALS} more, started within "
        f"{GPU_DEFAULT_MINUTES} minutes).",
    ),
    sampler: str = typer.Option("nsga2", "--sampler", help="nsga2, tpe or random."),
    timeout: float | None = typer.Option(
        None, "--timeout", help="Stop starting new trials after this many seconds."
    ),
    storage: str | None = typer.Option(
        None,
        "--storage",
        help="Study database shared by workers (postgresql://...); default: SQLite in --out.",
    ),
    study: str | None = typer.Option(None, "--study", help="Study name (needed with --storage)."),
    keyframe_interval: str = typer.Option(
        "auto",
        "--keyframe-interval",
        "-k",
        help="Frames per key frame (K >= 2), or auto: every interval the budget allows is "
        "measured first and the study's first trial runs the best (delta mode).",
    ),
    input_scale: str = typer.Option(
        "1",
        "--input-scale",
        help="Scale of the student's input (0 < s <= 1; 1, 0.75, 0.5, 0.375 for auto), or auto.",
    ),
    input_size: str | None = typer.Option(
        None, "--input-size", help="HxW (default: the teacher's)."
    ),
    search_space: str = typer.Option(
        "default",
        "--search-space",
        help="Preset name (default, paper) or a YAML file; several, comma-separated, to tune.",
    ),
    steps: int = typer.Option(DEFAULT["steps"], "--steps", help="Search steps per trial."),
    train_steps: int = typer.Option(
        20, "--train-steps", help="Brief retraining steps per trial before evaluation."
    ),
    batch_size: int = typer.Option(DEFAULT["batch_size"], "--batch-size", help="Clips per step."),
    max_frames: int = typer.Option(150, "--max-frames", help="Frames read from the video."),
    penalty: str = typer.Option(
        DEFAULT["penalty"],
        "--penalty",
        help="constraint (Lagrange multiplier) or fixed (the paper's).",
    ),
    beta: float = typer.Option(
        DEFAULT["beta"], "--beta", help="Weight of the fixed penalty, per budget's worth of cost."
    ),
    seed: int = typer.Option(
        DEFAULT["seed"], "--seed", help="Seed of the sampler and of every random draw."
    ),
    device: str | None = DEVICE,
    layout: str = LAYOUT,
    teacher_weights: Path | None = TEACHER_WEIGHTS,
    num_classes: int | None = typer.Option(
        None,
        "--num-classes",
        help="Classes of a torchvision teacher's head (DeepLabV3 family, classifiers).",
    ),
    heartbeat: int = typer.Option(
        30, "--heartbeat", hidden=True, help="Seconds between a worker's heartbeats."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Run folder (default: results/search-TIMESTAMP)."
    ),
) -> None:
    """Search students for every conv against a budget: an Optuna study over the inner search's
    hyperparameters, with a Pareto front of agreement against cost, a dashboard and the best
    spec. Rerun the same command to continue a study; run it on several machines with one
    --storage and --study to share it."""
    import time

    from pydantic import ValidationError

    from nas.core.layout import check_layout
    from nas.cost.budget import CostKind, parse_budget
    from nas.searching.options import SearchOptions
    from nas.spec import MODES
    from nas.study.hpo import SAMPLERS, StudyOptions, run_study

    parse_budget(budget)  # checked before any work (a relative one is resolved per run)
    if max_latency is not None:
        parse_budget(max_latency, relative_kind=CostKind.LATENCY)
    if mode not in MODES:
        raise NasError(f"invalid --mode '{mode}': expected one of {', '.join(MODES)}")
    SAMPLERS.canonical(sampler)
    check_layout(layout)
    if storage is not None and study is None:
        raise NasError("--storage needs --study NAME: every worker must name the same study")
    if video:  # every file named is opened now; the teacher's default clips ship in a package
        from nas.data import open_videos

        open_videos(video)
    interval = _choice_or_auto(keyframe_interval, "--keyframe-interval", int)
    scale = _choice_or_auto(input_scale, "--input-scale", float)
    spaces = [name.strip() for name in search_space.split(",") if name.strip()]
    more, timeout = _default_study(trials, timeout, device)
    run = out or Path("results") / f"search-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        options = StudyOptions(
            search=SearchOptions(
                teacher=teacher,
                teacher_weights=str(teacher_weights) if teacher_weights else None,
                num_classes=num_classes,
                budget=budget,
                max_latency=max_latency,
                video=video or None,  # None: the teacher's default clips
                max_frames=max_frames,
                keyframe_interval=interval or 3,
                mode=mode,
                **({"tc_weight": tc_weight} if tc_weight is not None else {}),
                input_size=input_size,
                search_space=spaces[0] if spaces else "default",
                steps=steps,
                batch_size=batch_size,
                penalty=penalty,
                beta=beta,
                seed=seed,
                device=device,
                layout=layout,
                out=str(run),
            ),
            trials=trials,
            more=more,
            timeout=timeout,
            sampler=SAMPLERS.canonical(sampler),
            storage=storage,
            study=study,
            search_spaces=spaces,
            keyframe_interval_auto=interval is None and mode == Mode.DELTA,
            input_scale=scale,
            train_steps=train_steps,
            heartbeat=heartbeat,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        name = "--" + str(error["loc"][-1]).replace("_", "-")
        raise NasError(f"invalid {name}: {error['msg']}") from exc

    progress, trials_task, step_task = _study_progress(trials or more, steps)
    completed_here: set[int] = set()
    planned = (
        f"a study of {trials} complete trials"
        if trials is not None
        else f"{more} more complete trial{'s' if more > 1 else ''}"
        + (f", started within {timeout / 60:g} minutes" if timeout else "")
    )
    said_plan: list[bool] = []
    best: dict[str, float] = {}

    interrupts: list[int] = []

    def on_trial_start(number: int, params: dict) -> None:
        if interrupts:
            raise KeyboardInterrupt
        if not said_plan:  # once the inputs are checked: a refused one prints its error alone
            said_plan.append(True)
            progress.console.print(
                f"running {planned} (rerun the same command to add more; --trials N asks for a "
                "study of N complete trials, --timeout S stops starting trials after S seconds)"
            )
        progress.reset(step_task, total=steps, status=f"trial {number}: preparing")

    def on_step(row) -> None:
        if interrupts:
            raise KeyboardInterrupt
        cost = f"cost/budget {row.expected_cost / row.budget:.3f}" if row.budget else ""
        status = f"loss {row.loss:.4f}  {cost}  tau {row.tau:.2f}  lambda {row.multiplier:.2f}"
        progress.update(step_task, completed=row.step + 1, status=status)

    def on_trial_end(study_, trial) -> None:
        from optuna.trial import TrialState

        states = Counter(t.state for t in study_.get_trials(deepcopy=False))
        front = study_.best_trials
        if front:
            best["agreement"] = max(t.values[0] for t in front)
            best["gflops"] = min(t.values[1] for t in front)
        status = f"running {states[TrialState.RUNNING]}"
        if best:
            status += (
                f"  best agreement {best['agreement']:.4f}  "
                f"lowest GFLOPs {best['gflops']:.3f} (feasible)"
            )
        if states[TrialState.PRUNED] or states[TrialState.FAIL]:
            status += f"  pruned {states[TrialState.PRUNED]}  failed {states[TrialState.FAIL]}"
        if trial.state is TrialState.COMPLETE:
            completed_here.add(trial.number)
        # A study of --trials N counts all it holds; a default one the trials this run added.
        done = states[TrialState.COMPLETE] if trials is not None else len(completed_here)
        progress.update(trials_task, completed=done, status=status)

    try:
        with progress, _remember_interrupts(interrupts):
            found = run_study(
                options,
                on_trial_start=on_trial_start,
                on_step=on_step,
                on_trial_end=on_trial_end,
                on_screen=lambda screen: progress.console.print(screen.summary()),
            )
            if interrupts:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        print(
            f"interrupted: the study in {options.run} keeps its finished trials; rerun the same "
            "command to continue it",
            file=sys.stderr,
        )
        raise typer.Exit(130) from None
    _finish(options.run, found)


def _finish(run: Path, study) -> None:
    """After a search: the report, the dashboard and the best spec as RUN/spec.json."""
    from nas.dashboard import write_dashboard
    from nas.study.hpo import export_trial
    from nas.study.results import write_results

    table = write_results(study, run)
    _print_trials(table, everything=False)
    trial, path = export_trial(study, None, run / "spec.json")
    _print_spec_summary(path, trial.number)
    console.print(f"dashboard: {write_dashboard(run)}")


def _print_trials(table, *, everything: bool) -> None:
    from nas.study.runs import PARAM_PREFIX

    rows = table if everything else table[table["pareto"]]
    rows = rows.sort_values("gflops") if not everything else rows
    title = "all trials" if everything else "Pareto-optimal trials (feasible)"
    out = Table(title=f"{title}: {len(rows)} of {len(table)}", title_justify="left")
    params = [c for c in table.columns if c.startswith(PARAM_PREFIX)]
    columns = ["trial", "state", "agreement", "r", "repeat_r", "lowres_r", "uniform_r"]
    columns += ["beats_baselines", "gflops", "latency_ms", "speedup", "feasible"]
    for optional in ("r", "repeat_r", "lowres_r", "uniform_r", "latency_ms", "speedup"):
        if optional not in table or table[optional].isna().all():
            columns.remove(optional)
    if "beats_baselines" not in table or not (table["beats_baselines"] != "").any():
        columns.remove("beats_baselines")
    for column in columns + [c[len(PARAM_PREFIX) :] for c in params]:
        out.add_column(column, justify="left" if column in ("state", "search_space") else "right")
    for _, row in rows.iterrows():
        cells = [_cell(row[c]) for c in columns + params]
        out.add_row(*cells)
    console.print(out)


def _cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _print_spec_summary(path: Path, trial: int) -> None:
    from nas.delta.liveness import NO_CHANGE
    from nas.spec import load_spec

    spec = load_spec(path)
    totals = spec.totals
    kinds = Counter(layer.candidate.split("_r")[0] for layer in spec.layers)
    size = f"{spec.input_size[0]}x{spec.input_size[1]}"
    console.print(
        f"best trial {trial}: delta model for {spec.teacher.name} at {size}, key frame every "
        f"{spec.keyframe_interval}: {totals.amortised_macs / 1e9:.3f} GFLOPs amortised "
        f"({totals.teacher_macs / totals.amortised_macs:.2f}x fewer multiply-adds than the "
        f"teacher at this size), {totals.student_params:,} params"
    )
    console.print(_budget_line(spec))
    console.print(
        "layers per candidate kind: " + ", ".join(f"{k} {n}" for k, n in kinds.most_common())
    )
    if "val_r" in spec.metrics:
        console.print(
            f"on its validation clips: agreement {spec.metrics['val_agreement']:.4f}, R "
            f"{spec.metrics['val_r']:.4f} (the share of the teacher's change since the key frame "
            "it recovers: 0 is repeating the key frame, 1 the teacher)"
        )
    if "heldout_r" in spec.metrics:
        _print_baselines(spec.metrics)
    _print_speedup(spec)
    if spec.mode == Mode.DELTA and set(kinds) == {NO_CHANGE}:
        console.print(
            "warning: every layer is `zero`: between key frames the student repeats the key "
            "frame's output; raise the budget or lower the key-frame interval for one that "
            "predicts the change"
        )
    console.print(f"spec written to {path}")


def _print_baselines(metrics: dict) -> None:
    """The untrained student beside every cheap answer at its cost, and the verdict in words."""
    from nas.student.compare import BASELINES, CHEAP_NAMES, verdict

    def scores(key: str) -> str:
        r, agreement = metrics.get(f"{key}_r"), metrics.get(f"{key}_agreement")
        return f"R {_cell(r) if r is not None else '-'}, agreement {_cell(agreement)}"

    said = {k[len("baseline_") :]: v for k, v in metrics.items() if k.startswith("baseline_")}
    zero = (
        CHEAP_NAMES["lowres"].format(**said)
        if said.get("r_reference") == 1.0
        else "repeating the key frame"
    )
    console.print(
        f"on held-out frames, the trial's student: {scores('heldout')} "
        f"(R: 0 is {zero}, 1 the teacher)"
    )
    for key in BASELINES:
        if f"{key}_agreement" in said:
            name = CHEAP_NAMES[key].format(**said)
            console.print(f"  at the same cost, {name}: {scores('baseline_' + key)}")
    console.print(verdict(metrics))


def _budget_line(spec) -> str:
    """The spec's budget (and latency limit) as given and in absolute units, amortised per
    frame: `budget 50% = 9.878GFLOPs, max latency 2x = 12.5ms`."""
    from nas.cost.budget import CostKind, recorded_budget

    ref = spec.budget
    line = f"budget {recorded_budget(ref.text, ref.value, CostKind(ref.kind))}"
    if spec.search.max_latency_s is not None:  # specs before it record the text only
        limit = recorded_budget(
            spec.search.max_latency, spec.search.max_latency_s, CostKind.LATENCY
        )
        line += f", max latency {limit}"
    return line + " (amortised per frame)"


@app.command()
def export(
    run: Path = RUN,
    trial: int | None = typer.Option(None, "--trial", help="Trial number to export."),
    best: bool = typer.Option(
        False, "--best", help="The feasible Pareto trial with the highest agreement (default)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Spec file (default: RUN/spec.json)."),
) -> None:
    """Write one trial's spec from a study: --trial N, or --best."""
    from nas.study.hpo import export_trial
    from nas.study.results import open_run_study

    if trial is not None and best:
        raise NasError("--trial and --best exclude each other: give one")
    _, study = open_run_study(run)
    chosen, path = export_trial(study, trial, out or run / "spec.json")
    _print_spec_summary(path, chosen.number)


@app.command()
def report(
    run: Path = RUN,
    everything: bool = typer.Option(False, "--all", help="Every trial, not only the front."),
) -> None:
    """The Pareto-optimal trials of a study as a table (--all: every trial)."""
    from nas.study.results import open_run_study, write_results

    _, study = open_run_study(run)
    _print_trials(write_results(study, run), everything=everything)


@app.command()
def dashboard(run: Path = RUN) -> None:
    """Write the study's dashboard: one self-contained HTML file in the run folder."""
    from nas.dashboard import write_dashboard
    from nas.study.results import open_run_study, write_results

    _, study = open_run_study(run)
    write_results(study, run)
    console.print(f"dashboard: {write_dashboard(run)}")


def _other_form(spec) -> str:
    """What the form not chosen measured, or why it was not timed."""
    metrics = spec.metrics
    if spec.delta_form == "linear":
        return f"; the recurrence {metrics['speedup_recurrence']:.2f}x"
    if "speedup_linear" in metrics:
        return f"; the linear form {metrics['speedup_linear']:.2f}x"
    if metrics.get("linear_form_fits") == 0.0:
        return "; the linear form's key frames would go over the budget"
    return ""


def _print_speedup(spec) -> None:
    """The spec's measured speed-up over the teacher (delta mode), and a warning where most of
    its saving in multiply-adds is not saved in time on the search's device."""
    from nas.student.speed import SPEED_TARGET

    metrics = spec.metrics
    if "speedup" not in metrics:
        return
    ratio = spec.totals.teacher_macs / spec.totals.amortised_macs
    console.print(
        "measured end to end on the search's device: "
        f"{metrics['amortised_ms']:.4g} ms per frame amortised against the teacher's "
        f"{metrics['teacher_ms']:.4g} ms, {metrics['speedup']:.2f}x faster: "
        f"{metrics['speedup_share']:.0%} of the {ratio:.2f}x fewer multiply-adds "
        f"(delta frames in the {spec.delta_form} form{_other_form(spec)})"
    )
    if metrics["speedup_share"] < SPEED_TARGET:
        console.print(
            f"warning: on this device the spec turns under {SPEED_TARGET:.0%} of its saving in "
            "multiply-adds into time; to search for time as well, add --max-latency (e.g. "
            f"{metrics['teacher_ms'] / (SPEED_TARGET * ratio):.3g}ms for "
            f"{SPEED_TARGET:.0%} of it)"
        )
