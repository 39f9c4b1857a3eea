"""The public Python API as the README shows it."""

import torch

import nas


def test_public_names():
    assert callable(nas.search) and nas.search.__module__ == "nas.searching.pipeline"
    for name in nas.__all__:
        assert getattr(nas, name) is not None


def test_readme_flow(tmp_path):
    from tests.conftest import TINY_SEARCH

    result = nas.search(
        nas.SearchOptions(**(TINY_SEARCH | {"budget": "3MFLOPs", "out": str(tmp_path)}))
    )
    spec = nas.load_spec(result.out / "spec.json")
    student = nas.build_student(spec, nas.teacher_for(spec))
    teacher = nas.teacher_for(spec)
    frames = [
        teacher.input_spec.normalize(torch.zeros(1, 3, *spec.input_size) + i) for i in range(4)
    ]
    steps = list(nas.DeltaRunner(student, interval=spec.keyframe_interval).run(frames))
    assert [s.is_key for s in steps] == [True, False, False, True]
    assert steps[0].prediction.shape == (1, teacher.num_classes, *spec.input_size)
