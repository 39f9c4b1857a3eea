"""The training recipe's safeguards (`nas.student.train`): the pooled loss
(`nas.student.losses.LossScales`), whose mean over the batches its scales were measured on is R's
numerator over its denominator; the weights kept are those of the best validation R; a calibration
that lowers the output's R is undone."""

from __future__ import annotations

import pytest
import torch

import nas.student.refit
import nas.student.train
from nas.graph.layers import layer_graph
from nas.searching.options import SearchOptions
from nas.searching.pipeline import prepare
from nas.spec import load_spec
from nas.student.build import build_student, load_student_weights
from nas.student.losses import LossWeights, batches_r, delta_losses, measure_scales
from nas.student.train import (
    TrainConfig,
    calibrate_student,
    train_student,
    trainable,
    trained_blocks,
)
from search_spaces import FullBlock, balance_factors, build_candidate
from tests.conftest import TINY_SEARCH, build_tiny, uniform_spec


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    run = prepare(SearchOptions(**TINY_SEARCH))
    spec = uniform_spec(run, tmp_path_factory.mktemp("pooled") / "spec.json", None)
    student = build_student(load_spec(spec), run.teacher, stats=run.stats)
    generator = torch.Generator().manual_seed(3)
    batches = [run.next_batch(generator) for _ in range(4)]
    return run, student, batches


def test_scales_are_the_mean_change_energies_by_hand(setup):
    run, student, batches = setup
    scales = measure_scales(student, batches)
    with torch.no_grad():
        by_hand = [
            float((run.teacher.module(x_t) - run.teacher.module(x_key)).pow(2).mean())
            for x_key, x_t, _ in batches
        ]
    assert scales.output == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-5)
    assert len(scales.layers) == len(list(student.delta_convs()))
    assert all(s > 0 for s in scales.layers)
    assert all(conv.z_key is None for _, conv in student.delta_convs())  # left cleared


def test_one_minus_the_mean_pooled_loss_is_r(setup):
    """Over the batches the scales were measured on (equal sizes), 1 - mean output loss equals
    R = 1 - sum|y_hat - y|^2 / sum|y_key - y|^2, computed by hand from the teacher and the
    student's own outputs; the per-batch loss does not."""
    run, student, batches = setup
    scales = measure_scales(student, batches)
    pooled, per_batch, errors, changes = [], [], 0.0, 0.0
    for batch in batches:  # as training runs it (with gradients: teacher forcing needs them)
        for scaled, into in ((scales, pooled), (None, per_batch)):
            student.clear()
            _, parts = delta_losses(student, batch, run.teacher.output_kind, LossWeights(), scaled)
            into.append(float(parts["output_loss"].detach()))
    with torch.no_grad():
        for x_key, x_t, _ in batches:
            student.clear()
            student.key_frame(x_key)
            y_hat = student.delta_frame(x_t)
            y, y_key = run.teacher.module(x_t), run.teacher.module(x_key)
            errors += float((y_hat - y).pow(2).sum())
            changes += float((y_key - y).pow(2).sum())
    student.clear()
    r = 1 - errors / changes
    assert 0.05 < r < 0.999  # a student that predicts some, not all, of the change
    assert 1 - sum(pooled) / len(pooled) == pytest.approx(r, abs=1e-5)
    assert abs(1 - sum(per_batch) / len(per_batch) - r) > 1e-3


def _weights(student) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in student.state_dict().items()}


@pytest.mark.parametrize("trend", ["falls", "rises"])
def test_training_keeps_the_weights_of_the_best_validation_r(setup, tmp_path, trend):
    """With a validation R that only falls after the start, the weights written are the
    start's; with one that rises, the last step's."""
    run, student, _ = setup
    start = _weights(student)
    calls = []

    def validate(model) -> float:
        calls.append(_weights(model))
        return 1.0 - len(calls) if trend == "falls" else float(len(calls))

    path = train_student(
        student,
        run.teacher,
        run.next_batch,
        out=tmp_path,
        config=TrainConfig(steps=4, lr=1e-2, checkpoint_every=2),
        validate=validate,
        eval_every=2,
    )
    assert len(calls) == 3  # before the first step (factors balanced), after steps 2 and 4
    saved = torch.load(path, weights_only=True)
    expected = calls[0] if trend == "falls" else calls[-1]
    assert all(torch.equal(saved[k], expected[k]) for k in expected)
    assert any(not torch.equal(calls[-1][k], start[k]) for k in start)  # training moved it
    load_student_weights(student, path)
    student.load_state_dict(start)  # the module-scoped student, as it came


