"""Held-out scores of a trial's student: agreement, MAE and R, as the student runs in use."""

from __future__ import annotations

import math

import pytest
import torch

from nas.searching.options import SearchOptions
from nas.searching.pipeline import prepare
from nas.spec import load_spec
from nas.student.build import build_student
from nas.student.holdout import held_out_agreement
from tests.conftest import TINY_SEARCH, uniform_spec


@pytest.fixture(scope="module")
def run():
    return prepare(SearchOptions(**(TINY_SEARCH | {"budget": "1TFLOPs"})))


def _scores(run, tmp_path, candidate: str) -> dict[str, float]:
    spec = load_spec(uniform_spec(run, tmp_path / f"{candidate}.json", candidate))
    student = build_student(spec, run.teacher)
    return held_out_agreement(
        run.teacher,
        student,
        run.val.span_frames(),
        interval=3,
        student_size=tuple(spec.input_size),
        device=torch.device("cpu"),
    )


def test_r_is_one_for_the_teacher_and_zero_for_the_key_frame_repeated(run, tmp_path):
    teacher = _scores(run, tmp_path, "full")  # every block the teacher's own conv
    assert teacher["r"] == pytest.approx(1.0, abs=1e-5) and teacher["agreement"] == 1.0
    repeated = _scores(run, tmp_path, "zero")  # no change predicted anywhere
    assert repeated["r"] == pytest.approx(0.0, abs=1e-6)
    assert repeated["frames"] == teacher["frames"] > 0
    cheap = _scores(run, tmp_path, None)  # the cheapest non-zero blocks: somewhere between
    assert math.isfinite(cheap["r"]) and cheap["r"] < 1
