"""A user's teacher with several outputs, whose forward reads tensor values (an onnx2torch
graph): every command picks its prediction, the first output, and counts it with a real pass."""

from __future__ import annotations

import json

import torch

from nas.cost.macs import count_macs
from nas.teachers import load_teacher
from nas.teachers.base import select_output

FACTORY = "tests.conftest:build_multi_output"
VIDEO = "synthetic:frames=24,size=64x96"
COMMON = ("--video", VIDEO, "--device", "cpu")


def test_the_prediction_is_the_first_output():
    assert select_output([torch.ones(1), torch.zeros(1)], None).item() == 1
    assert select_output({"out": torch.ones(1), "aux": torch.zeros(1)}, None).item() == 1
    assert select_output({"a": torch.zeros(1), "b": torch.ones(1)}, "b").item() == 1
    teacher = load_teacher(FACTORY)
    assert teacher.module(torch.zeros(1, 3, 64, 96))[1].shape == (1, 1, 32, 48)
    assert teacher(torch.zeros(1, 3, 64, 96)).shape == (1, 1, 64, 96)


def test_a_factory_whose_module_reads_values_is_counted_with_a_real_pass():
    on_meta = load_teacher(FACTORY, device="meta")  # what `nas cost` asks for
    assert next(on_meta.module.parameters()).device.type == "cpu"  # kept real: it must run
    assert on_meta.name == FACTORY  # the name a spec loads it by again
    # 8*3*9 products per pixel at 32x48, then 8*8*9, then two 1x1 heads of 8.
    assert count_macs(on_meta.module, (64, 96)) == 32 * 48 * (8 * 27 + 8 * 72 + 8 + 8)


def test_search_train_eval_and_infer_on_a_multi_output_teacher(run_nas, tmp_path):
    result = run_nas("cost", "--teacher", FACTORY, "--input-size", "64x96")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    result = run_nas(
        "search", "--teacher", FACTORY, "--budget", "1MFLOPs", "--input-size", "64x96",
        "--max-frames", "24", "--steps", "4", "--trials", "1", "--train-steps", "2",
        "--out", str(run), *COMMON,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    spec = json.loads((run / "spec.json").read_text())
    assert spec["teacher"]["name"] == FACTORY and spec["totals"]["amortised_macs"] <= 1e6
    result = run_nas(
        "train", "--spec", str(run / "spec.json"), "--steps", "3", "--max-frames", "24",
        "--out", str(tmp_path / "train"), *COMMON,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    weights = tmp_path / "train" / "student.pt"
    assert weights.is_file()
    result = run_nas("eval", "--spec", str(run / "spec.json"), "--weights", str(weights), *COMMON)
    assert result.returncode == 0, result.stderr
    assert "agreement" in result.stdout
    out = tmp_path / "masks"
    result = run_nas(
        "infer", "--spec", str(run / "spec.json"), "--weights", str(weights),
        "--out", str(out), *COMMON,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(list(out.glob("*.png"))) == 24
