"""The linear form of a delta frame at inference (`nas.delta.model.DeltaConv`): every block g is
linear, so the recurrence z_k + g(a_t - a_k) equals c_k + g(a_t) with c_k = z_k - g(a_k) kept
from the key frame. Checked against the recurrence itself on every candidate kind."""

from __future__ import annotations

import pytest
import torch

from nas.delta.runner import DeltaRunner
from nas.searching.options import SearchOptions
from nas.searching.pipeline import prepare
from nas.spec import load_spec
from nas.student.build import build_student
from tests.conftest import TINY_SEARCH, uniform_spec


@pytest.fixture(scope="module")
def run():
    return prepare(SearchOptions(**TINY_SEARCH))


def _kinds(run) -> list[str]:
    """Every candidate the tiny search space offers, each once (its canonical string)."""
    return sorted({name for costs in run.macs.candidates.values() for name in costs})


def _frames(run, n: int = 7) -> list[torch.Tensor]:
    """The first `n` validation frames, normalised as the teacher takes them."""
    images = next(iter(run.val.span_frames()))
    normalize = run.teacher.input_spec.normalize
    return [normalize(image[None]) for _, image in zip(range(n), images, strict=False)]


def _outputs(student, frames, *, linear: bool, interval: int = 4) -> list[torch.Tensor]:
    for _, conv in student.delta_convs():
        conv.linear = linear
    return [step.prediction.clone() for step in DeltaRunner(student, interval=interval).run(frames)]


def test_every_candidate_kind_gives_the_recurrence_in_the_linear_form(run, tmp_path):
    frames = _frames(run)
    kinds = _kinds(run)
    assert {"full", "zero"} < set(kinds) and any(k.startswith("down2_") for k in kinds)
    assert any("lowrank" in k for k in kinds) and any("sep" in k for k in kinds)
    for kind in kinds:
        picks = {
            path: kind if kind in costs else "full" for path, costs in run.macs.candidates.items()
        }
        path = tmp_path / f"{kind}.json"
        uniform_spec(run, path, None)
        spec = load_spec(path)
        spec = spec.model_copy(
            update={
                "layers": [
                    layer.model_copy(update={"candidate": picks[layer.path]})
                    for layer in spec.layers
                ]
            }
        )
        student = build_student(spec, run.teacher, stats=run.stats)
        plain = _outputs(student, frames, linear=False)
        linear = _outputs(student, frames, linear=True)
        scale = max(float(y.abs().max()) for y in plain)
        for i, (a, b) in enumerate(zip(plain, linear, strict=True)):
            assert torch.allclose(a, b, atol=1e-5 * scale, rtol=0), (kind, i)
        assert not all(torch.equal(plain[0], y) for y in plain[1:]), kind  # frames differ


def test_a_linear_key_frame_keeps_the_offset_alone(run, tmp_path):
    """An inference key frame in the linear form keeps c_k for every layer that runs a block
    (not a_k or z_k), nothing for `full` (the conv reruns), the output alone for `zero`."""
    spec = load_spec(uniform_spec(run, tmp_path / "spec.json", None))
    picks = {layer.path: layer.candidate for layer in spec.layers}
    student = build_student(spec, run.teacher, stats=run.stats)
    for _, conv in student.delta_convs():
        conv.linear = True
    frames = _frames(run, 2)
    runner = DeltaRunner(student, interval=3)
    runner.step(frames[0])
    for layer, conv in student.delta_convs():
        assert conv.a_key is None, layer.path
        if picks[layer.path] in ("full", "zero"):
            assert conv.offset is None, layer.path
        else:
            assert conv.offset is not None and conv.z_key is None, layer.path
