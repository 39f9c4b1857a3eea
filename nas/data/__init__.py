"""Video data: sources of frames (and labels), fitting to an input size, time splits, clips.

    video = open_videos(["sample:bikes", "clips/"], max_frames=120)  # or synthetic, globs, ...
    train, val = split_clips(video, size=(520, 520), interval=3, val_fraction=0.2)
    batch = train.sample(8, generator=torch.Generator().manual_seed(0))  # decoded as needed

or, with every frame in memory (small clips, tests, benchmarks):

    stack = load_frames(video, size=(520, 520))               # uint8 T x 3 x H x W in memory
    train, val = split_sequences(stack.sequences, 0.2, gap=3) # by time, never random frames
    sampler = ClipSampler(stack.frames, interval=3, ranges=train, labels=stack.labels)

The string grammar of `open_video` is documented in `nas.data.resolve`; what `split_clips`
holds in memory in `nas.data.stream`.
"""

from nas.data.cityscapes import (
    CITYSCAPES_CLASSES,
    LABEL_ID_TO_TRAIN_ID,
    CityscapesSequence,
    open_cityscapes,
    to_train_ids,
)
from nas.data.clips import ClipBatch, ClipSampler, clip_pairs
from nas.data.frames import IGNORE_INDEX, Frame, FrameSequence, Video
from nas.data.image_folder import ImageFolder
from nas.data.resolve import open_video, open_videos
from nas.data.samples import (
    SAMPLES,
    default_videos,
    open_sample,
    sample_path,
    videos_or_default,
)
from nas.data.split import TimeSplit, split_by_time, split_sequences
from nas.data.stack import FrameStack, load_frames
from nas.data.stream import VideoClips, split_clips
from nas.data.synthetic import SYNTHETIC_CLASSES, MovingShape, SyntheticVideo, open_synthetic
from nas.data.transforms import cover_size, resize_crop, resize_crop_frames, resize_crop_labels
from nas.data.video_file import VideoFile

__all__ = [
    "CITYSCAPES_CLASSES",
    "IGNORE_INDEX",
    "LABEL_ID_TO_TRAIN_ID",
    "SAMPLES",
    "SYNTHETIC_CLASSES",
    "CityscapesSequence",
    "ClipBatch",
    "ClipSampler",
    "Frame",
    "FrameSequence",
    "FrameStack",
    "ImageFolder",
    "MovingShape",
    "SyntheticVideo",
    "TimeSplit",
    "Video",
    "VideoClips",
    "VideoFile",
    "clip_pairs",
    "cover_size",
    "default_videos",
    "load_frames",
    "open_cityscapes",
    "open_sample",
    "open_synthetic",
    "open_video",
    "open_videos",
    "resize_crop",
    "resize_crop_frames",
    "resize_crop_labels",
    "sample_path",
    "split_by_time",
    "split_clips",
    "split_sequences",
    "to_train_ids",
    "videos_or_default",
]
