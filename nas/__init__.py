"""nas: architecture search for fast video models.

For every conv layer of a trained teacher it searches which cheaper student block should stand
in for it, against a FLOPs or latency budget, and exports the choice as a spec.
"""

from nas.budget import Budget, CostKind, parse_budget
from nas.cost import CostReport, cost_report, count_macs, count_params
from nas.errors import NasError
from nas.graph import ConvLayer, layer_graph
from nas.teachers import TEACHERS, Teacher, load_teacher

__all__ = [
    "TEACHERS",
    "Budget",
    "ConvLayer",
    "CostKind",
    "CostReport",
    "NasError",
    "Teacher",
    "cost_report",
    "count_macs",
    "count_params",
    "layer_graph",
    "load_teacher",
    "parse_budget",
]
