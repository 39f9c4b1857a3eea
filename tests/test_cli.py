"""The `nas` command, run as a user runs it: published figures, tables, and one-line errors."""

import json
import os
import re
import stat

import pandas as pd
import pytest
import torch

from nas.cost.macs import count_macs, padding_macs
from nas.student.compare import beaten_by
from nas.teachers import load_teacher

# torchvision's published multiply-adds (GFLOPS column) and parameters at 1x3x520x520, aux head on.
PUBLISHED = {
    "deeplabv3_resnet50": ("178.722", "42,004,074"),
    "deeplabv3_resnet101": ("258.743", "60,996,202"),
    "deeplabv3_mobilenet_v3_large": ("10.452", "11,029,328"),
    "lraspp_mobilenet_v3_large": ("2.086", "3,221,538"),
}
# Without the aux head (inference), as DESIGN.md lists them.
INFERENCE = {"deeplabv3_resnet50": "168.731", "deeplabv3_mobilenet_v3_large": "10.436"}


def field(stdout: str, name: str) -> str:
    match = re.search(rf"^{re.escape(name)}\s+(\S+)", stdout, re.MULTILINE)
    assert match, f"no '{name}' line in:\n{stdout}"
    return match[1]


@pytest.mark.parametrize("name", PUBLISHED)
def test_cost_reproduces_published_figures(run_nas, name):
    result = run_nas("cost", "--teacher", name, "--input-size", "520x520", "--aux")
    assert result.returncode == 0, result.stderr
    assert (field(result.stdout, "GFLOPs"), field(result.stdout, "parameters")) == PUBLISHED[name]


@pytest.mark.parametrize("name", INFERENCE)
def test_cost_without_aux_head(run_nas, name):
    result = run_nas("cost", "--teacher", name)
    assert result.returncode == 0, result.stderr
    assert field(result.stdout, "GFLOPs") == INFERENCE[name]
    assert field(result.stdout, "input") == "1x3x520x520"


def test_cost_names_the_products_with_zero_padding(run_nas):
    """deeplabv3 at 520x520: nearly half its count multiplies padding (its atrous pyramid)."""
    result = run_nas("cost", "--teacher", "deeplabv3")
    assert result.returncode == 0, result.stderr
    module = load_teacher("deeplabv3", device="meta").module
    expected = padding_macs(module, (1, 3, 520, 520))
    assert field(result.stdout, "zero padding") == f"{expected / 1e9:,.3f}"
    assert 0.4 < expected / count_macs(module, (520, 520)) < 0.5


def test_teachers_table(run_nas):
    result = run_nas("teachers")
    assert result.returncode == 0, result.stderr
    rows = {
        line.split("│")[1].strip(): line
        for line in result.stdout.splitlines()
        if line.count("│") > 3
    }
    assert {"deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50", "ppocrv4_det"} <= set(rows)
    assert (
        "deeplabv3" in rows["deeplabv3_mobilenet_v3_large"]
        and "10.436" in rows["deeplabv3_mobilenet_v3_large"]
    )
    # as converted and simplified: its batch norms folded into conv biases (1,171,464 as read)
    assert "1,171,424" in rows["ppocrv4_det"] and "prob_map" in rows["ppocrv4_det"]


