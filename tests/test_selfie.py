"""TFLite teachers (`nas.teachers.tflite`) and MediaPipe's selfie segmentation built on them.

The reference is MediaPipe's own runtime: `tests/data/selfie_reference.npz` holds three frames of
`sample:carphone` at 256x256 and the masks `mediapipe==0.10.14` computed for them with the same
model file, recorded once by

    python tests/data/record_selfie_reference.py
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import nas.teachers.tflite as tflite_module
from nas.core.errors import NasError
from nas.teachers import load_teacher
from nas.teachers.base import file_sha256
from nas.teachers.selfie import FILES, selfie_path
from nas.teachers.tflite import convert_tflite

REFERENCE = Path(__file__).parent / "data" / "selfie_reference.npz"


@pytest.fixture(scope="module")
def selfie():
    return load_teacher("selfie")


def test_selfie_matches_mediapipe_on_real_frames(selfie):
    found = np.load(REFERENCE)
    assert str(found["model_sha256"]) == file_sha256(selfie_path())  # the same weights
    frames = torch.from_numpy(found["frames"]).permute(0, 3, 1, 2)
    with torch.no_grad():
        masks = selfie(selfie.input_spec.normalize(frames))[:, 0].numpy()
    assert np.abs(masks - found["masks"]).max() < 1e-4
    person = (masks > 0.5).mean(axis=(1, 2))  # the man in the car covers about half the frame
    assert ((person > 0.3) & (person < 0.6)).all(), person


def test_the_files_are_the_pinned_ones():
    for name, digest in FILES.items():
        assert file_sha256(selfie_path(name)) == digest


@pytest.mark.parametrize(
    ("name", "size"), [("selfie", (192, 320)), ("selfie_landscape", (144, 256))]
)
def test_runs_at_other_multiples_of_16(name, size):
    teacher = load_teacher(name)
    with torch.no_grad():
        y = teacher(torch.rand(1, 3, *size))
    assert y.shape == (1, 1, *size) and float(y.min()) >= 0 and float(y.max()) <= 1


def test_tflite_path_is_a_teacher(selfie):
    teacher = load_teacher(f"tflite:{selfie_path()}")
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(teacher(x), selfie(x))
    assert teacher.weights_id == selfie.weights_id
    convs = [m for m in teacher.module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 54


def test_cost_lists_the_54_convs(run_nas):
    result = run_nas("cost", "--teacher", "selfie", "--per-layer")
    assert result.returncode == 0, result.stderr
    assert "GFLOPs        0.059" in result.stdout  # 59 MMACs
    assert "conv layers   54" in result.stdout
    assert result.stdout.count("layers.") == 54


def with_op_renamed(path: Path, out: Path, old: int, new: int) -> Path:
    """A copy of the TFLite file whose operator code `old` reads `new` (both fields of it)."""
    import tflite

    data = bytearray(path.read_bytes())
    model = tflite.Model.GetRootAsModel(data, 0)
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) != old:
            continue
        table = code._tab
        for slot, fmt in ((4, "<b"), (10, "<i")):  # deprecated_builtin_code, builtin_code
            offset = table.Offset(slot)
            if offset:
                struct.pack_into(fmt, data, table.Pos + offset, new)
    out.write_bytes(bytes(data))
    return out


def test_an_unknown_op_is_refused_in_one_line(tmp_path, run_nas):
    import tflite

    hard_swish, tanh = tflite.BuiltinOperator.HARD_SWISH, tflite.BuiltinOperator.TANH
    patched = with_op_renamed(selfie_path(), tmp_path / "patched.tflite", hard_swish, tanh)
    with pytest.raises(NasError, match=r"operator TANH \(layer 'h_swish.*'\) is not supported"):
        convert_tflite(patched)
    result = run_nas("cost", "--teacher", f"tflite:{patched}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "operator TANH" in lines[0] and "Traceback" not in result.stderr


def test_the_refusal_comes_before_any_work(monkeypatch):
    built = []
    monkeypatch.setattr(tflite_module, "_conv", lambda *a, **k: built.append(a))
    monkeypatch.setattr(tflite_module, "SUPPORTED", tuple(set(tflite_module.SUPPORTED) - {"ADD"}))
    with pytest.raises(NasError, match="operator ADD"):
        convert_tflite(selfie_path())
    assert built == []


def test_same_padding_is_tensorflows():
    """SAME pads the odd pixel after: a stride-2 3x3 conv on 8 pixels pads (0, 1)."""
    from nas.teachers.tflite import same_padding

    assert same_padding(8, 3, 2, 1) == (0, 1)
    assert same_padding(7, 3, 2, 1) == (1, 1)
    assert same_padding(16, 3, 1, 1) == (1, 1)
    assert same_padding(16, 1, 1, 1) == (0, 0)


def test_a_delta_model_of_selfie_is_exact_on_its_key_frame(selfie):
    """The delta model wraps the TFLite graph's convs like any teacher's: its key frame is the
    teacher's output, and a full-rank student's delta frame is the teacher's too."""
    from nas.delta.model import DeltaModel
    from nas.graph.layers import layer_graph
    from search_spaces import build_candidate

    layers = layer_graph(selfie.module, (64, 64))
    model = DeltaModel.build(
        selfie.module,
        layers,
        lambda layer, conv: build_candidate("full", layer, weight=conv.weight.detach()),
    ).eval()
    x_key, x_t = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.key_frame(x_key), selfie(x_key), atol=1e-6)
        assert torch.allclose(model.delta_frame(x_t), selfie(x_t), atol=1e-5)


