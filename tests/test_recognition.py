"""Clip-level recognition (TSN average consensus) and temporal consistency of image logits,
on small tensors whose expected values are counted by hand."""

import pytest
import torch

from evaluators import EVALUATORS, ClipRecognition, TemporalConsistency
from evaluators.recognition import consensus
from nas.core.errors import NasError
from nas.teachers import OutputKind


def onehot_logits(classes: list[int], num_classes: int, scale: float = 1.0) -> torch.Tensor:
    """Frame logits T x C with `scale` on each frame's class and 0 elsewhere."""
    return torch.nn.functional.one_hot(torch.tensor(classes), num_classes).float() * scale


# One clip where averaging logits and counting votes disagree: two frames say class 0 weakly,
# one says class 1 strongly. Votes: class 0 (2 of 3); mean logits (2/3, 10/3): class 1.
SPLIT_CLIP = torch.tensor([[0.0, 10.0], [1.0, 0.0], [1.0, 0.0]])
TEACHER_CLIP = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])  # class 0 throughout


def test_consensus_averages_logits_not_votes():
    assert torch.allclose(consensus(SPLIT_CLIP), torch.tensor([2 / 3, 10 / 3]))
    assert int(consensus(SPLIT_CLIP).argmax()) == 1
    assert int(SPLIT_CLIP.argmax(1).mode().values) == 0  # what a vote would have said
    result = EVALUATORS.get("recognition")(SPLIT_CLIP, TEACHER_CLIP, labels=0)
    # 2 of 3 frames agree, yet the clip does not: its consensus is class 1
    assert result == {
        "clip_agreement": 0.0,
        "frame_agreement": pytest.approx(2 / 3),
        "clip_accuracy": 0.0,
        "teacher_clip_accuracy": 1.0,
    }


def test_many_clips_with_labels():
    """Four clips of 2 frames over 3 classes (student, teacher, label per clip):

    clip 0: student frames 0,0  -> 0; teacher 0,0 -> 0; label 0: agree, both right; 2 frames agree
    clip 1: student frames 1,2 (2 stronger) -> 2; teacher 2,2 -> 2; label 1: agree, both wrong;
            1 frame agrees
    clip 2: student frames 1,1 -> 1; teacher 2,2 -> 2; label 2: disagree, teacher right; 0 frames
    clip 3: student frames 2,2 -> 2; teacher 2,1 (1 stronger) -> 1; label 2: disagree, student
            right; 1 frame agrees
    clip agreement 2/4, frame agreement 4/8, student accuracy 2/4, teacher accuracy 2/4.
    """
    student = torch.stack(
        [
            onehot_logits([0, 0], 3),
            onehot_logits([1, 2], 3) * torch.tensor([[1.0], [2.0]]),
            onehot_logits([1, 1], 3),
            onehot_logits([2, 2], 3),
        ]
    )
    teacher = torch.stack(
        [
            onehot_logits([0, 0], 3),
            onehot_logits([2, 2], 3),
            onehot_logits([2, 2], 3),
            onehot_logits([2, 1], 3) * torch.tensor([[1.0], [3.0]]),
        ]
    )
    labels = [0, 1, 2, 2]
    expected = {
        "clip_agreement": 0.5,
        "frame_agreement": 0.5,
        "clip_accuracy": 0.5,
        "teacher_clip_accuracy": 0.5,
    }
    assert EVALUATORS.get("recognition")(student, teacher, labels=torch.tensor(labels)) == expected
    # accumulated one clip at a time, labels as ints: the same
    metric = ClipRecognition()
    for s, t, label in zip(student, teacher, labels, strict=True):
        metric.update(s, t, label)
    assert metric.compute() == expected
    assert (metric.clips, metric.frames) == (4, 8)
    # without labels: agreement only
    assert EVALUATORS.get("recognition")(student, teacher) == {
        "clip_agreement": 0.5,
        "frame_agreement": 0.5,
    }


def test_accuracy_counts_labelled_clips_only():
    metric = ClipRecognition()
    metric.update(onehot_logits([1], 2), onehot_logits([1], 2), labels=1)  # right
    metric.update(onehot_logits([0], 2), onehot_logits([1], 2))  # no label: agreement only
    assert metric.compute() == {
        "clip_agreement": 0.5,
        "frame_agreement": 0.5,
        "clip_accuracy": 1.0,
        "teacher_clip_accuracy": 1.0,
    }


