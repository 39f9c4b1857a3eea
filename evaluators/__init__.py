"""Evaluators: metrics and costs of a model, registered by name.

EVALUATORS.get("cost")(model, input_size=(520, 520))   # {"gflops": ..., "params": ...}
EVALUATORS.get("temporal_consistency")(preds, frames, kind=kind, num_classes=19)  # {"tc": ...}

Accumulators for streams (`update` per frame or pair, then `compute`/`table`) and the optical
flow helpers the temporal-consistency metric and loss share are exported alongside.
"""

from evaluators import agreement as _agreement
from evaluators import cost as _cost
from evaluators.by_distance import ByDistance
from evaluators.flow import consistency_mask, dis_flow, sequence_flow, warp, warp_nearest
from evaluators.registry import EVALUATORS
from evaluators.segmentation import SegmentationMetric
from evaluators.temporal import TemporalConsistency

__all__ = [
    "EVALUATORS",
    "ByDistance",
    "SegmentationMetric",
    "TemporalConsistency",
    "consistency_mask",
    "dis_flow",
    "sequence_flow",
    "warp",
    "warp_nearest",
]

del _agreement, _cost  # imported for their registrations
