"""The closed-form calibration of a delta student on its own inputs
(`nas.student.refit.refit_student`): exact at full rank, better at low rank, and never worse on a
layer's held-out positions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nas.delta.model import DeltaModel
from nas.searching.make_spec import make_spec
from nas.searching.options import SearchOptions
from nas.searching.pipeline import prepare
from nas.searching.tables import macs_table
from nas.student.build import build_student
from nas.student.refit import refit_student
from search_spaces import LowRankBlock, build_candidate, max_rank
from tests.conftest import TINY_SEARCH, build_tiny


def build_bn_tiny():
    """The tiny teacher with a BatchNorm that is not the identity (`stem.1`: random scale,
    shift and running statistics), so that folding it changes the stem's weight."""
    net = build_tiny()
    generator = torch.Generator().manual_seed(11)
    bn = net.stem[1]
    with torch.no_grad():
        bn.weight.copy_(0.5 + torch.rand(8, generator=generator))
        bn.bias.copy_(0.1 * torch.randn(8, generator=generator))
        bn.running_mean.copy_(0.1 * torch.randn(8, generator=generator))
        bn.running_var.copy_(0.5 + 1.5 * torch.rand(8, generator=generator))
    return net


@pytest.fixture(scope="module")
def run():
    return prepare(
        SearchOptions(**(TINY_SEARCH | {"teacher": "tests.test_calibration:build_bn_tiny"}))
    )


@pytest.fixture(scope="module")
def data(run):
    generator = torch.Generator().manual_seed(5)
    fitted = [run.next_batch(generator)[:2] for _ in range(3)]
    held = [run.next_batch(generator)[:2] for _ in range(2)]
    return fitted, held


def folded_by_hand(teacher_module, path: str) -> torch.Tensor:
    """The teacher conv's weight with its BatchNorm (if any) folded in, computed here."""
    conv = teacher_module.get_submodule(path)
    weight = conv.weight.detach().double()
    if path == "stem.0":
        bn = teacher_module.stem[1]
        scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
        weight = weight * scale.view(-1, 1, 1, 1)
    return weight


def block_matrix(block: LowRankBlock) -> torch.Tensor:
    """expand @ reduce: the block's map as c_out x (c_in*kh*kw), float64."""
    expand = block.expand.weight.detach().double().flatten(1)
    return expand @ block.reduce.weight.detach().double().flatten(1)


def errors_against_teacher(model: DeltaModel, teacher, batches) -> tuple[float, float]:
    """sum |y_hat - y|^2 and sum |y_key - y|^2 over the delta frames, y the teacher module's own
    output (BatchNorm not folded)."""
    own = change = 0.0
    with torch.no_grad():
        for key, frame in batches:
            model.key_frame(key)
            y_hat = model.delta_frame(frame)
            y, y_key = teacher(frame), teacher(key)
            own += float((y_hat.double() - y.double()).square().sum())
            change += float((y_key.double() - y.double()).square().sum())
    model.clear()
    return own, change


def rank_two_spec(run):
    """The spec of the student with `lowrank_r2` on every dense conv, grouped convs `full`."""
    picks = {layer.path: "lowrank_r2" if layer.groups == 1 else "full" for layer in run.layers}
    table = macs_table(run.teacher, run.layers, {p: [n] for p, n in picks.items()}, run.size)
    return make_spec(run.teacher, run.layers, picks, table, run.budget, run.size, run.options, {})


def dense_paths(run) -> set[str]:
    return {layer.path for layer in run.layers if layer.groups == 1}


def perturbed_full_rank(run, *, seed: int, noise: float) -> DeltaModel:
    """Every dense conv at its exact rank, started from its folded weight plus `noise` times the
    weight's spread of Gaussian noise; grouped convs `full`."""
    generator = torch.Generator().manual_seed(seed)

    def make_block(layer, conv):
        weight = conv.weight.detach()
        if layer.groups != 1:
            return build_candidate("full", layer, weight=weight)
        shake = torch.randn(weight.shape, generator=generator) * weight.std()
        name = f"lowrank_r{max_rank('lowrank', layer)}"
        return build_candidate(name, layer, weight=weight + noise * shake)

    return DeltaModel.build(
        run.teacher.module, run.layers, make_block, output_key=run.teacher.output_key
    ).eval()


def test_full_rank_calibration_from_a_perturbed_start_is_the_teacher(run, data):
    """Every dense conv at its exact rank, started from the folded weight plus noise: after
    calibration each block is the teacher's folded conv as a map (to 1e-4), and the student's
    output on delta frames it never saw is the teacher's, to 1e-4 of the teacher's change."""
    fitted, held = data
    model = perturbed_full_rank(run, seed=0, noise=0.5)
    generator = torch.Generator().manual_seed(0)  # the deltas each block is checked on
    own, change = errors_against_teacher(model, run.teacher, held)
    assert change > 0 and own > 1e-2 * change  # far from the teacher before

    report = refit_student(model, fitted)
    assert set(report.layers) == dense_paths(run)
    assert report.skipped == {"dw": "grouped conv"}
    for path, fit in report.layers.items():
        assert fit.after < fit.before and fit.after < 1e-8, path
        block = model.net.get_submodule(path).block
        truth = folded_by_hand(run.teacher.module, path).flatten(1)
        found = block_matrix(block)
        assert float((found - truth).norm() / truth.norm()) < 1e-4, path
        conv = model.net.get_submodule(path).conv  # the model's own folded conv, as a map
        delta = torch.randn(2, conv.in_channels, 16, 24, generator=generator)
        with torch.no_grad():
            expected = F.conv2d(
                delta, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups
            )
            got = block(delta)
        assert float((got - expected).norm() / expected.norm()) < 1e-4, path

    own, change = errors_against_teacher(model, run.teacher, held)
    assert own**0.5 < 1e-4 * change**0.5


