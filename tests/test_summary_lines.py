"""What the search's summary says of R's zero and of the delta form (`nas.cli.study`)."""

from __future__ import annotations

from types import SimpleNamespace

from nas.cli import study


def _said(capsys, call) -> str:
    call()
    return " ".join(capsys.readouterr().out.split())


def test_r_zero_is_named(capsys):
    """Delta mode: R's zero is the repeated key frame; per-frame modes: the low-res teacher."""
    base = {
        "heldout_r": 0.5,
        "heldout_agreement": 0.9,
        "baseline_repeat_r": 0.1,
        "baseline_repeat_agreement": 0.8,
        "baseline_repeat_interval": 2.0,
        "baseline_lowres_r": 0.2,
        "baseline_lowres_agreement": 0.85,
        "baseline_lowres_h": 96.0,
        "baseline_lowres_w": 128.0,
    }
    delta = _said(capsys, lambda: study._print_baselines(base | {"baseline_r_reference": 0.0}))
    assert "(R: 0 is repeating the key frame, 1 the teacher)" in delta
    per_frame = _said(capsys, lambda: study._print_baselines(base | {"baseline_r_reference": 1.0}))
    assert "(R: 0 is the teacher at 96x128, 1 the teacher)" in per_frame


def test_delta_form_is_named(capsys):
    """The speed line names the form shipped, and what the other measured or why it was not."""
    timing = {"amortised_ms": 10.0, "teacher_ms": 15.0, "speedup": 1.5, "speedup_share": 0.9}
    totals = SimpleNamespace(teacher_macs=2e9, amortised_macs=1e9)

    def spec(form: str, **metrics):
        return SimpleNamespace(delta_form=form, totals=totals, metrics=timing | metrics)

    linear = spec("linear", speedup_recurrence=1.2, speedup_linear=1.5, linear_form_fits=1.0)
    said = _said(capsys, lambda: study._print_speedup(linear))
    assert "(delta frames in the linear form; the recurrence 1.20x)" in said
    timed = spec("recurrence", speedup_recurrence=1.5, speedup_linear=1.3, linear_form_fits=1.0)
    said = _said(capsys, lambda: study._print_speedup(timed))
    assert "(delta frames in the recurrence form; the linear form 1.30x)" in said
    over = spec("recurrence", speedup_recurrence=1.5, linear_form_fits=0.0)
    said = _said(capsys, lambda: study._print_speedup(over))
    assert "the linear form's key frames would go over the budget" in said
