"""Calibration of a delta student on its own inputs (`nas.student.refit`)."""

from __future__ import annotations

import pytest
import torch

from nas.delta.model import DeltaModel
from nas.searching.options import SearchOptions
from nas.searching.pipeline import prepare
from nas.student.refit import patch_columns, refit_student
from nas.student.statistics import delta_statistics
from search_spaces import LowRankBlock, build_candidate, max_rank
from tests.conftest import TINY_SEARCH


@pytest.fixture(scope="module")
def run():
    return prepare(SearchOptions(**TINY_SEARCH))


@pytest.fixture(scope="module")
def data(run):
    generator = torch.Generator().manual_seed(3)
    fitted = [run.next_batch(generator)[:2] for _ in range(3)]
    held = [run.next_batch(generator)[:2] for _ in range(2)]
    return fitted, held


def student(run, dense: str, *, teacher_start: bool = True, stats=None) -> DeltaModel:
    """Every dense conv at `dense` ("lowrank_max": its exact rank), depthwise convs `full`
    (teacher weights); dense blocks start from the teacher (plain or data-aware SVD) or random."""

    def make_block(layer, conv):
        if layer.groups != 1:
            return build_candidate("full", layer, weight=conv.weight.detach())
        name = f"lowrank_r{max_rank('lowrank', layer)}" if dense == "lowrank_max" else dense
        weight = conv.weight.detach() if teacher_start else None
        return build_candidate(name, layer, weight=weight, stats=(stats or {}).get(layer.path))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = DeltaModel.build(
            run.teacher.module, run.layers, make_block, output_key=run.teacher.output_key
        )
    return model.eval()


def output_errors(model: DeltaModel, batches) -> tuple[float, float]:
    """sum |y_hat - y|^2 and sum |y_key - y|^2 over the delta frames."""
    own = repeated = 0.0
    with torch.no_grad():
        for key, frame in batches:
            y_key = model.key_frame(key)
            y = model.teacher_frame(frame)
            y_hat = model.delta_frame(frame)
            own += float((y_hat - y).double().square().sum())
            repeated += float((y_key - y).double().square().sum())
    model.clear()
    return own, repeated


def test_patch_columns_match_unfold():
    from nas.graph.layers import ConvLayer

    layer = ConvLayer(0, "c", 3, 5, (3, 2), (2, 1), (1, 1), (2, 1), 1, False, (9, 7), (4, 8), None)
    delta = torch.randn(2, 3, 9, 7)
    flat = torch.tensor([0, 5, 17, 31, 40, 63])
    cols = torch.nn.functional.unfold(
        delta, layer.kernel, dilation=layer.dilation, padding=layer.padding, stride=layer.stride
    )  # 2 x D x L
    expected = cols.permute(1, 0, 2).reshape(cols.shape[1], -1)[:, flat]
    torch.testing.assert_close(patch_columns(delta, layer, flat), expected.double())


def test_full_rank_refit_from_random_reproduces_the_teacher(run, data):
    fitted, held = data
    model = student(run, "lowrank_max", teacher_start=False)
    assert output_errors(model, held)[0] > 1e-2 * output_errors(model, held)[1]  # far off
    report = refit_student(model, fitted)
    assert set(report.layers) == {layer.path for layer in run.layers if layer.groups == 1}
    assert report.skipped == {"dw": "grouped conv"}
    for fit in report.layers.values():
        assert fit.after < 1e-8
    own, repeated = output_errors(model, held)
    assert repeated > 0
    assert own < 1e-8 * repeated  # within 1e-4 relative (norms) on frames it never saw


def test_low_rank_refit_lowers_the_output_error(run, data):
    fitted, _ = data
    plain = student(run, "lowrank_r1")
    generator = torch.Generator().manual_seed(0)
    stats = delta_statistics(
        run.teacher, run.teacher.module, run.layers, fitted, generator=generator
    )
    aware = student(run, "lowrank_r1", stats=stats)
    plain_error, repeated = output_errors(plain, fitted)
    aware_error, _ = output_errors(aware, fitted)

    report = refit_student(plain, fitted)
    for fit in report.layers.values():
        assert fit.after <= fit.before + 1e-9
        assert fit.rank == 1
    refit_error, _ = output_errors(plain, fitted)
    assert refit_error < plain_error
    assert refit_error < aware_error
    assert refit_error < repeated
    assert isinstance(plain.net.get_submodule("pw").block, LowRankBlock)

    refit_student(aware, fitted)  # from the data-aware start, too
    assert output_errors(aware, fitted)[0] < aware_error


def test_refit_is_deterministic(run, data):
    fitted, _ = data
    a, b = student(run, "lowrank_r2"), student(run, "lowrank_r2")
    first = refit_student(a, fitted, positions=500, seed=7)
    second = refit_student(b, fitted, positions=500, seed=7)
    assert first.layers == second.layers
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_full_blocks_are_left_alone(run, data):
    fitted, _ = data
    model = student(run, "full")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = refit_student(model, fitted)
    assert not report.layers
    assert set(report.skipped) == {layer.path for layer in run.layers}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