def test_a_calibration_that_lowers_the_output_r_is_undone(setup, monkeypatch):
    """The refit is judged by the output's R on further batches: made to lower it (here, by a
    refit that scales every block's output down), it is undone; one that does not is kept."""
    run, student, _ = setup
    start = _weights(student)

    def harmful(model, batches, *, seed, judge=None):
        with torch.no_grad():
            for _, conv in model.delta_convs():
                for p in conv.block.parameters():
                    p.mul_(0.3)
        return nas.student.refit.RefitReport()

    monkeypatch.setattr(nas.student.train, "refit_student", harmful)
    undone = calibrate_student(student, run.next_batch)
    assert not undone.kept and undone.r_after < undone.r_before
    assert all(torch.equal(student.state_dict()[k], start[k]) for k in start)
    assert "undone" in undone.summary
    monkeypatch.undo()
    kept = calibrate_student(student, run.next_batch)
    assert kept.kept and kept.r_after >= kept.r_before
    generator = torch.Generator().manual_seed(7)
    checks = [run.next_batch(generator) for _ in range(16 + 8)][16:]
    assert batches_r(student, checks) == pytest.approx(kept.r_after)
    student.load_state_dict(start)


@pytest.mark.parametrize("candidate", ["lowrank_r3", "sep_r3", "down2_lowrank_r3", "down2_sep_r3"])
def test_balancing_keeps_the_map_and_evens_the_factors(candidate):
    """`balance_factors` on a block whose first factor is 1e-3 of its size and second 1e3
    times: the same output (1e-5), and every intermediate channel's in- and outgoing norms
    equal."""
    layer = layer_graph(build_tiny(), (32, 48))[2]  # a dense 3x3 conv
    block = build_candidate(candidate, layer)
    first, second = block.factors()
    with torch.no_grad():
        first.weight.mul_(1e-3)
        second.weight.mul_(1e3)
    x = torch.randn(2, layer.c_in, 16, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = block(x)
        assert balance_factors(block)
        after = block(x)
    assert torch.allclose(after, before, rtol=1e-5, atol=1e-5 * float(before.abs().max()))
    inward = first.weight.flatten(1).norm(dim=1)
    outward = second.weight.transpose(0, 1).flatten(1).norm(dim=1)
    assert torch.allclose(inward, outward, rtol=1e-5)
    assert not balance_factors(build_candidate("full", layer))


def test_full_blocks_are_not_trained(setup, tmp_path):
    """A `full` layer reruns the teacher's conv at inference: its block's weights never train
    (they would make the model trained differ from the one run)."""
    run, _, _ = setup
    spec = load_spec(uniform_spec(run, tmp_path / "spec.json", None))
    layers = [
        layer.model_copy(update={"candidate": "full"}) if i % 2 else layer
        for i, layer in enumerate(spec.layers)
    ]
    student = build_student(spec.model_copy(update={"layers": layers}), run.teacher)
    blocks = [conv.block for _, conv in student.delta_convs()]
    full = [block for block in blocks if isinstance(block, FullBlock)]
    others = trained_blocks(student)
    assert full and others and len(full) + len(others) == len(blocks)
    trained = {id(p) for p in trainable(student, finetune=False)}
    assert all(id(p) in trained for block in others for p in block.parameters())
    assert all(id(p) not in trained for block in full for p in block.parameters())


def test_validation_weighs_every_clip_the_same(setup, tmp_path):
    """`held_out_r` is the mean of each held-out clip's own R, not R pooled over the clips: a
    clip whose output barely changes counts as much as one that moves."""
    from nas.student.holdout import held_out_agreement
    from nas.student.train import VALIDATION_FRAMES, held_out_r

    run, student, _ = setup
    spec = load_spec(uniform_spec(run, tmp_path / "spec.json", None))
    moving = [frame.clone() for frame in next(iter(run.val.span_frames()))]
    generator = torch.Generator().manual_seed(0)
    still = [
        (moving[0].float() + torch.randint(-2, 3, moving[0].shape, generator=generator))
        .clamp(0, 255)
        .to(torch.uint8)
        for _ in moving
    ]

    class Clips:
        def span_frames(self):
            return (iter(frames) for frames in (moving, still))

    def r_of(spans):
        return held_out_agreement(
            run.teacher, student, spans, interval=spec.keyframe_interval,
            student_size=tuple(spec.input_size), device=torch.device("cpu"),
        )["r"]  # fmt: skip

    each = [r_of([frames[:VALIDATION_FRAMES]]) for frames in (moving, still)]
    pooled = r_of([moving[:VALIDATION_FRAMES], still[:VALIDATION_FRAMES]])
    found = held_out_r(run.teacher, Clips(), spec, device=torch.device("cpu"))(student)
    assert found == pytest.approx(sum(each) / 2, abs=1e-9)
    assert abs(found - pooled) > 1e-3  # the still clip would barely count, pooled
