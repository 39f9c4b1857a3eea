"""Evaluators: metrics and costs of a model, registered by name.

EVALUATORS.get("cost")(model, input_size=(520, 520))   # {"gflops": ..., "params": ...}
"""

from evaluators import agreement as _agreement
from evaluators import cost as _cost
from evaluators.registry import EVALUATORS

__all__ = ["EVALUATORS"]

del _agreement, _cost  # imported for their registrations
