"""nas: architecture search for fast video models.

For every conv layer of a trained teacher it searches which cheaper student block should stand
in for it, against a FLOPs or latency budget, and exports the choice as a spec; trainers rebuild
the student from the spec, retrain it and run it on video.

    import nas
    result = nas.search(nas.SearchOptions(teacher="deeplabv3", budget="5GFLOPs"))
    spec = nas.load_spec(result.out / "spec.json")
    student = nas.build_student(spec, nas.load_teacher(spec.teacher.name))
    for step in nas.DeltaRunner(student, interval=spec.keyframe_interval).run(frames): ...
"""

from nas.budget import Budget, CostKind, parse_budget
from nas.cost import CostReport, cost_report, count_macs, count_params
from nas.errors import NasError
from nas.graph import ConvLayer, layer_graph
from nas.hpo import StudyOptions, run_study
from nas.pipeline import RunResult, SearchOptions, search
from nas.runner import DeltaRunner
from nas.spec import Spec, load_spec, save_spec
from nas.student import build_student, load_student_weights, teacher_for
from nas.teachers import TEACHERS, Teacher, load_teacher

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