def test_low_rank_calibration_lowers_the_output_error(run, data):
    """A searched-style low-rank student (rank 2 on every dense conv, data-aware start, as
    `nas.build_student` makes it): calibrated on some frames, its output error against the
    teacher on those frames drops, and no layer's held-out error grows."""
    fitted, _ = data
    spec = rank_two_spec(run)
    for stats in (None, run.stats):  # plain SVD start, data-aware start
        model = build_student(spec, run.teacher, stats=stats)
        before, change = errors_against_teacher(model, run.teacher, fitted)
        report = refit_student(model, fitted)
        assert set(report.layers) == dense_paths(run)
        for fit in report.layers.values():
            assert fit.after <= fit.before and fit.rank == 2
        assert any(fit.after < fit.before for fit in report.layers.values())
        after, _ = errors_against_teacher(model, run.teacher, fitted)
        assert after < before and change > 0
        assert all(
            isinstance(model.net.get_submodule(path).block, LowRankBlock)
            for path in dense_paths(run)
        )


def _blocks(model: DeltaModel) -> dict[str, dict[str, torch.Tensor]]:
    return {
        layer.path: {k: v.clone() for k, v in conv.block.state_dict().items()}
        for layer, conv in model.delta_convs()
    }


def test_a_refit_that_does_not_generalise_is_not_kept(run):
    """One batch of noise frames and 8 positions per layer (6 to fit, 2 held out): a fit of
    dozens of unknowns from 6 samples follows them, not the layer. Where it does not lower the
    held-out error, the layer keeps its old block bit for bit (and reports after == before);
    where it does, the block is the new one. The rest of the model is untouched."""
    spec = rank_two_spec(run)
    generator = torch.Generator().manual_seed(2)
    batch = tuple(torch.randn(2, 3, 64, 96, generator=generator) for _ in range(2))

    kept_somewhere = refitted_somewhere = False
    for positions in (8, 4096):
        model = build_student(spec, run.teacher)
        old = _blocks(model)
        rest = {k: v.clone() for k, v in model.state_dict().items() if ".block." not in k}
        report = refit_student(model, [batch], positions=positions, seed=0)
        assert set(report.layers) == dense_paths(run)
        new = _blocks(model)
        for path, fit in report.layers.items():
            assert fit.after <= fit.before, path
            if positions == 8:
                assert fit.samples == 6, path
            same = all(torch.equal(old[path][k], new[path][k]) for k in old[path])
            assert same == (fit.after == fit.before), (positions, path, fit)
            kept_somewhere |= positions == 8 and same
            refitted_somewhere |= not same
        for path in set(old) - set(report.layers):  # not refitted: untouched
            assert all(torch.equal(old[path][k], new[path][k]) for k in old[path]), path
        for k, v in model.state_dict().items():
            if ".block." not in k:
                assert torch.equal(rest[k], v), k
    assert kept_somewhere  # the case this test is about happened
    assert refitted_somewhere


def test_calibrated_once_writes_then_reads_back(run, tmp_path, monkeypatch):
    import nas.student.train

    path = tmp_path / "calibrated.pt"
    first = nas.student.train.calibrated_once(
        build_student(rank_two_spec(run), run.teacher, stats=run.stats), run.next_batch, path
    )
    assert path.is_file()
    monkeypatch.setattr(
        nas.student.train, "calibrate_student", lambda *a, **k: pytest.fail("again")
    )
    again = nas.student.train.calibrated_once(
        build_student(rank_two_spec(run), run.teacher, stats=run.stats), run.next_batch, path
    )
    for key, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_a_judge_undoes_the_refit_of_the_layer_that_lowers_it(run, data):
    """With `judge` (the output's score, asked before the first layer and after each refit), a
    layer whose refit lowers the score keeps its old factors, alone: here the judge is scripted
    to fall after the second refitted layer and rise after every other."""
    fitted, _ = data
    model = perturbed_full_rank(run, seed=1, noise=1.0)
    start = {
        path: block_matrix(model.net.get_submodule(path).block).clone() for path in dense_paths(run)
    }
    scores = iter([0.5, 0.6, 0.4, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2])
    asked = []

    def judge():
        asked.append(next(scores))
        return asked[-1]

    report = refit_student(model, fitted, judge=judge)
    refitted = [path for path, fit in report.layers.items() if fit.after < fit.before]
    assert len(refitted) >= 3 and len(asked) == 1 + len(refitted)
    assert report.undone == [refitted[1]]
    for path in refitted:
        now = block_matrix(model.net.get_submodule(path).block)
        assert torch.equal(now, start[path]) == (path == refitted[1]), path
