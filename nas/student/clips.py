"""Clips of video for a student: the training and validation clips of a run, batches drawn from
them, and the input-change statistics a student starts from. One recipe for the search, `nas
train` and `nas eval`, so their students see and start from the same data."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from nas.data import ClipSampler, Video, VideoClips, open_videos, split_clips, videos_or_default
from nas.graph.layers import ConvLayer, layer_graph
from nas.spec import Mode, Spec
from nas.student.statistics import InputStats, delta_statistics
from nas.teachers import Teacher
from nas.teachers.base import OutputKind


def video_clips(
    teacher: Teacher,
    video: str | Sequence[str] | None,
    *,
    size: tuple[int, int],
    interval: int,
    max_frames: int | None,
    val_fraction: float,
    draws: int | None = None,
    source: Video | None = None,
) -> tuple[VideoClips, VideoClips]:
    """Training and validation clips of the videos (None: the teacher's default clips), split by
    time per sequence and decoded as they are needed (`nas.data.stream`); labels kept where they
    fit. `draws`: the training pairs that should sweep every training frame once (long videos);
    `source`: the videos opened already."""
    if source is None:
        videos = videos_or_default(video, teacher.output_kind)
        source = open_videos(videos, max_frames=max_frames)
    use_labels = (  # per-pixel labels train per-pixel outputs only
        source.has_labels
        and source.num_classes == teacher.num_classes
        and teacher.output_kind is not OutputKind.IMAGE_LOGITS
    )
    return split_clips(
        source,
        size=size,
        interval=interval,
        val_fraction=val_fraction,
        labels=use_labels,
        draws=draws,
    )


def clip_batches(
    sampler: ClipSampler | VideoClips,
    teacher: Teacher,
    *,
    batch_size: int,
    device: torch.device,
) -> Callable[[torch.Generator], tuple]:
    """A `next_batch(generator)` drawing normalised (key, frame t, labels t) batches."""

    def next_batch(generator: torch.Generator):
        batch = sampler.sample(batch_size, generator=generator)
        labels = batch.labels.to(device) if batch.labels is not None else None
        normalize = teacher.input_spec.normalize
        return normalize(batch.key.to(device)), normalize(batch.frame.to(device)), labels

    return next_batch


def calibration_stats(
    teacher: Teacher,
    layers: list[ConvLayer],
    clips: ClipSampler | VideoClips,
    *,
    batches: int,
    batch_size: int,
    device: torch.device,
    seed: int,
) -> dict[str, InputStats]:
    """Input-change statistics from `batches` training clip batches (empty when 0)."""
    if batches == 0:
        return {}
    generator = torch.Generator().manual_seed(seed + 1)  # apart from the search's draws
    draw = clip_batches(clips, teacher, batch_size=batch_size, device=device)
    pairs = [draw(generator)[:2] for _ in range(batches)]
    return delta_statistics(teacher, teacher.module, layers, pairs, generator=generator)


# Clip batches whose input changes start a student's delta blocks (`start_stats`).
START_BATCHES = 4


def start_stats(
    spec: Spec,
    teacher: Teacher,
    clips: ClipSampler | VideoClips,
    *,
    batch_size: int,
    device: torch.device,
    seed: int,
) -> dict[str, InputStats]:
    """The input-change statistics a spec's student starts from (`build_student(stats=...)`, the
    data-aware SVD), from `START_BATCHES` batches of `clips` at the frames' size: one recipe for
    `nas train` and for the students `nas eval` builds itself, so the two start alike. Empty
    outside delta mode, whose blocks see whole frames, not changes (the plain SVD)."""
    if spec.mode != Mode.DELTA:
        return {}
    size = tuple(spec.teacher_input_size or spec.input_size)
    return calibration_stats(
        teacher,
        layer_graph(teacher.module, size),
        clips,
        batches=START_BATCHES,
        batch_size=batch_size,
        device=device,
        seed=seed,
    )