def test_frame_agreement_weighs_frames_not_clips():
    """A 1-frame clip that disagrees and a 3-frame clip that agrees: frames 3/4, clips 1/2."""
    metric = ClipRecognition()
    metric.update(onehot_logits([0], 2), onehot_logits([1], 2))
    metric.update(onehot_logits([1, 1, 1], 2), onehot_logits([1, 1, 1], 2))
    assert metric.compute() == {"clip_agreement": 0.5, "frame_agreement": 0.75}


@pytest.mark.parametrize(
    ("student", "teacher", "labels", "message"),
    [
        (torch.zeros(2, 3), torch.zeros(2, 4), None, "expected one shape"),
        (torch.zeros(3), torch.zeros(3), None, "expected per-frame logits of a clip"),
        (torch.zeros(2, 0, 3), torch.zeros(2, 0, 3), None, "expected per-frame logits"),
        (torch.zeros(2, 2, 3), torch.zeros(2, 2, 3), [0], "1 labels for 2 clips"),
        (torch.zeros(2, 3), torch.zeros(2, 3), 3, r"clip label 3: expected classes 0\.\.\.2"),
        (torch.zeros(2, 3), torch.zeros(2, 3), -1, "clip label -1"),
    ],
)
def test_bad_inputs(student, teacher, labels, message):
    with pytest.raises(NasError, match=message):
        ClipRecognition().update(student, teacher, labels)


def test_compute_before_update():
    with pytest.raises(NasError, match="no clips"):
        ClipRecognition().compute()


# --- temporal consistency of image logits -------------------------------------------------------


def test_tc_of_image_logits_is_the_fraction_of_unchanged_top1():
    # top-1 per frame 0, 0, 1, 1, 0: pairs unchanged, changed, unchanged, changed -> 2/4
    logits = onehot_logits([0, 0, 1, 1, 0], 3, scale=2.0) + 0.5
    tc = EVALUATORS.get("temporal_consistency")
    assert tc(logits, None, kind=OutputKind.IMAGE_LOGITS, num_classes=3) == {"tc": 0.5}
    frames = torch.zeros(5, 3, 8, 8, dtype=torch.uint8)  # frames may be given: no flow is run
    assert tc(logits, frames, kind="image_logits", num_classes=3) == {"tc": 0.5}
    # pair by pair, one frame's logits (C) at a time: the same
    metric = TemporalConsistency(OutputKind.IMAGE_LOGITS, 3)
    for t in range(4):
        metric.update(logits[t], logits[t + 1])
    assert metric.scores == [1.0, 0.0, 1.0, 0.0] and metric.compute() == 0.5
    # a constant prediction is perfectly consistent, whatever the logits do around it
    drifting = onehot_logits([2] * 4, 3, scale=5.0) + torch.rand(4, 3)
    assert tc(drifting, None, kind=OutputKind.IMAGE_LOGITS, num_classes=3) == {"tc": 1.0}


def test_tc_of_image_logits_errors():
    metric = TemporalConsistency(OutputKind.IMAGE_LOGITS, 3)
    with pytest.raises(NasError, match="expected one prediction of one shape"):
        metric.update(torch.zeros(2, 3), torch.zeros(3, 3))
    with pytest.raises(NasError, match=r"expected N x C \(image_logits\)"):
        metric.update(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
    tc = EVALUATORS.get("temporal_consistency")
    with pytest.raises(NasError, match="at least 2 frames"):
        tc(torch.zeros(1, 3), None, kind=OutputKind.IMAGE_LOGITS, num_classes=3)
    with pytest.raises(NasError, match="needs the frames"):  # dense kinds still need them
        tc(torch.zeros(2, 3, 16, 16), None, kind=OutputKind.PIXEL_LOGITS, num_classes=3)
    with pytest.raises(NasError, match="needs the frames t and t\\+1"):
        TemporalConsistency(OutputKind.PROB_MAP, 1).update(
            torch.zeros(1, 16, 16), torch.zeros(1, 16, 16)
        )
