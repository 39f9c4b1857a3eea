"""From spec to a working model: build, run on a stream, retrain with resume, write outputs."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import nas.student.build
from nas.cli import main
from nas.core.errors import NasError
from nas.data import load_frames, open_video
from nas.delta.runner import DeltaRunner
from nas.searching.options import SearchOptions
from nas.searching.pipeline import prepare
from nas.spec import load_spec, save_spec
from nas.student.build import build_student, load_student_weights, teacher_for
from nas.student.evaluate import evaluate
from tests.conftest import REPO, TINY_SEARCH, uniform_spec


def _spec_with(tmp_path, candidate: str | None, **options):
    """A spec for the tiny teacher with every layer at `candidate` (None: cheapest non-zero)."""
    run = prepare(SearchOptions(**(TINY_SEARCH | {"budget": "1TFLOPs"} | options)))
    return uniform_spec(run, tmp_path / "spec.json", candidate), run


def _frames(n=12):
    stack = load_frames(open_video("synthetic:frames=24,size=64x96", max_frames=n), size=(64, 96))
    return stack.frames


def test_all_full_spec_reproduces_teacher_on_every_frame(tmp_path):
    path, run = _spec_with(tmp_path, "full")
    spec = load_spec(path)
    student = build_student(spec, run.teacher)
    runner = DeltaRunner(student, interval=4)
    frames = _frames()
    keys = 0
    for frame, step in zip(
        frames, runner.run(run.teacher.input_spec.normalize(f[None]) for f in frames), strict=True
    ):
        with torch.no_grad():
            expected = run.teacher(run.teacher.input_spec.normalize(frame[None]))
        assert torch.allclose(step.prediction, expected, atol=1e-4)
        keys += step.is_key
    assert keys == 3  # frames 0, 4, 8 of 12


def test_channels_last_runner_matches_the_nchw_runner(tmp_path):
    """The same student run channels-last (as `auto` does on the CPU) gives the NCHW runner's
    predictions, an all-`full` one the teacher's, and keeps its outputs' shape."""
    frames = [f[None] for f in _frames(8)]
    for candidate in ("full", None):
        path, run = _spec_with(tmp_path / str(candidate), candidate)
        spec = load_spec(path)
        inputs = [run.teacher.input_spec.normalize(f) for f in frames]
        plain = list(DeltaRunner(build_student(spec, run.teacher), interval=3).run(inputs))
        student = build_student(spec, run.teacher)
        fast = list(DeltaRunner(student, interval=3, channels_last=True).run(inputs))
        first = next(m for m in student.modules() if isinstance(m, torch.nn.Conv2d)).weight
        assert first.is_contiguous(memory_format=torch.channels_last) and not first.is_contiguous()
        for a, b, x in zip(plain, fast, inputs, strict=True):
            assert (a.is_key, a.distance) == (b.is_key, b.distance)
            torch.testing.assert_close(b.prediction, a.prediction, atol=1e-4, rtol=1e-4)
            if candidate == "full":
                with torch.no_grad():
                    expected = run.teacher(x)
                torch.testing.assert_close(b.prediction, expected, atol=1e-4, rtol=1e-4)


def test_layouts_are_chosen_by_device_and_checked():
    from nas.core.layout import layout_for

    assert layout_for(torch.device("cpu")) is True
    assert layout_for(torch.device("cuda")) is False
    assert layout_for(torch.device("cpu"), "nchw") is False
    assert layout_for(torch.device("cuda"), "nhwc") is True
    with pytest.raises(NasError, match="unknown layout 'NHWCX': expected one of auto, nchw, nhwc"):
        layout_for(torch.device("cpu"), "NHWCX")


def test_spec_round_trips_and_rebuilds_the_same_student(tmp_path):
    path, run = _spec_with(tmp_path, None)
    spec = load_spec(path)
    assert load_spec(save_spec(spec, tmp_path / "again.json")) == spec
    a, b = build_student(spec, run.teacher), build_student(spec, run.teacher)
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    kinds = {layer.candidate.split("_")[0] for layer in spec.layers}
    assert kinds - {"full"}  # compressed candidates really are built


def test_spec_for_another_teacher_is_refused(tmp_path):
    path, _ = _spec_with(tmp_path, "full")
    spec = load_spec(path)
    other = teacher_for(spec)  # the same teacher loads fine
    assert other.name == spec.teacher.name
    from nas.teachers import load_teacher

    with pytest.raises(NasError, match=r"made for teacher tests\.conftest:build_tiny, not"):
        build_student(spec, load_teacher("lraspp_mobilenet_v3_large"))
    changed = spec.model_copy(
        update={"teacher": spec.teacher.model_copy(update={"weights_id": "x"})}
    )
    with pytest.raises(NasError, match="with weights"):
        build_student(changed, other)
    # the same file, as an earlier version of the import converted it (`nas.graph.simplify`)
    converted = spec.model_copy(
        update={
            "teacher": spec.teacher.model_copy(
                update={"weights_id": other.weights_id + "+simplify0"}
            )
        }
    )
    with pytest.raises(NasError, match=r"converted by another version .*search again"):
        build_student(converted, other)
    wrong_size = spec.model_copy(update={"input_size": (32, 48)})
    with pytest.raises(NasError, match=r"layer stem\.0 of teacher .* has shape"):
        build_student(wrong_size, other)


def test_adaptive_schedule_starts_key_frames_at_cuts(tmp_path):
    path, run = _spec_with(tmp_path, "full")
    student = build_student(load_spec(path), run.teacher)
    still = torch.zeros(1, 3, 64, 96)
    cut = torch.ones(1, 3, 64, 96)
    runner = DeltaRunner(student, interval=100, adaptive_threshold=0.5)
    steps = list(runner.run([still, still, still, cut, cut, still]))
    assert [s.is_key for s in steps] == [True, False, False, True, False, True]
    assert [s.distance for s in steps] == [0, 1, 2, 0, 1, 0]


def _train(spec, out, steps, env):
    cmd = [sys.executable, "-m", "nas", "train", "--spec", str(spec), "--video",
           "synthetic:frames=24,size=64x96", "--max-frames", "24", "--steps", str(steps),
           "--checkpoint-every", "5", "--device", "cpu", "--out", str(out)]  # fmt: skip
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_killed_training_resumes_to_the_same_result(tmp_path):
    spec, _ = _spec_with(tmp_path, None)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    steps = 300
    whole = _train(spec, tmp_path / "whole", steps, env)
    assert whole.wait(timeout=600) == 0, whole.stderr.read()
    cut = _train(spec, tmp_path / "cut", steps, env)
    checkpoint = tmp_path / "cut" / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and cut.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    cut.send_signal(signal.SIGKILL)
    cut.wait(timeout=60)
    saved = torch.load(checkpoint, weights_only=True)["step"]
    assert 0 < saved < steps, "the kill came too late to test a resume"
    assert not (tmp_path / "cut" / "student.pt").exists()
    resumed = _train(spec, tmp_path / "cut", steps, env)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    a = torch.load(tmp_path / "whole" / "student.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "student.pt", weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    untrained = build_student(load_spec(spec), teacher_for(load_spec(spec))).state_dict()
    assert any(not torch.equal(a[k], untrained[k]) for k in a)  # training changed the blocks
    student = load_student_weights(
        build_student(load_spec(spec), teacher_for(load_spec(spec))),
        tmp_path / "cut" / "student.pt",
    )
    assert all(torch.equal(student.state_dict()[k], b[k]) for k in b)


def test_infer_writes_masks_and_video(run_nas, tmp_path):
    spec, _ = _spec_with(tmp_path, None)
    video = "synthetic:frames=12,size=64x96"
    result = run_nas(
        "infer",
        "--spec",
        str(spec),
        "--video",
        video,
        "--out",
        str(tmp_path / "masks"),
        "--device",
        "cpu",
    )
    assert result.returncode == 0, result.stderr
    pngs = sorted((tmp_path / "masks").glob("*.png"))
    assert len(pngs) == 12 and "12 frames (4 key frames)" in result.stdout.replace("\n", " ")
    result = run_nas(
        "infer",
        "--spec",
        str(spec),
        "--video",
        video,
        "--out",
        str(tmp_path / "o.mp4"),
        "--device",
        "cpu",
    )
    assert result.returncode == 0, result.stderr
    decoded = load_frames(open_video(str(tmp_path / "o.mp4")))
    # Teacher and student side by side, each at the frames' size.
    assert len(decoded) == 12 and decoded.frames.shape[-2:] == (64, 192)
    assert not list(tmp_path.glob(".*partial*"))


def test_eval_prints_and_writes_the_table(run_nas, tmp_path):
    spec, _ = _spec_with(tmp_path, None)
    video = "synthetic:frames=16,size=64x96"
    result = run_nas("eval", "--spec", str(spec), "--video", video, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "(channels-last)" in result.stdout  # the CPU's faster layout, for both models
    rows = {r[0]: r for r in csv.reader((tmp_path / "eval.csv").open())}
    teacher_gflops = float(rows["GFLOPs amortised"][1])
    student_gflops = float(rows["GFLOPs amortised"][2])
    spec_data = load_spec(spec)
    assert student_gflops == pytest.approx(spec_data.totals.amortised_macs / 1e9, rel=1e-6)
    assert teacher_gflops == pytest.approx(spec_data.totals.teacher_macs / 1e9, rel=1e-6)
    assert 0 <= float(rows["temporal consistency TC"][1]) <= 1
    assert 0 <= float(rows["mIoU against labels"][2]) <= 1  # synthetic labels fit the 3 classes
    assert float(rows["latency ms per frame (between key frames)"][1]) > 0
    assert "agreement at distance 1" in rows and "agreement at distance 2" in rows
    assert "temporal consistency TC" in result.stdout
    layers = len(spec_data.layers)
    assert rows["layers that run between key frames"][1:3] == [str(layers), str(layers)]


def test_eval_skips_the_frames_a_student_was_trained_on(run_nas, tmp_path):
    spec, _ = _spec_with(tmp_path, None)
    video = "synthetic:frames=16,size=64x96"
    result = run_nas(
        "eval", "--spec", str(spec), "--video", video, "--device", "cpu",
        "--skip-frames", "10", "--max-frames", "8",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "6 frames, key frame every" in " ".join(result.stdout.split())  # frames 10..15
    result = run_nas("eval", "--spec", str(spec), "--video", video, "--skip-frames", "-1")
    assert result.returncode == 2 and "--skip-frames" in result.stderr


def test_eval_names_a_corrupt_video_before_loading_the_models(tmp_path, capsys, monkeypatch):
    spec, _ = _spec_with(tmp_path, None)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video" * 10)

    def no_work(*args, **kwargs):
        raise AssertionError("the student was loaded before the videos were checked")

    monkeypatch.setattr(nas.student.build, "load_student", no_work)
    with pytest.raises(SystemExit) as info:
        main(["eval", "--spec", str(spec), "--video", "synthetic", "--video", str(bad)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert str(bad) in err


def test_eval_says_when_the_student_repeats_the_key_frame(tmp_path):
    path, run = _spec_with(tmp_path, None)
    spec = load_spec(path)
    first = spec.layers[0].path  # the tiny teacher is a chain: a zero here closes it
    closed = spec.model_copy(
        update={
            "layers": [
                layer.model_copy(update={"candidate": "zero"}) if layer.path == first else layer
                for layer in spec.layers
            ]
        }
    )
    assert build_student(spec, run.teacher).replay is None  # no zero: every module runs
    student = build_student(closed, run.teacher)
    assert student.replay.paths == ("",)  # nothing can change: the whole network is replayed
    result = evaluate(
        closed, run.teacher, student, "synthetic:frames=8,size=64x96", interval=4,
        max_frames=8, device=torch.device("cpu"), baselines=False,
    )  # fmt: skip
    layers = result.row("layers that run between key frames")
    assert (layers["teacher"], layers["student"]) == (len(spec.layers), 0)
    # And so it does: between key frames its output is exactly the key frame's.
    frames = (run.teacher.input_spec.normalize(f[None]) for f in _frames(8))
    steps = list(DeltaRunner(student, interval=4).run(frames))
    assert sum(step.is_key for step in steps) == 2
    for step in steps:
        if step.is_key:
            key = step.prediction.clone()
        else:
            assert torch.equal(step.prediction, key)


def test_search_summary_warns_when_every_layer_is_zero(tmp_path, capsys):
    from nas.cli.study import _print_spec_summary

    path, _ = _spec_with(tmp_path, None)
    _print_spec_summary(path, 0)
    assert "warning" not in capsys.readouterr().out
    zeros, _ = _spec_with(tmp_path / "zeros", "zero")
    _print_spec_summary(zeros, 0)
    assert "warning: every layer is `zero`" in " ".join(capsys.readouterr().out.split())


def test_train_and_eval_refuse_bad_input(run_nas, tmp_path):
    result = run_nas("train", "--spec", str(tmp_path / "missing.json"))
    assert (
        result.returncode == 2
        and "spec file" in result.stderr
        and "does not exist" in result.stderr
    )
    spec, _ = _spec_with(tmp_path, None)
    result = run_nas("eval", "--spec", str(spec), "--video", str(tmp_path / "nope.mp4"))
    assert result.returncode == 2 and "nope.mp4" in result.stderr
    assert result.stderr.count("\n") == 1
    result = run_nas("eval", "--spec", str(spec), "--layout", "nhw")
    assert result.returncode == 2 and "unknown layout 'nhw'" in result.stderr
    assert result.stderr.count("\n") == 1


def test_adaptive_schedule_finds_the_scene_cuts_of_a_real_clip(tmp_path):
    """bikes.mp4 cuts to a new shot at frames 30 and 76: both become key frames, and the
    schedule keeps far fewer key frames than a fixed interval of 3 would."""
    path, run = _spec_with(tmp_path, "full")
    student = build_student(load_spec(path), run.teacher)
    frames = load_frames(open_video("sample:bikes", max_frames=90), size=(64, 96)).frames
    inputs = (run.teacher.input_spec.normalize(f[None]) for f in frames)
    steps = list(DeltaRunner(student, interval=100, adaptive_threshold=0.5).run(inputs))
    keys = [i for i, step in enumerate(steps) if step.is_key]
    assert {0, 30, 76} <= set(keys) and len(keys) < 90 / 3
    assert all(step.change <= 0.5 for step in steps if not step.is_key)
