"""nas: architecture search for fast video models.

For every conv layer of a trained teacher it searches which cheaper student block should stand
in for it, against a FLOPs or latency budget, and exports the choice as a spec; trainers rebuild
the student from the spec, retrain it and run it on video.

    import nas
    result = nas.search(nas.SearchOptions(teacher="deeplabv3", budget="5GFLOPs"))
    spec = nas.load_spec(result.out / "spec.json")
    student = nas.build_student(spec, nas.load_teacher(spec.teacher.name))
    for step in nas.DeltaRunner(student, interval=spec.keyframe_interval).run(frames): ...

The package is cut by stage of the pipeline, each importing only from those before it (a
contract `make lint` checks): `core`, `data`, `teachers`, `graph`, `cost`, `spec`, `delta`,
`student`, `searching`, `study`, `dashboard`, `cli`. The names below are looked up on first use,
so `import nas` loads none of them (nor Optuna, Plotly or torchvision) until then.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# name -> the module that defines it
_EXPORTS = {
    "TEACHERS": "nas.teachers",
    "Teacher": "nas.teachers",
    "load_teacher": "nas.teachers",
    "Budget": "nas.cost.budget",
    "CostKind": "nas.cost.budget",
    "parse_budget": "nas.cost.budget",
    "CostReport": "nas.cost.macs",
    "cost_report": "nas.cost.macs",
    "count_macs": "nas.cost.macs",
    "count_params": "nas.cost.macs",
    "NasError": "nas.core.errors",
    "ConvLayer": "nas.graph.layers",
    "layer_graph": "nas.graph.layers",
    "StudyOptions": "nas.study.hpo",
    "run_study": "nas.study.hpo",
    "RunResult": "nas.searching.pipeline",
    "SearchOptions": "nas.searching.options",
    "search": "nas.searching.pipeline",
    "DeltaRunner": "nas.delta.runner",
    "Spec": "nas.spec",
    "load_spec": "nas.spec",
    "save_spec": "nas.spec",
    "build_student": "nas.student.build",
    "load_student_weights": "nas.student.build",
    "teacher_for": "nas.student.build",
}

__all__ = [
    "TEACHERS",
    "Budget",
    "ConvLayer",
    "CostKind",
    "CostReport",
    "DeltaRunner",
    "NasError",
    "RunResult",
    "SearchOptions",
    "Spec",
    "StudyOptions",
    "Teacher",
    "build_student",
    "cost_report",
    "count_macs",
    "count_params",
    "layer_graph",
    "load_spec",
    "load_student_weights",
    "load_teacher",
    "parse_budget",
    "run_study",
    "save_spec",
    "search",
    "teacher_for",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nas' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from nas.core.errors import NasError
    from nas.cost.budget import Budget, CostKind, parse_budget
    from nas.cost.macs import CostReport, cost_report, count_macs, count_params
    from nas.delta.runner import DeltaRunner
    from nas.graph.layers import ConvLayer, layer_graph
    from nas.searching.options import SearchOptions
    from nas.searching.pipeline import RunResult, search
    from nas.spec import Spec, load_spec, save_spec
    from nas.student.build import build_student, load_student_weights, teacher_for
    from nas.study.hpo import StudyOptions, run_study
    from nas.teachers import TEACHERS, Teacher, load_teacher
