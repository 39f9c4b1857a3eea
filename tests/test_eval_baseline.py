"""`nas eval` against the cheap answer at the same cost (the key frame repeated), R, and
`nas infer` writing teacher and student side by side."""

import csv
import re

import av
import pytest
import torch

from evaluators import Recovered
from nas.data import load_frames, open_video
from nas.evaluate import RepeatedKey, evaluate, repeat_interval, verdict
from nas.infer import side_by_side, step_label
from nas.pipeline import SearchOptions, prepare
from nas.runner import DeltaRunner
from nas.spec import load_spec
from nas.student import build_student
from tests.conftest import TINY_SEARCH, build_tiny, uniform_spec

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
    return uniform_spec(run, folder / "spec.json", candidate)


def _rows(result):
    return {metric: values for metric, *values in result.rows}


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
    assert repeat_interval(100.0, 50.0) == 2  # half the teacher: the teacher every 2nd frame
    assert repeat_interval(100.0, 30.0) == 3
    assert repeat_interval(100.0, 100.0) == 1 and repeat_interval(100.0, 150.0) == 1


def test_repeated_key_restarts_at_each_sequence():
    outputs = [torch.full((1,), float(i)) for i in range(7)]
    starts = [True, False, False, False, True, False, False]  # two sequences
    repeated = RepeatedKey(3)
    steps = [repeated.step(new, y) for new, y in zip(starts, outputs, strict=True)]
    assert [float(y) for y, _ in steps] == [0, 0, 0, 3, 4, 4, 4]
    assert [d for _, d in steps] == [0, 1, 2, 0, 0, 1, 2]


def test_verdict_says_who_wins():
    win = verdict(2, (0.9, 0.8), 0.3)
    assert win.startswith("the student beats repeating the key frame every 2 frames at the same")
    lose = verdict(2, (0.9, 0.8), -0.1)  # better decisions, worse outputs: not a win
    assert lose.startswith("the student does not beat repeating the key frame every 2 frames")
    assert verdict(3, (0.8, 0.8), 0.0).startswith("the student does not beat")  # a tie
    assert "running the teacher on every frame" in verdict(1, (0.9, 1.0), None)


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
    assert result.columns[2] == f"key frame repeated, every {k}"
    rows = _rows(result)
    assert rows["layers that run between key frames"][1:] == [0, 0]
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
    assert "does not beat repeating the key frame every" in result.verdict
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


def test_eval_prints_the_third_column_and_a_verdict(run_nas, prepared, tmp_path):
    spec = _spec(prepared, tmp_path, None)
    result = run_nas("eval", "--spec", str(spec), "--video", VIDEO, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "key frame repeated, every" in text and "at the same cost" in text
    verdicts = [line for line in result.stdout.splitlines() if line.startswith("verdict: ")]
    assert len(verdicts) == 1, result.stdout
    said = r"verdict: the student (beats|does not beat) repeating the key frame every \d+ frames"
    assert re.match(said + " at the same cost", verdicts[0]), verdicts[0]
    rows = list(csv.reader((tmp_path / "eval.csv").open()))
    assert rows[0][0] == "metric" and rows[0][1:3] == ["teacher", "student"]
    assert rows[0][3].startswith("key frame repeated, every ")
    assert all(len(row) == 4 for row in rows)
    named = {row[0]: row for row in rows}
    assert float(named["R against the key frame repeated (all frames)"][3]) == 0.0


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
