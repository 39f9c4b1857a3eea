"""The spec: JSON round trip, validation errors that name the field, atomic writes."""

import json

import pytest

from nas.core.errors import NasError
from nas.spec import (
    BudgetRef,
    LayerShape,
    Spec,
    SpecLayer,
    TeacherRef,
    Totals,
    load_spec,
    save_spec,
)


def _spec(**overrides) -> Spec:
    shape = LayerShape(
        c_in=3, c_out=8, kernel=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1),
        groups=1, in_hw=(64, 96), out_hw=(32, 48), bn_folded=True,
    )  # fmt: skip
    fields = dict(
        teacher=TeacherRef(
            name="t", weights_id="init:seed=0", num_classes=3, output_kind="pixel_logits"
        ),
        input_size=(64, 96),
        mode="delta",
        keyframe_interval=3,
        budget=BudgetRef(kind="macs", value=5e9, text="5GFLOPs"),
        layers=[SpecLayer(path="stem.0", shape=shape, candidate="sep_r4", macs=1234, params=96)],
        totals=Totals(teacher_macs=10, delta_frame_macs=2, amortised_macs=4.67, student_params=96),
        search={"steps": 6, "lr_arch": 0.05},
        seed=7,
        metrics={"val_agreement": 0.9},
    )
    fields.update(overrides)
    return Spec(**fields)


def test_round_trip_unchanged(tmp_path):
    spec = _spec()
    path = save_spec(spec, tmp_path / "spec.json")
    loaded = load_spec(path)
    assert loaded == spec
    assert loaded.to_json() == path.read_text()
    assert json.loads(path.read_text())["format"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["spec.json"]


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["layers"][0].update(candidate="sep_rx"), "layers.0.candidate"),
        (lambda d: d["layers"][0].update(macs=-1), "layers.0.macs"),
        (lambda d: d.pop("teacher"), "teacher"),
        (lambda d: d.update(mode="turbo"), "mode"),
        (lambda d: d.update(keyframe_interval=0), "keyframe_interval"),
        (lambda d: d["budget"].update(kind="joules"), "budget.kind"),
        (lambda d: d.update(surprise=1), "surprise"),
    ],
)
def test_invalid_fields_are_named(tmp_path, edit, field):
    data = json.loads(_spec().to_json())
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(NasError) as info:
        load_spec(path)
    message = str(info.value)
    assert f"is invalid: {field}:" in message and "\n" not in message


def test_bad_files(tmp_path):
    with pytest.raises(NasError, match="does not exist"):
        load_spec(tmp_path / "none.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(NasError, match="not readable JSON"):
        load_spec(tmp_path / "x.json")
    data = json.loads(_spec().to_json()) | {"format": 2}
    (tmp_path / "v2.json").write_text(json.dumps(data))
    with pytest.raises(NasError, match="has format 2; this nas reads 1"):
        load_spec(tmp_path / "v2.json")
