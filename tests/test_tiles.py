"""Skipping the tiles whose input did not change (`nas.delta.tiles`): exact at threshold 0 on every
candidate kind and on a whole trained teacher, and really skipping where a frame changes in
one place only."""

from __future__ import annotations

import pytest
import torch

from nas.data import load_frames, open_video
from nas.delta.model import DeltaModel
from nas.delta.runner import DeltaRunner
from nas.delta.tiles import TileSkip
from nas.graph.layers import layer_graph
from nas.searching.options import SearchOptions
from nas.searching.pipeline import prepare
from nas.spec import load_spec
from nas.student.build import build_student
from nas.teachers import load_teacher
from search_spaces import build_candidate, max_rank
from tests.conftest import TINY_SEARCH, uniform_spec


@pytest.fixture(scope="module")
def run():
    return prepare(SearchOptions(**TINY_SEARCH))


def _frames(run, n: int = 7) -> list[torch.Tensor]:
    images = next(iter(run.val.span_frames()))
    normalize = run.teacher.input_spec.normalize
    return [normalize(image[None]) for _, image in zip(range(n), images, strict=False)]


def _outputs(student: DeltaModel, frames, skip: TileSkip | None, interval: int = 4):
    student.use_skipping(skip)
    runner = DeltaRunner(student, interval=interval)
    return [step.prediction.clone() for step in runner.run(frames)]


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=0, atol=1e-5 * float(b.abs().max()))


def _spec_with(run, tmp_path, kind: str):
    spec = load_spec(uniform_spec(run, tmp_path / f"{kind}.json", None))
    picks = {p: kind if kind in c else "full" for p, c in run.macs.candidates.items()}
    layers = [layer.model_copy(update={"candidate": picks[layer.path]}) for layer in spec.layers]
    return spec.model_copy(update={"layers": layers})


@pytest.mark.parametrize("tile", [16, 5])  # 5: tiles that do not divide the outputs
def test_threshold_zero_is_the_dense_delta_frame_on_every_candidate_kind(run, tmp_path, tile):
    frames = _frames(run)
    kinds = sorted({name for costs in run.macs.candidates.values() for name in costs})
    assert {"full", "zero"} < set(kinds)
    for kind in kinds:
        student = build_student(_spec_with(run, tmp_path, kind), run.teacher, stats=run.stats)
        dense = _outputs(student, frames, None)
        skip = TileSkip(threshold=0.0, tile=tile, dense_above=1.0)  # never the dense fallback
        tiled = _outputs(student, frames, skip)
        for i, (a, b) in enumerate(zip(tiled, dense, strict=True)):
            assert _close(a, b), (kind, tile, i)
        if kind != "zero":
            assert skip.total > 0, kind


def _whole_student(teacher, size) -> DeltaModel:
    """Every dense conv of `teacher` low-rank at half its rank, the others full."""
    layers = layer_graph(teacher.module, size)

    def make_block(layer, conv):
        name = "full"
        if layer.groups == 1:
            name = f"lowrank_r{max(1, max_rank('lowrank', layer) // 2)}"
        return build_candidate(name, layer, weight=conv.weight.detach())

    return DeltaModel.build(teacher.module, layers, make_block, output_key=teacher.output_key)


def test_threshold_zero_is_exact_on_a_whole_trained_teacher():
    """U²-Net-p (every layer tiled: lowrank and full) on real frames of sample:carphone."""
    teacher = load_teacher("u2netp")
    size = (64, 96)
    stack = load_frames(open_video("sample:carphone", max_frames=4), size=size)
    frames = [teacher.input_spec.normalize(x[None]) for x in stack.frames]
    student = _whole_student(teacher, size).eval()
    dense = _outputs(student, frames, None)
    skip = TileSkip(threshold=0.0, dense_above=1.0)
    tiled = _outputs(student, frames, skip)
    assert skip.total > 0
    for a, b in zip(tiled, dense, strict=True):
        assert _close(a, b)


def test_a_change_in_one_corner_runs_few_tiles_and_a_high_threshold_none(run, tmp_path):
    """A frame that differs from its key frame in one 8x8 corner only: at threshold 0 few
    tiles run and the output is still the dense one; with a threshold above every change no
    tile runs and the output is the key frame's."""
    spec = load_spec(uniform_spec(run, tmp_path / "spec.json", None))
    student = build_student(spec, run.teacher, stats=run.stats)
    key = _frames(run, 1)[0]
    moved = key.clone()
    moved[..., :8, :8] += 0.5
    dense = _outputs(student, [key, moved], None)
    skip = TileSkip(threshold=0.0, tile=8)
    tiled = _outputs(student, [key, moved], skip)
    assert _close(tiled[1], dense[1])
    assert 0 < skip.active_share < 0.5
    none = TileSkip(threshold=float("inf"), tile=8)
    skipped = _outputs(student, [key, moved], none)
    assert none.active == 0 and none.total > 0
    assert torch.equal(skipped[1], skipped[0])
    assert not _close(dense[1], dense[0])
