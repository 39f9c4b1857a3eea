"""The per-frame and resolution modes: same search, spec, student, runner and commands as delta."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nas.core.errors import NasError
from nas.cost.macs import count_macs
from nas.delta.runner import DeltaRunner
from nas.searching.options import SearchOptions
from nas.searching.pipeline import search
from nas.spec import Spec, load_spec
from nas.student.build import build_student
from nas.teachers import load_teacher
from tests.conftest import TINY_SEARCH

TINY = "tests.conftest:build_tiny"
TEACHER = load_teacher(TINY)
TINY_MACS = count_macs(TEACHER.module, (64, 96))


def _search(tmp_path, mode: str, fraction: float, **extra):
    options = SearchOptions(
        **(TINY_SEARCH | {"steps": 8}),
        budget=f"{fraction * TINY_MACS / 1e9}GFLOPs",
        mode=mode,
        out=str(tmp_path / mode),
        **extra,
    )
    return search(options)


def _all_full(spec: Spec) -> Spec:
    layers = [layer.model_dump() | {"candidate": "full"} for layer in spec.layers]
    return Spec.model_validate(spec.model_dump() | {"layers": layers})


def _frames(n: int = 5, size=(64, 96)):
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(1, 3, *size, generator=generator)
    return [base + 0.3 * torch.randn(1, 3, *size, generator=generator) for _ in range(n)]


@pytest.mark.parametrize(("mode", "extra"), [("perframe", {}), ("resolution", {"input_scale": 1})])
def test_an_all_full_student_reproduces_the_teacher_on_every_frame(tmp_path, mode, extra):
    spec = _all_full(_search(tmp_path, mode, 0.6, **extra).spec)
    student = build_student(spec, TEACHER)
    assert student.per_frame
    steps = list(DeltaRunner(student, interval=3).run(_frames()))
    assert not any(step.is_key for step in steps)  # no key frames in these modes
    with torch.inference_mode():
        for step, x in zip(steps, _frames(), strict=True):
            assert torch.allclose(step.prediction, TEACHER(x), atol=1e-4)


def test_perframe_search_meets_the_budget_without_zero(tmp_path):
    spec = _search(tmp_path, "perframe", 0.6).spec
    assert spec.mode == "perframe" and spec.keyframe_interval == 1 and spec.interval is None
    assert all(layer.candidate != "zero" for layer in spec.layers)
    totals = spec.totals
    # No key frames: every frame pays the student, which is only convs in the tiny net.
    assert totals.amortised_macs == totals.delta_frame_macs == sum(x.macs for x in spec.layers)
    assert totals.amortised_macs <= 0.6 * TINY_MACS < totals.teacher_macs
    assert 0 <= spec.metrics["val_agreement"] <= 1


def test_resolution_search_counts_cost_at_the_students_size(tmp_path):
    spec = _search(tmp_path, "resolution", 0.3, input_scale=0.5).spec
    assert spec.input_size == (32, 48) and spec.teacher_input_size == (64, 96)
    assert spec.totals.teacher_macs == TINY_MACS  # the reference: the teacher at full size
    student_full = count_macs(TEACHER.module, (32, 48))
    assert spec.totals.amortised_macs <= min(0.3 * TINY_MACS, student_full)
    assert all(layer.shape.in_hw[0] <= 32 for layer in spec.layers)
    # The student takes full-size frames and answers at full size.
    student = build_student(spec, TEACHER)
    with torch.inference_mode():
        out = student.delta_frame(_frames(1)[0])
    assert out.shape == (1, 3, 64, 96)


def test_resolution_all_full_at_half_size_is_the_teacher_on_downscaled_frames(tmp_path):
    spec = _all_full(_search(tmp_path, "resolution", 0.3, input_scale=0.5).spec)
    student = build_student(spec, TEACHER)
    x = _frames(1)[0]
    with torch.inference_mode():
        small = F.interpolate(x, size=(32, 48), mode="bilinear", antialias=True)
        expected = F.interpolate(TEACHER(small), size=(64, 96), mode="bilinear")
        assert torch.allclose(student.delta_frame(x), expected, atol=1e-4)


def test_temporal_consistency_enters_the_per_frame_loss(tmp_path):
    log = _search(tmp_path, "perframe", 0.6, tc_weight=0.5, blockwise_fraction=0.5).log
    blockwise, end_to_end = log[: len(log) // 2], log[len(log) // 2 :]
    assert all(row.tc_loss == 0 for row in blockwise)  # layer terms alone at first
    assert all(row.tc_loss > 0 for row in end_to_end)  # the synthetic shapes move


def test_specs_of_the_per_frame_modes_are_validated(tmp_path):
    spec = _search(tmp_path, "perframe", 0.6).spec
    data = spec.model_dump()
    with pytest.raises(ValueError, match="no key frames"):
        Spec.model_validate(data | {"keyframe_interval": 3})
    layers = [layer | {"candidate": "zero"} for layer in data["layers"]]
    with pytest.raises(ValueError, match="`zero` predicts nothing"):
        Spec.model_validate(data | {"layers": layers})
    with pytest.raises(ValueError, match="teacher_input_size"):
        Spec.model_validate(data | {"mode": "resolution"})
    with pytest.raises(ValueError, match="keyframe_interval >= 2"):
        Spec.model_validate(data | {"mode": "delta"})  # a per-frame spec is no delta spec
    assert load_spec(tmp_path / "perframe" / "spec.json") == spec


def test_a_budget_below_the_cheapest_student_is_refused(tmp_path):
    with pytest.raises(NasError, match="below the cheapest student"):
        _search(tmp_path, "perframe", 0.001)
    with pytest.raises(NasError, match="latency budgets are measured on delta models only"):
        search(SearchOptions(**TINY_SEARCH, budget="5ms", mode="perframe", out=str(tmp_path / "x")))


def test_train_eval_and_infer_run_a_perframe_spec(run_nas, tmp_path):
    spec_path = tmp_path / "perframe" / "spec.json"
    _search(tmp_path, "perframe", 0.6)
    video = ["--video", "synthetic:frames=24,size=64x96", "--device", "cpu"]
    result = run_nas("train", "--spec", str(spec_path), *video, "--steps", "4")
    assert result.returncode == 0, result.stderr
    weights = tmp_path / "perframe" / "train" / "student.pt"
    assert weights.is_file()
    result = run_nas("eval", "--spec", str(spec_path), "--weights", str(weights), *video)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # rich wraps the title
    assert "against its perframe student, 24 frames, no key frames on cpu" in text
    out = tmp_path / "masks"
    result = run_nas("infer", "--spec", str(spec_path), *video, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert len(list(out.glob("*.png"))) == 24


def test_cli_refuses_an_unknown_mode(run_nas, tmp_path):
    result = run_nas(
        "search", "--teacher", TINY, "--budget", "1GFLOPs", "--mode", "fast",
        "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: invalid --mode 'fast': expected one of delta, perframe, resolution"
    )
