"""The linear form of a delta frame at inference (`nas.delta.model.DeltaConv`): every block g is
linear, so the recurrence z_k + g(a_t - a_k) equals c_k + g(a_t) with c_k = z_k - g(a_k) kept
from the key frame. Checked against the recurrence itself on every candidate kind."""

from __future__ import annotations

import pytest
import torch

from nas.delta.runner import DeltaRunner
from nas.searching.options import SearchOptions
from nas.searching.pipeline import prepare
from nas.spec import DeltaForm, Spec, load_spec
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
    student.use_linear(linear)
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
    student = build_student(spec.in_form(DeltaForm.LINEAR), run.teacher, stats=run.stats)
    assert all(conv.linear for _, conv in student.delta_convs())  # as the spec says
    frames = _frames(run, 2)
    runner = DeltaRunner(student, interval=3)
    runner.step(frames[0])
    for layer, conv in student.delta_convs():
        assert conv.a_key is None, layer.path
        if picks[layer.path] in ("full", "zero"):
            assert conv.offset is None, layer.path
        else:
            assert conv.offset is not None and conv.z_key is None, layer.path


def test_the_linear_form_counts_its_key_frame_calls(run, tmp_path):
    """A spec in the linear form adds, to every key frame, the multiply-adds of each layer that
    runs a block; its amortised figure grows by that over K; a hand-edited total is refused."""
    spec = load_spec(uniform_spec(run, tmp_path / "spec.json", None))
    assert spec.delta_form == DeltaForm.RECURRENCE and spec.totals.keyframe_extra_macs == 0
    linear = spec.in_form(DeltaForm.LINEAR)
    blocks = [layer.macs for layer in spec.layers if layer.candidate not in ("full", "zero")]
    assert blocks and linear.totals.keyframe_extra_macs == sum(blocks)
    k = spec.keyframe_interval
    assert linear.totals.amortised_macs == pytest.approx(
        (spec.totals.teacher_macs + sum(blocks) + (k - 1) * spec.totals.delta_frame_macs) / k
    )
    assert linear.in_form(DeltaForm.RECURRENCE).totals == spec.totals
    again = Spec.model_validate_json(linear.to_json())  # round trip
    assert again == linear
    data = linear.model_dump(mode="json")
    data["totals"]["keyframe_extra_macs"] = 0
    with pytest.raises(ValueError, match="keyframe_extra_macs must be"):
        Spec.model_validate(data)


def test_search_records_both_forms(tmp_path):
    """A delta search times the recurrence, and the linear form where its key frames fit the
    multiply-add budget; the spec ships the faster that fits, and stays within the budget."""
    from nas.searching.pipeline import search

    # a budget with room for the linear form's key frames, and blocks that run
    result = search(SearchOptions(**{**TINY_SEARCH, "budget": "95%", "out": str(tmp_path)}))
    spec, metrics = result.spec, result.spec.metrics
    assert "speedup_recurrence" in metrics and metrics["linear_form_fits"] in (0.0, 1.0)
    assert spec.totals.amortised_macs <= spec.budget.value
    fits = spec.in_form(DeltaForm.LINEAR).totals.amortised_macs <= spec.budget.value
    assert metrics["linear_form_fits"] == float(fits)
    assert fits and spec.in_form(DeltaForm.LINEAR).totals.keyframe_extra_macs > 0
    assert metrics["speedup_linear"] > 0  # timed
    if spec.delta_form == DeltaForm.LINEAR:
        assert metrics["speedup"] == metrics["speedup_linear"] > metrics["speedup_recurrence"]
    else:
        assert metrics["speedup"] == metrics["speedup_recurrence"]
