"""A video file decoded with PyAV (FFmpeg), frame by frame as it is iterated."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import torch

from nas.data.frames import Frame, FrameSequence, error_text
from nas.errors import NasError


class VideoFile(FrameSequence):
    """The first video stream of a file; opening it checks that FFmpeg can read the container.

    Decoding is streamed: only the frames kept by `stride` and `max_frames` are converted to
    RGB, and decoding stops after the last one is kept. A file that turns out to be truncated
    or corrupt part way raises `NasError` while iterating.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        max_frames: int | None = None,
        stride: int = 1,
    ) -> None:
        super().__init__(name or str(path), max_frames=max_frames, stride=stride)
        self.path = Path(path)
        if not self.path.is_file():
            raise NasError(f"video file '{path}' not found: expected an existing video file")
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise NasError(
                        f"'{path}' has no video stream: expected a video file (e.g. .mp4, .mkv)"
                    )
                stream = container.streams.video[0]
                self.height, self.width = stream.height, stream.width
                self.declared_frames = int(stream.frames or 0)  # 0 where the container omits it
        except (av.FFmpegError, OSError) as error:
            raise NasError(
                f"cannot decode video '{path}': {error_text(error)}; expected a video file that "
                "FFmpeg can read (the file may be corrupt or truncated)"
            ) from error

    def __iter__(self) -> Iterator[Frame]:
        number = -1
        kept = 0
        try:
            with av.open(str(self.path)) as container:
                for number, frame in enumerate(container.decode(video=0)):
                    if number % self.stride:
                        continue
                    rgb = torch.from_numpy(frame.to_ndarray(format="rgb24"))
                    yield Frame(rgb.permute(2, 0, 1).contiguous(), None, number)
                    kept += 1
                    if kept == self.max_frames:
                        return
        except (av.FFmpegError, OSError) as error:
            raise NasError(
                f"cannot decode video '{self.path}' at frame {number + 1}: {error_text(error)}; "
                "the file looks truncated or corrupt, re-encode or re-download it"
            ) from error
