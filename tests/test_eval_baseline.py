"""`nas eval` against the cheap answers at the same cost (the key frame repeated, the teacher on
smaller frames, the uniform student), R, and `nas infer` writing teacher and student side by
side."""

import csv
import math
import re

import av
import pytest
import torch

import nas.student.baselines
import nas.student.evaluate
from evaluators import Recovered
from nas.cli import main
from nas.core.errors import NasError
from nas.cost.amortised import amortised
from nas.cost.macs import count_macs
from nas.data import load_frames, open_video
from nas.delta.runner import DeltaRunner
from nas.searching.make_spec import make_spec
from nas.searching.options import SearchOptions
from nas.searching.pipeline import prepare
from nas.spec import load_spec, save_spec
from nas.student.baselines import lowres_size, repeat_interval, uniform_candidate, uniform_spec
from nas.student.build import build_student
from nas.student.compare import Repeated
from nas.student.evaluate import evaluate, verdict
from nas.student.infer import side_by_side, step_label
from nas.teachers import load_teacher
from search_spaces import candidate_macs, max_rank
from tests.conftest import TINY_SEARCH, build_tiny
from tests.conftest import uniform_spec as every_layer_at

VIDEO = "synthetic:frames=8,size=64x96"  # moving shapes: the teacher's output changes


def build_moving():
    """The tiny teacher without its head's bias, whose decisions follow the moving shapes (the
    plain one labels every pixel of these frames class 1: any two of its outputs agree)."""
    net = build_tiny()
    with torch.no_grad():
        net.head.bias.zero_()
    return net


@pytest.fixture(scope="module")
def prepared():
    teacher = "tests.test_eval_baseline:build_moving"
    return prepare(SearchOptions(**(TINY_SEARCH | {"budget": "1TFLOPs", "teacher": teacher})))


def _spec(run, folder, candidate: str | None):
    """A spec of the tiny teacher with every layer at `candidate` (None: cheapest non-zero)."""
    return every_layer_at(run, folder / "spec.json", candidate)