def test_per_layer_with_latency_and_budget(run_nas):
    result = run_nas(
        "cost", "--teacher", "lraspp_mobilenet_v3_large", "--input-size", "128x128",
        "--per-layer", "--latency", "cpu", "--threads", "1", "--budget", "60MFLOPs",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    layer_rows = [line for line in result.stdout.splitlines() if re.match(r"│\s+\d+ │", line)]
    assert len(layer_rows) == 66
    assert re.search(
        r"^latency \(cpu, nchw, 1 threads\)\s+\d+\.\d+ ms median", result.stdout, re.MULTILINE
    )
    assert "backbone.0.0" in layer_rows[0] and "yes" in layer_rows[0]  # BN folded into the stem
    macs = count_macs(load_teacher("lraspp_mobilenet_v3_large", device="meta").module, (128, 128))
    verdict = f"{100 * 60e6 / macs:.1f}% of the teacher: a {macs / 60e6:.2f}x reduction"
    assert re.search(rf"^budget 60MFLOPs\s+{re.escape(verdict)}", result.stdout, re.MULTILINE)


def _bad_weights(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"\x00\x01 definitely not a checkpoint")
    return str(path)


def _other_arch_weights(tmp_path):
    path = tmp_path / "lraspp.pth"
    torch.save(load_teacher("lraspp_mobilenet_v3_large").module.state_dict(), path)
    return str(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["cost", "--teacher", "nope"],
            "unknown teacher 'nope'; known: deeplabv3_mobilenet_v3_large",
        ),
        (
            ["cost", "--budget", "5 parsecs"],
            "invalid budget '5 parsecs': expected a cost such as 5GFLOPs",
        ),
        (["cost", "--input-size", "520by520"], "invalid input size '520by520': expected HxW"),
        (
            ["cost", "--teacher", "ppocr", "--input-size", "500x500"],
            "multiples of 32, e.g. 512x512",
        ),
        (["cost", "--teacher-weights", "{bad}"], "cannot read weights file"),
        (["cost", "--teacher-weights", "{missing}"], "does not exist"),
        (
            ["cost", "--teacher-weights", "{other}"],
            "does not fit teacher deeplabv3_mobilenet_v3_large",
        ),
        (["cost", "--latency", "tpu"], "unknown device 'tpu'"),
        (["cost", "--latency", "cpu", "--layout", "hwc"], "unknown layout 'hwc': expected one of"),
        (["cost", "--teacher", "onnx:missing.onnx"], "ONNX file 'missing.onnx' does not exist"),
        (["cost", "--budget", "40ms"], "needs a device to measure on"),
    ],
)
def test_bad_input_is_one_line_exit_2(run_nas, tmp_path, args, message):
    paths = {
        "{bad}": _bad_weights,
        "{other}": _other_arch_weights,
        "{missing}": lambda t: str(t / "no.pth"),
    }
    args = [paths[a](tmp_path) if a in paths else a for a in args]
    result = run_nas(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_debug_shows_traceback(run_nas):
    result = run_nas("--debug", "cost", "--teacher", "nope")
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "NasError: unknown teacher 'nope'" in result.stderr


def test_unknown_option_is_a_usage_error(run_nas):
    result = run_nas("cost", "--frobnicate")
    assert result.returncode == 2 and "No such option" in result.stderr


TINY_ARGS = [
    "search", "--teacher", "tests.conftest:build_tiny", "--video", "synthetic:frames=24,size=64x96",
    "--input-size", "64x96", "--max-frames", "24", "--steps", "4", "--device", "cpu",
    "--trials", "2", "--train-steps", "2",
]  # fmt: skip


def test_a_default_study_adds_one_trial_per_run_on_a_cpu(run_nas, tmp_path):
    """Without --trials the study is sized to the machine (one more complete trial on a CPU),
    so rerunning the same command keeps the front growing; the command says how to ask for
    more."""
    at = TINY_ARGS.index("--trials")
    args = TINY_ARGS[:at] + TINY_ARGS[at + 2 :]
    run = tmp_path / "run"
    for held in (1, 2):
        result = run_nas(*args, "--budget", "3MFLOPs", "--out", str(run))
        assert result.returncode == 0, result.stderr
        said = " ".join(result.stdout.split())
        assert "running 1 more complete trial (rerun the same command to add more" in said
        assert "--trials N asks for a study of N complete trials" in said
        table = pd.read_csv(run / "trials.csv")
        assert (table["state"] == "COMPLETE").sum() == held


def test_search_writes_study_spec_and_summary(run_nas, tmp_path):
    result = run_nas(*TINY_ARGS, "--budget", "3MFLOPs", "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    mask = os.umask(0o022)
    os.umask(mask)
    for name in ("spec.json", "trials.csv", "trials.parquet", "study.db", "dashboard.html"):
        assert (run / name).is_file(), name
        # the permissions of a plain write: a trainer or a web server under another account
        # can read them
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o666 & ~mask, name
    assert "Pareto-optimal trials (feasible)" in result.stdout
    assert "layers per candidate kind:" in result.stdout
    assert f"spec written to {run / 'spec.json'}" in result.stdout.replace("\n", "")
    # The best spec's measured speed-up, as its metrics record it and the trials table lists it.
    metrics = json.loads((run / "spec.json").read_text())["metrics"]
    said = " ".join(result.stdout.split())
    assert f"{metrics['speedup']:.2f}x faster: {metrics['speedup_share']:.0%} of the" in said
    assert ("to search for time as well" in said) == (metrics["speedup_share"] < 0.8)
    table = pd.read_csv(run / "trials.csv")
    assert any(v == pytest.approx(metrics["speedup"]) for v in table["speedup"])
    # R beside agreement: in the validation metrics, the summary and the held-out trials table.
    assert metrics["val_r"] <= 1 and f"R {metrics['val_r']:.4f} (the share" in said
    complete = table[table["state"] == "COMPLETE"]
    assert complete["r"].notna().all() and (complete["r"] <= 1).all()
    # The cheap answers at the student's cost: in the spec, the summary (with the verdict that
    # names those it does not beat) and the trials table.
    for key in ("repeat", "lowres", "uniform"):
        assert f"baseline_{key}_agreement" in metrics, key
    assert f"R {metrics['heldout_r']:.4g}, agreement {metrics['heldout_agreement']:.4g}" in said
    lost = beaten_by(metrics)
    verdict_line = "does not beat, at the same cost: " + "; ".join(lost) if lost else "beats every"
    assert verdict_line in said
    k = int(metrics["baseline_repeat_interval"])
    assert f"at the same cost, repeating the key frame every {k} frames: R" in said
    assert set(complete["beats_baselines"]) <= {"yes", "no"}
    # The key-frame interval is `auto` by default: measured first, and trial 0 runs the choice.
    assert "key-frame interval measured (error per frame, " in said
    chosen = int(metrics["interval_chosen"])
    assert f"K={chosen} " in said and "(chosen)" in said
    assert table.loc[table["trial"] == 0, "param_keyframe_interval"].item() == chosen
    assert complete["uniform_r"].notna().all()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--budget", "0.5MFLOPs"], "smallest key-frame interval that could meet it is"),
        (["--budget", "3MFLOPs", "--search-space", "nope"], "unknown search-space preset 'nope'"),
        (["--budget", "3MFLOPs", "--video", "{corrupt}"], "corrupt.mp4"),
        (["--budget", "3MFLOPs", "--video", "{empty}"], "no images"),
        (["--budget", "3MFLOPs", "--keyframe-interval", "1"], "--keyframe-interval"),
        (["--budget", "three"], "invalid budget 'three'"),
        (["--budget", "3MFLOPs", "--keyframe-interval", "often"], "invalid --keyframe-interval"),
        (["--budget", "3MFLOPs", "--input-scale", "2"], "--input-scale"),
        (["--budget", "3MFLOPs", "--sampler", "grid"], "unknown sampler 'grid'"),
        (["--budget", "3MFLOPs", "--layout", "chw"], "unknown layout 'chw'"),
        (["--budget", "3MFLOPs", "--storage", "postgresql://a:b@127.0.0.1:1/x"], "needs --study"),
        (
            [
                "--budget",
                "3MFLOPs",
                "--storage",
                "postgresql://a:secret@127.0.0.1:1/x",
                "--study",
                "s",
            ],
            "cannot open the study storage postgresql+psycopg://a:***@127.0.0.1:1/x",
        ),
    ],
)
def test_search_bad_input_is_one_line_exit_2(run_nas, tmp_path, extra, message):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video" * 10)
    (tmp_path / "empty").mkdir()
    paths = {"{corrupt}": str(corrupt), "{empty}": str(tmp_path / "empty")}
    extra = [paths.get(a, a) for a in extra]
    result = run_nas(*TINY_ARGS, *extra, "--out", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr and "secret" not in result.stderr
    assert not (tmp_path / "run").exists()  # nothing written
