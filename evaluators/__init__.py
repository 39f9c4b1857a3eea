"""Evaluators: metrics and costs of a model, registered by name.

EVALUATORS.get("cost")(model, input_size=(520, 520))   # {"gflops": ..., "params": ...}
EVALUATORS.get("temporal_consistency")(preds, frames, kind=kind, num_classes=19)  # {"tc": ...}
EVALUATORS.get("recognition")(student_logits, teacher_logits, labels=labels)  # clips x T x C

Accumulators for streams (`update` per frame or pair, then `compute`/`table`: `StreamScores`
gathers agreement, MAE, R and the error against the key frame in one; `Recovered` is R,
the share of the teacher's change since the key frame a student recovers) and the optical flow
helpers the temporal-consistency metric and loss share are exported alongside.
"""

from evaluators import agreement as _agreement
from evaluators import cost as _cost
from evaluators.by_distance import ByDistance
from evaluators.error_vs_key import ErrorVsKey
from evaluators.flow import consistency_mask, dis_flow, sequence_flow, warp, warp_nearest
from evaluators.recognition import ClipRecognition
from evaluators.recovered import Recovered
from evaluators.registry import EVALUATORS
from evaluators.segmentation import SegmentationMetric
from evaluators.stream import StreamScores
from evaluators.temporal import TemporalConsistency

__all__ = [
    "EVALUATORS",
    "ByDistance",
    "ClipRecognition",
    "ErrorVsKey",
    "Recovered",
    "SegmentationMetric",
    "StreamScores",
    "TemporalConsistency",
    "consistency_mask",
    "dis_flow",
    "sequence_flow",
    "warp",
    "warp_nearest",
]

del _agreement, _cost  # imported for their registrations