def _middle_spec(run, folder):
    """A spec of the tiny teacher with every layer at its median-cost candidate: dear enough
    that the uniform student fits its cost, cheap enough that it does not at full rank."""
    picks = {}
    for layer, costs in run.macs.candidates.items():
        names = sorted(costs, key=costs.get)
        picks[layer] = names[len(names) // 2]
    spec = make_spec(
        run.teacher, run.layers, picks, run.macs, run.budget, run.size, run.options, {}
    )
    return save_spec(spec, folder / "spec.json")


def _rows(result):
    return {metric: values for metric, *values in result.rows}


def _uniform_cost(spec, layers, fraction: float) -> float:
    """The uniform student's amortised multiply-adds at `fraction`, counted afresh: the spec's
    own cost outside its searched convs, every dense conv `lowrank` at that share of its rank."""
    other = spec.totals.delta_frame_macs - sum(layer.macs for layer in spec.layers)
    convs = sum(candidate_macs(uniform_candidate(layer, fraction), layer) for layer in layers)
    return amortised(spec.totals.teacher_macs, other + convs, spec.interval)


# R, the evaluator


def test_r_is_one_for_the_teacher_and_zero_for_the_key_frame():
    generator = torch.Generator().manual_seed(0)
    key, teacher = torch.randn(2, 1, 3, 4, 5, generator=generator)
    for student, expected in ((teacher, 1.0), (key, 0.0)):
        metric = Recovered()
        metric.update(student, key, teacher)
        assert metric.compute() == expected
    assert Recovered().compute() is None  # nothing seen
    still = Recovered()
    still.update(key + 1, key, key)  # the teacher never moved: no change to recover
    assert still.compute() is None


def test_r_against_a_hand_computed_case():
    teacher = torch.tensor([[1.0, 2.0], [3.0, 4.0]])[None, None]
    key = torch.zeros(1, 1, 2, 2)  # sum |key - y|^2 = 1 + 4 + 9 + 16 = 30
    student = torch.tensor([[1.0, 1.0], [3.0, 2.0]])[None, None]  # sum |y_hat - y|^2 = 1 + 4
    metric = Recovered()
    metric.update(student, key, teacher)
    assert metric.compute() == pytest.approx(1 - 5 / 30)
    metric.update(key[0:1] + 2, key + 2, teacher)  # a second frame at its key: 1+0+1+4 = 6 each
    assert metric.compute() == pytest.approx(1 - 11 / 36)
    assert metric.frames == 2


# The key frame repeated at the same cost


def test_repeat_interval_matches_the_amortised_cost():
    assert (
        nas.student.evaluate.repeat_interval is nas.student.baselines.repeat_interval
    )  # one definition
    assert repeat_interval(100.0, 50.0) == 2  # half the teacher: the teacher every 2nd frame
    assert repeat_interval(100.0, 30.0) == 3
    assert repeat_interval(100.0, 100.0) == 1 and repeat_interval(100.0, 150.0) == 1


def test_repeated_key_restarts_at_each_sequence():
    """As `evaluate` runs it: reset at each sequence's first frame."""
    outputs = [torch.full((1,), float(i)) for i in range(7)]
    starts = [True, False, False, False, True, False, False]  # two sequences
    repeated, steps = Repeated(3), []
    for new, y in zip(starts, outputs, strict=True):
        if new:
            repeated.reset()
        steps.append((float(repeated(y, y)), repeated.distance))
    assert [y for y, _ in steps] == [0, 0, 0, 3, 4, 4, 4]
    assert [d for _, d in steps] == [0, 1, 2, 0, 0, 1, 2]


def test_verdict_names_every_cheap_answer_the_student_does_not_beat():
    a, b = "repeating the key frame every 2 frames", "the teacher at 32x48"
    win = verdict((0.9, 0.3), {a: (0.8, 0.0), b: (0.85, 0.2)})
    assert win.startswith("the student beats every cheap answer at the same cost (")
    assert f"{a} 0.8000, 0.0000; {b} 0.8500, 0.2000)" in win  # every score, by name
    lose = verdict((0.9, 0.3), {a: (0.8, 0.0), b: (0.85, 0.5)})  # worse outputs than b
    assert lose.startswith(f"the student does not beat: {b} (")
    both = verdict((0.5, -1.0), {a: (0.6, 0.0), b: (0.7, 0.1)})
    assert both.startswith(f"the student does not beat: {a}, {b} (")
    mixed = verdict((0.9, -0.1), {a: (0.8, 0.0)})  # better decisions, worse outputs: no win
    assert mixed.startswith(f"the student does not beat: {a} (")
    assert verdict((0.8, 1e-8), {a: (0.8, 0.0)}).startswith("the student does not beat")  # tie
    teacher = "running the teacher on every frame"
    assert verdict((0.9, None), {teacher: (1.0, None)}) == (
        f"the student does not beat: {teacher} (agreement with the teacher over all frames: "
        f"the student 0.9000; {teacher} 1.0000)"
    )  # the teacher's output never moved: no R to compare


def test_lowres_size_is_the_largest_that_costs_no_more():
    """Against a brute-force sweep of every height in the teacher's size multiple."""
    teacher = load_teacher("tests.conftest:build_tiny", device="cpu")
    multiple, size = teacher.input_spec.size_multiple, (64, 96)
    costs = {}
    for h in range(multiple, size[0] + 1, multiple):
        w = max(multiple, round(h * size[1] / size[0] / multiple) * multiple)
        costs[h, w] = count_macs(teacher.module, (h, w))
    full = costs[size]
    for budget in (min(costs.values()) - 1, *(full * f for f in (0.05, 0.2, 0.26, 0.5, 0.99))):
        fits = [hw for hw, macs in costs.items() if macs <= budget]
        assert lowres_size(teacher, size, budget) == (max(fits) if fits else None), budget
    assert lowres_size(teacher, size, full) == size == lowres_size(teacher, size, 2 * full)


def test_uniform_spec_is_the_largest_fraction_that_fits(prepared, tmp_path):
    spec = load_spec(_middle_spec(prepared, tmp_path))
    uniform = uniform_spec(spec, prepared.layers)
    fraction = uniform.metrics["uniform_fraction"]
    target = spec.totals.amortised_macs
    assert 0 < fraction < 1  # neither the smallest ranks nor the exact ones
    assert uniform.totals.amortised_macs == pytest.approx(
        _uniform_cost(spec, prepared.layers, fraction)
    )
    assert uniform.totals.amortised_macs <= target
    # The next fraction at which any rank grows costs more than the student.
    dense = [layer for layer in prepared.layers if layer.groups == 1]
    ranks = [max_rank("lowrank", layer) for layer in dense]
    larger = min((math.floor(fraction * r) + 1) / r for r in ranks)
    assert _uniform_cost(spec, prepared.layers, larger) > target
    names = {layer.path: layer.candidate for layer in uniform.layers}
    assert names["dw"] == "full"  # grouped: no low-rank form
    assert all(names[layer.path].startswith("lowrank_r") for layer in dense)
    # The grouped conv alone costs more than an all-`zero` student: no uniform student.
    zero = load_spec(_spec(prepared, tmp_path / "zero", "zero"))
    assert uniform_spec(zero, prepared.layers) is None


def test_an_all_zero_student_is_the_key_frame_repeated(prepared, tmp_path):
    """All `zero`: the student repeats its key frame, and the cheap answer at its cost repeats
    the teacher's key frame at the same interval; the two columns must agree."""
    spec = load_spec(_spec(prepared, tmp_path, "zero"))
    k = spec.keyframe_interval
    student = build_student(spec, prepared.teacher)
    result = evaluate(
        spec, prepared.teacher, student, VIDEO, interval=k, max_frames=8,
        device=torch.device("cpu"),
    )  # fmt: skip
    assert result.repeat_interval == k
    assert result.columns[:3] == ["teacher", "student", f"key frame repeated, every {k}"]
    rows = _rows(result)
    assert rows["layers that run between key frames"][1:3] == [0, 0]
    # No rank fits beside the grouped conv at the cost of nothing between key frames.
    assert result.columns[3:] == [f"teacher at {result.lowres_size[0]}x{result.lowres_size[1]}"]
    assert [line.partition(":")[0] for line in result.left_out] == ["uniform student left out"]
    gflops = rows["GFLOPs amortised"]
    assert gflops[1] == pytest.approx(gflops[2]) == pytest.approx(gflops[0] / k)
    between = rows["agreement with the teacher (frames between key frames)"]
    assert between[2] < 1.0  # the shapes move: repeating the key frame loses agreement
    for metric in (
        "agreement with the teacher (frames between key frames)",
        "agreement with the teacher (all frames)",
        "temporal consistency TC",
        "mIoU against labels",
    ):
        assert rows[metric][1] == rows[metric][2], metric
    r = "R, share of the teacher's change recovered (frames between key frames)"
    assert rows[r][0] == 1.0 and rows[r][2] == 0.0  # 0 by construction
    assert rows[r][1] == pytest.approx(0.0, abs=1e-6)  # the key frame: to float precision
    against = rows["R against the key frame repeated (all frames)"]
    assert against[2] == 0.0 and against[1] == pytest.approx(0.0, abs=1e-6)
    # It ties with the key frame repeated: the verdict names it.
    assert result.verdict.startswith("the student does not beat: repeating the key frame every")
    _check_verdict(result)
    # Two sequences of 5 frames: both restart at the second one's first frame, and still agree.
    two = evaluate(
        spec, prepared.teacher, student, ["synthetic:frames=5,size=64x96"] * 2, interval=k,
        max_frames=5, device=torch.device("cpu"),
    )  # fmt: skip
    assert two.frames == 10 and two.key_frames == 2 * len(range(0, 5, k))
    rows = _rows(two)
    for metric in ("agreement with the teacher (all frames)", "temporal consistency TC"):
        assert rows[metric][1] == rows[metric][2], metric
    assert rows["R against the key frame repeated (all frames)"][1] == pytest.approx(0, abs=1e-6)


def _check_verdict(result):
    """The verdict names exactly the cheap answers whose agreement over all frames or R against
    the key frame repeated the student does not beat on one without losing on the other."""
    agreement, against = (
        result.row(nas.student.evaluate.AGREEMENT_ALL),
        result.row(nas.student.evaluate.R_AGAINST),
    )
    lost = result.verdict.partition(" (")[0]
    for name in result.columns[2:]:
        better = agreement["student"] > agreement[name] or against["student"] > against[name] + 1e-6
        worse = agreement["student"] < agreement[name] or against["student"] < against[name] - 1e-6
        said = (
            f"repeating the key frame every {result.repeat_interval} frames"
            if name.startswith("key frame repeated")
            else f"the {name}"
        )
        assert (said in lost) == (worse or not better), (name, result.verdict)
        assert said in result.verdict  # every answer's scores, beaten or not


def test_every_cheap_answer_at_the_students_cost(prepared, tmp_path):
    """The teacher at HxW and the uniform student: at the student's amortised cost, with the
    -k the evaluation runs at, and the verdict naming those the student does not beat."""
    spec = load_spec(_middle_spec(prepared, tmp_path))
    teacher = prepared.teacher
    for k in (spec.keyframe_interval, spec.keyframe_interval + 2):
        result = evaluate(
            spec, teacher, build_student(spec, teacher), VIDEO, interval=k, max_frames=8,
            device=torch.device("cpu"),
        )  # fmt: skip
        cost = amortised(spec.totals.teacher_macs, spec.totals.delta_frame_macs, k)
        small = lowres_size(teacher, (64, 96), cost)
        lowres = f"teacher at {small[0]}x{small[1]}"
        assert result.columns[3:] == [lowres, "uniform student"] and not result.left_out
        assert result.lowres_size == small
        gflops = result.row("GFLOPs amortised")
        assert gflops["student"] == pytest.approx(cost / 1e9)
        assert gflops[lowres] == pytest.approx(count_macs(teacher.module, small) / 1e9)
        assert gflops[lowres] <= gflops["student"] and gflops["uniform student"] <= cost / 1e9
        at_k = spec.model_copy(
            update={
                "keyframe_interval": k,
                "totals": spec.totals.model_copy(update={"amortised_macs": cost}),
            }
        )
        uniform = uniform_spec(at_k, prepared.layers)
        assert result.uniform_fraction == uniform.metrics["uniform_fraction"]
        assert gflops["uniform student"] == pytest.approx(uniform.totals.amortised_macs / 1e9)
        for metric, *values in result.rows:  # every row filled where it applies
            assert len(values) == 5 and values[4] is not None, metric
            assert values[3] is not None or metric == nas.student.evaluate.R, metric
        assert result.row(nas.student.evaluate.R)[lowres] is None  # no key frames of its own
        latency = result.row("latency ms amortised")
        assert latency[lowres] > 0 and latency["uniform student"] > 0
        _check_verdict(result)


def test_eval_refuses_to_evaluate_no_frames(prepared, tmp_path):
    spec = load_spec(_spec(prepared, tmp_path, None))
    with pytest.raises(NasError, match=r"no frame to evaluate in .*--skip-frames 8"):
        evaluate(
            spec, prepared.teacher, build_student(spec, prepared.teacher), VIDEO,
            interval=spec.keyframe_interval, max_frames=None, skip_frames=8,
            device=torch.device("cpu"), baselines=False,
        )  # fmt: skip


def test_r_of_a_student_against_the_teacher(prepared, tmp_path):
    """The student's R in the table is the formula on the runner's and the teacher's outputs."""
    spec = load_spec(_spec(prepared, tmp_path, None))
    k = spec.keyframe_interval
    teacher = prepared.teacher
    result = evaluate(
        spec, teacher, build_student(spec, teacher), VIDEO, interval=k, max_frames=8,
        device=torch.device("cpu"),
    )  # fmt: skip
    frames = load_frames(open_video(VIDEO), size=(64, 96)).frames
    inputs = [teacher.input_spec.normalize(f[None]) for f in frames]
    steps = list(DeltaRunner(build_student(spec, teacher), interval=k).run(inputs))
    with torch.no_grad():
        truth = [teacher(x) for x in inputs]
    own = repeated = 0.0
    key = None
    for step, y in zip(steps, truth, strict=True):
        if step.is_key:
            key = y
            continue
        own += float(((step.prediction.double() - y.double()) ** 2).sum())
        repeated += float(((key.double() - y.double()) ** 2).sum())
    rows = _rows(result)
    r = rows["R, share of the teacher's change recovered (frames between key frames)"][1]
    assert r == pytest.approx(1 - own / repeated, abs=1e-4)
    assert 0 < r < 1  # some of the change, not all of it
    all_frames = rows["agreement with the teacher (all frames)"]
    assert all_frames[0] == 1.0 and 0 < all_frames[1] <= 1 and 0 < all_frames[2] <= 1


def test_eval_prints_every_cheap_answer_and_a_verdict(run_nas, prepared, tmp_path):
    spec = _middle_spec(prepared, tmp_path)
    result = run_nas("eval", "--spec", str(spec), "--video", VIDEO, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "key frame repeated, every" in text and "at the same cost" in text
    assert "uniform student: the student's delta model" in text
    verdicts = [line for line in result.stdout.splitlines() if line.startswith("verdict: ")]
    assert len(verdicts) == 1, result.stdout
    said = r"verdict: the student (beats every cheap answer at the same cost|does not beat: .+) \("
    assert re.match(said, verdicts[0]), verdicts[0]
    rows = list(csv.reader((tmp_path / "eval.csv").open()))
    assert rows[0][0] == "metric" and rows[0][1:3] == ["teacher", "student"]
    assert rows[0][3].startswith("key frame repeated, every ")
    assert re.fullmatch(r"teacher at \d+x\d+", rows[0][4]) and rows[0][5] == "uniform student"
    assert rows[0][4] in text
    assert all(len(row) == 6 for row in rows)
    named = {row[0]: row for row in rows}
    assert float(named["R against the key frame repeated (all frames)"][3]) == 0.0


def test_eval_without_baselines_and_with_one_left_out(prepared, tmp_path, capsys):
    """The cheapest spec leaves the uniform student no rank to fit: a note, not a column. (In
    process, for speed: `main` is what the `nas` command runs.)"""
    spec = _spec(prepared, tmp_path, None)
    common = ["eval", "--spec", str(spec), "--video", VIDEO, "--device", "cpu"]

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as info:
            main([*common, *args])
        out, err = capsys.readouterr()
        return info.value.code, " ".join(out.split()), err

    code, text, err = run()
    assert code == 0, err
    assert "uniform student left out: no rank fraction fits the student's amortised" in text
    header = next(csv.reader((tmp_path / "eval.csv").open()))
    assert len(header) == 5 and header[4].startswith("teacher at ")
    code, text, err = run("--no-baselines")
    assert code == 0, err
    assert "teacher on smaller frames and uniform student left out: --no-baselines" in text
    header = next(csv.reader((tmp_path / "eval.csv").open()))
    assert header[1:3] == ["teacher", "student"] and len(header) == 4
    code, _, err = run("--no-baselines", "--skip-frames", "50")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: no frame to evaluate")


# nas infer, side by side


def test_labels_and_side_by_side():
    assert step_label(True, 0) == "student \u00b7 key"
    assert step_label(False, 2) == "student \u00b7 delta +2"
    assert step_label(False, 0, per_frame=True) == "student"
    image = torch.full((40, 60, 3), 128, dtype=torch.uint8).numpy()
    both = side_by_side(image, image, ("teacher", "student \u00b7 key"))
    assert both.shape == (40, 120, 3)
    assert (both[:, :60] != 128).any() and (both[:, 60:] != 128).any()  # both labelled
    assert (both[-5:] == 128).all()  # the labels stay in the top corner


def test_infer_writes_teacher_and_student_side_by_side(run_nas, prepared, tmp_path):
    spec = _spec(prepared, tmp_path, None)
    video = ["--video", "synthetic:frames=6,size=64x96", "--device", "cpu"]
    result = run_nas("infer", "--spec", str(spec), *video, "--out", str(tmp_path / "o.mp4"))
    assert result.returncode == 0, result.stderr
    assert "side by side" in " ".join(result.stdout.split())
    with av.open(str(tmp_path / "o.mp4")) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(decoded) == 6 and all(frame.shape == (64, 192, 3) for frame in decoded)
    result = run_nas("infer", "--spec", str(spec), *video, "--out", str(tmp_path / "masks"))
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "masks").glob("*.png"))) == 6
    result = run_nas(
        "infer", "--spec", str(spec), *video, "--out", str(tmp_path / "m2"), "--side-by-side"
    )
    assert result.returncode == 2 and "--side-by-side needs a video --out" in result.stderr
