"""A video file decoded with PyAV (FFmpeg), frame by frame as it is iterated.

Frames are numbered in presentation order, from 0. `frames_from(n)` seeks: it finds the key
frame at or before frame n in an index of the file's packets (read once, without decoding) and
decodes from there, so reaching the end of a long video costs one group of pictures, not the
whole file. Files whose packets carry no timestamps are decoded from the start instead.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import av
import torch

from nas.core.errors import NasError
from nas.data.frames import Frame, FrameSequence, error_text


@dataclass(frozen=True)
class PacketIndex:
    """Presentation timestamps of a stream's packets: `ranks` maps a timestamp to its frame
    number, `keys` are the key frames' timestamps, sorted."""

    ranks: dict[int, int]
    order: tuple[int, ...]  # timestamps in presentation order
    keys: tuple[int, ...]

    def seek_point(self, number: int) -> int | None:
        """The timestamp of the last key frame at or before frame `number` (None: none)."""
        at = bisect.bisect_right(self.keys, self.order[number]) - 1
        return self.keys[at] if at >= 0 else None


@contextmanager
def _reading(path: Path, doing: str) -> Iterator[None]:
    """Turns a library error while `doing` into a one-line `NasError` naming the file."""
    try:
        yield
    except (av.FFmpegError, OSError) as error:
        raise NasError(
            f"cannot read video '{path}' while {doing}: {error_text(error)}; the file looks "
            "truncated or corrupt, re-encode or re-download it"
        ) from error


class VideoFile(FrameSequence):
    """The first video stream of a file; opening it checks that FFmpeg can read the container
    and decode its first frame.

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
                first = next(container.decode(stream), None)
        except (av.FFmpegError, OSError) as error:
            raise NasError(
                f"cannot decode video '{path}': {error_text(error)}; expected a video file that "
                "FFmpeg can read (the file may be corrupt or truncated)"
            ) from error
        if first is None:
            raise NasError(
                f"cannot decode video '{path}': it has no decodable frame; expected a video file "
                "that FFmpeg can read (the file may be corrupt or truncated)"
            )

    def __iter__(self) -> Iterator[Frame]:
        return self.frames_from(0)

    def __len__(self) -> int:
        """Frames kept out of the container's declared count (else its packets, counted)."""
        return len(self.selected(self.declared_frames or self.packet_count))

    @cached_property
    def packet_count(self) -> int:
        """The stream's packets, counted by reading the file without decoding it."""
        index = self.index
        if index is not None:
            return len(index.order)
        with _reading(self.path, "counting its frames"), av.open(str(self.path)) as container:
            return sum(1 for p in container.demux(container.streams.video[0]) if p.size)

    @cached_property
    def index(self) -> PacketIndex | None:
        """Where `frames_from` seeks to; None when some packet has no timestamp."""
        order: list[int] = []
        keys: list[int] = []
        with _reading(self.path, "indexing its frames"), av.open(str(self.path)) as container:
            for packet in container.demux(container.streams.video[0]):
                if not packet.size:  # the demuxer's final empty packet
                    continue
                if packet.pts is None:
                    return None
                order.append(packet.pts)
                if packet.is_keyframe:
                    keys.append(packet.pts)
        order.sort()
        if not keys or len(set(order)) != len(order):
            return None
        ranks = {pts: number for number, pts in enumerate(order)}
        return PacketIndex(ranks, tuple(order), tuple(sorted(keys)))

    def frames_from(self, start: int) -> Iterator[Frame]:
        first = start * self.stride  # the file's frame number of position `start`
        if self.max_frames is not None and start >= self.max_frames:
            return
        number = first - 1
        kept = start
        try:
            for number, frame in self._numbered(first):
                if number < first or number % self.stride:
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

    def _numbered(self, first: int) -> Iterator[tuple[int, av.VideoFrame]]:
        """(frame number, frame) from a key frame at or before frame `first` on."""
        index = self.index if first > 0 else None
        if index is not None and first >= len(index.order):
            return
        point = index.seek_point(first) if index is not None else None
        if point is not None:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                container.seek(point, stream=stream, backward=True, any_frame=False)
                frames = container.decode(stream)
                head = next(frames, None)
                number = -1 if head is None else index.ranks.get(head.pts, first + 1)
                if 0 <= number <= first:  # the seek landed where the index says
                    yield number, head
                    for frame in frames:
                        number = index.ranks.get(frame.pts, number + 1)
                        yield number, frame
                    return
        with av.open(str(self.path)) as container:  # no index, or the seek missed: count
            yield from enumerate(container.decode(container.streams.video[0]))