def test_nas_infer_overlays_the_selfie_mask_on_carphone(run_nas, tmp_path):
    """The built-in clip with a person is the selfie teacher's demo: `nas infer` writes the
    teacher's and a student's masks over it, side by side."""
    import av

    from nas.searching.options import SearchOptions
    from nas.searching.pipeline import prepare
    from tests.conftest import uniform_spec

    run = prepare(
        SearchOptions(
            teacher="selfie", budget="50%", video=["sample:carphone"], max_frames=12,
            input_size="128x128", keyframe_interval=3, steps=1, val_batches=1, device="cpu",
            threads=1,
        )
    )  # fmt: skip
    spec = uniform_spec(run, tmp_path / "spec.json", None)
    out = tmp_path / "side-by-side.mp4"
    result = run_nas(
        "infer", "--spec", str(spec), "--video", "sample:carphone", "--max-frames", "6",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with av.open(str(out)) as video:
        frames = [f.to_ndarray(format="rgb24") for f in video.decode(video=0)]
    assert len(frames) == 6 and frames[0].shape == (128, 256, 3)
    # The mask is drawn in red over the person (the clip's own frames are no redder than green).
    teacher_side = frames[0][:, :128].astype(float)
    assert (teacher_side[..., 0] - teacher_side[..., 1]).mean() > 20


def test_same_average_pool_averages_the_real_pixels_only():
    """SAME average pooling pads the odd pixel after and leaves the padding out of each mean, as
    TFLite does: checked window by window by hand."""
    from nas.teachers.tflite import SAME, AveragePool, same_padding

    x = torch.rand(1, 2, 7, 8)
    pool = AveragePool((3, 3), (2, 2), SAME, whole=False, activation=0)
    y = pool(x)
    top, _ = same_padding(7, 3, 2, 1)
    left, _ = same_padding(8, 3, 2, 1)
    assert y.shape == (1, 2, 4, 4)
    for i in range(4):
        for j in range(4):
            r0, c0 = i * 2 - top, j * 2 - left
            window = x[..., max(r0, 0) : r0 + 3, max(c0, 0) : c0 + 3]
            assert torch.allclose(y[..., i, j], window.mean(dim=(-2, -1)), atol=1e-6)
