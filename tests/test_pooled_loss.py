"""The pooled training loss (`nas.distill.LossScales`): every batch's errors divided by change
energies measured once over many batches, so that the mean loss over those batches is R's
numerator over its denominator."""

from __future__ import annotations

import pytest
import torch

from nas.distill import LossWeights, delta_losses, measure_scales
from nas.pipeline import SearchOptions, prepare
from nas.spec import load_spec
from nas.student import build_student
from tests.conftest import TINY_SEARCH, uniform_spec


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
