"""Clips from video sequences decoded as they are needed, with a bound on the frames held.

    train, val = split_clips(open_videos(["sample:bikes", "clips/"]), size=(520, 520),
                             interval=3, val_fraction=0.2)
    batch = train.sample(8, generator=torch.Generator().manual_seed(0))
    for batch in val.validation_batches(8): ...

A `VideoClips` draws key/frame pairs (1 <= t - key <= K - 1) from one part of each sequence,
its `spans` (the training or the validation part, split by time per sequence). Frames are
fitted to `size` as they are decoded, and indexed as if every sequence's frames were stacked end
to end, so `pairs`, `ranges` and a `ClipBatch`'s indices mean what they mean for a
`ClipSampler` over `load_frames`. Sequence lengths come from the sources without decoding (a
video file's declared frame count, else its packets counted).

What it holds, at most `budget` fitted frames (`held_frames`, `frame_bound`):

- when every span fits in the budget, all of their frames, decoded on first use; draws are then
  exactly a `ClipSampler`'s (uniform over every pair, the same generator calls);
- otherwise, per random stream (each `torch.Generator` passed to `sample`), a window of W_i
  consecutive frames of each sequence (half the budget shared between the sequences, at least K
  frames each), for the two streams used last; an older stream keeps only its positions and
  decodes its windows again when it is used again. Pairs are drawn inside the windows (a
  sequence chosen in proportion to its pairs, then a pair of its window), and each pair drawn
  slides its sequence's window on by `step` frames, starting from a random frame and going
  round to the start of the span at its end: `draws` pairs sweep every span once. A stream's
  draws depend only on its generator: the same seed gives the same batches.

Validation (`validation_batches`, `span_frames`) enumerates each span in order; without the
whole split in memory it decodes the span as it goes, holding one key frame, and seeks to the
span's start (`FrameSequence.frames_from`) rather than decoding what comes before it.
"""

from __future__ import annotations

import bisect
import itertools
import math
import weakref
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence

import torch

from nas.core.errors import NasError
from nas.data.clips import ClipBatch, clip_pairs
from nas.data.frames import IGNORE_INDEX, Frame, FrameSequence, Video
from nas.data.split import split_by_time
from nas.data.transforms import resize_crop

CLIP_MEMORY = 512 * 2**20  # bytes of fitted frames one split may hold by default
STREAMS = 2  # random streams whose windows stay decoded
OPEN_DECODERS = 8  # per stream: windows beyond these reopen (seek) when they move
REOPEN_AFTER = 32  # a window further ahead than this many frames seeks rather than decodes on


def frames_within(memory: int, size: tuple[int, int], *, labels: bool = False) -> int:
    """How many frames of `size` (uint8 RGB, plus a label map) fit in `memory` bytes."""
    per_frame = size[0] * size[1] * (4 if labels else 3)
    return max(1, memory // per_frame)


def split_clips(
    video: Video,
    *,
    size: tuple[int, int],
    interval: int,
    val_fraction: float,
    labels: bool = False,
    budget: int | None = None,
    draws: int | None = None,
) -> tuple[VideoClips, VideoClips]:
    """Training and validation clips of every sequence of `video`, split by time per sequence
    (`split_by_time`, a gap of K frames). `budget`: frames each split may hold (default: those
    in `CLIP_MEMORY`); `draws`: training pairs that should sweep the training frames once."""
    budget = budget or frames_within(CLIP_MEMORY, size, labels=labels)
    train, val = [], []
    for sequence in video.sequences:
        try:
            part = split_by_time(len(sequence), val_fraction, gap=interval)
        except NasError as exc:
            raise NasError(f"'{sequence.name}': {exc}") from None
        train.append(part.train)
        val.append(part.val)
    common = {"size": size, "interval": interval, "labels": labels, "budget": budget}
    return (
        VideoClips(video.sequences, train, **common, draws=draws),
        VideoClips(video.sequences, val, **common),
    )


class VideoClips:
    """Key/frame pairs from `spans[i]` of `sequences[i]`, decoded as needed (module docstring).

    `labels`: batches carry label maps (255 where a frame has none). Holds no random state of
    its own: every random draw uses the generator passed in.
    """

    def __init__(
        self,
        sequences: Sequence[FrameSequence],
        spans: Sequence[range],
        *,
        size: tuple[int, int],
        interval: int,
        labels: bool = False,
        budget: int,
        draws: int | None = None,
    ) -> None:
        if not isinstance(interval, int) or interval < 2:
            raise NasError(
                f"invalid key-frame interval {interval!r}: expected an integer >= 2 (a key frame "
                "and at least one frame predicted from it)"
            )
        if len(spans) != len(sequences):
            raise NasError(f"{len(spans)} spans for {len(sequences)} sequences: expected one each")
        if budget < 1:
            raise NasError(f"invalid frame budget {budget}: expected a positive number of frames")
        self.sequences, self.size, self.interval = tuple(sequences), size, interval
        self.labels, self.budget = labels, budget
        lengths = [len(sequence) for sequence in self.sequences]
        self.offsets = tuple(itertools.accumulate([0, *lengths[:-1]]))
        self.spans = tuple(spans)
        for sequence, span, length in zip(self.sequences, self.spans, lengths, strict=True):
            if span.step != 1 or span.start < 0 or span.stop > length:
                raise NasError(
                    f"frame range {span} does not fit the {length} frames of '{sequence.name}'"
                )
        self.ranges = tuple(
            range(offset + span.start, offset + span.stop)
            for offset, span in zip(self.offsets, self.spans, strict=True)
        )
        self.pairs = clip_pairs(self.ranges, interval)
        if len(self.pairs) == 0:
            raise NasError(
                f"no clip fits in frame ranges {list(self.ranges)}: each range needs at least 2 "
                "frames"
            )
        self._weights = torch.tensor(
            [float(len(clip_pairs([r], interval))) for r in self.ranges], dtype=torch.float64
        )
        total = sum(len(span) for span in self.spans)
        self.resident = total <= budget
        self.windows = _allot([len(s) for s in self.spans], budget // STREAMS, interval)
        self.step = max(1, math.ceil(total / draws)) if draws else 1
        self._stack: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor] | None = None
        self._streams: weakref.WeakKeyDictionary[torch.Generator, _Stream] = (
            weakref.WeakKeyDictionary()
        )
        self._recent: list[weakref.ref[_Stream]] = []

    # --- what is held -------------------------------------------------------------------------

    @property
    def held_frames(self) -> int:
        """Fitted frames held now (the resident stack, or the decoded windows of every stream)."""
        if self._stack is not None:
            return int(self._stack[0].shape[0])
        return sum(stream.held for stream in list(self._streams.values()))

    @property
    def frame_bound(self) -> int:
        """The most frames this may hold, however long the sequences are."""
        if self.resident:
            return sum(len(span) for span in self.spans)
        return STREAMS * sum(self.windows)

    # --- training draws -----------------------------------------------------------------------

    def sample(self, batch_size: int, *, generator: torch.Generator) -> ClipBatch:
        """`batch_size` pairs drawn at random (with replacement), see the module docstring."""
        if batch_size < 1:
            raise NasError(f"invalid batch size {batch_size}: expected a positive integer")
        if self.resident:
            rows = torch.randint(len(self.pairs), (batch_size,), generator=generator)
            return self.batch(self.pairs[rows])
        stream = self._stream(generator)
        chosen = torch.multinomial(self._weights, batch_size, replacement=True, generator=generator)
        drawn = []
        for i in chosen.tolist():
            window = stream.windows[i]
            stream.use(window)
            pairs = window.pairs()
            j, d = pairs[int(torch.randint(len(pairs), (1,), generator=generator))]
            drawn.append((window.items[j], window.items[j + d], self.offsets[i]))
            window.advance(self.step)
        return self._batch(
            [(offset + key[0], offset + t[0]) for key, t, offset in drawn],
            [(key[1], t[1], t[2]) for key, t, _ in drawn],
        )

    def _stream(self, generator: torch.Generator) -> _Stream:
        """The windows of `generator`'s draws (made, at random starts, on its first draw)."""
        stream = self._streams.get(generator)
        if stream is None:
            stream = self._streams[generator] = _Stream(self, generator)
        recent = [ref for ref in self._recent if ref() is not None and ref() is not stream]
        self._recent = [weakref.ref(stream), *recent]
        for ref in self._recent[STREAMS:]:
            if (old := ref()) is not None:
                old.release()
        self._recent = self._recent[:STREAMS]
        return stream

    # --- validation ---------------------------------------------------------------------------

    def validation_pairs(self) -> torch.Tensor:
        """Every (key, t) with keys at each K-th frame of each span: a fixed P x 2 tensor."""
        return clip_pairs(self.ranges, self.interval, key_every=self.interval)

    def validation_batches(self, batch_size: int) -> Iterator[ClipBatch]:
        """`validation_pairs()` in order, `batch_size` at a time (the last batch may be smaller)."""
        if batch_size < 1:
            raise NasError(f"invalid batch size {batch_size}: expected a positive integer")
        if self.resident:
            pairs = self.validation_pairs()
            for start in range(0, len(pairs), batch_size):
                yield self.batch(pairs[start : start + batch_size])
            return
        indices: list[tuple[int, int]] = []
        frames: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
        for i, span in enumerate(self.spans):
            key = None
            for j, (image, label) in enumerate(self._decode(i, span.start, len(span))):
                if j % self.interval == 0:
                    key = (span.start + j, image)
                    continue
                indices.append((self.offsets[i] + key[0], self.offsets[i] + span.start + j))
                frames.append((key[1], image, label))
                if len(indices) == batch_size:
                    yield self._batch(indices, frames)
                    indices, frames = [], []
        if indices:
            yield self._batch(indices, frames)

    def span_frames(self) -> Iterator[Iterator[torch.Tensor]]:
        """Per span, its fitted frames (uint8 3 x H x W) in time order, decoded as iterated."""
        for i, span in enumerate(self.spans):
            yield (image for image, _ in self._frames_of(i, span))

    def _frames_of(self, i: int, span: range) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.resident:
            frames, labels, rows = self._resident()
            for g in range(self.offsets[i] + span.start, self.offsets[i] + span.stop):
                row = int(rows[g])
                yield frames[row], None if labels is None else labels[row]
            return
        yield from self._decode(i, span.start, len(span))

    # --- gathering ----------------------------------------------------------------------------

    def batch(self, pairs: torch.Tensor) -> ClipBatch:
        """Gather the frames (and labels) of the given P x 2 (key, t) pairs."""
        if self.resident:
            frames, labels, rows = self._resident()
            key_index, t_index = pairs[:, 0].contiguous(), pairs[:, 1].contiguous()
            key_rows, t_rows = rows[key_index], rows[t_index]
            batch_labels = labelled = None
            if labels is not None:
                batch_labels = labels[t_rows].long()
                labelled = (batch_labels != IGNORE_INDEX).flatten(1).any(dim=1)
            return ClipBatch(
                key=frames[key_rows],
                frame=frames[t_rows],
                distance=t_index - key_index,
                labels=batch_labels,
                labelled=labelled,
                key_index=key_index,
                t_index=t_index,
            )
        indices = [tuple(pair) for pair in pairs.tolist()]
        gathered = []
        for key, t in indices:
            key_image, _ = self._frame_at(key)
            t_image, t_label = self._frame_at(t)
            gathered.append((key_image, t_image, t_label))
        return self._batch(indices, gathered)

    def _batch(
        self,
        indices: Sequence[tuple[int, int]],
        frames: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]],
    ) -> ClipBatch:
        key_index = torch.tensor([k for k, _ in indices], dtype=torch.int64)
        t_index = torch.tensor([t for _, t in indices], dtype=torch.int64)
        labels = labelled = None
        if self.labels:
            labels = torch.stack([label for _, _, label in frames]).long()
            labelled = (labels != IGNORE_INDEX).flatten(1).any(dim=1)
        return ClipBatch(
            key=torch.stack([key for key, _, _ in frames]),
            frame=torch.stack([frame for _, frame, _ in frames]),
            distance=t_index - key_index,
            labels=labels,
            labelled=labelled,
            key_index=key_index,
            t_index=t_index,
        )

    def _frame_at(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One frame by its stacked index, decoded on its own (seeking where the source can)."""
        i = bisect.bisect_right(self.offsets, index) - 1
        return next(self._decode(i, index - self.offsets[i], 1))

    # --- decoding -----------------------------------------------------------------------------

    def fit(self, frame: Frame) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A decoded frame at `size`: its image and, with `labels`, its label map (255: none)."""
        frame = resize_crop(frame, self.size)
        if not self.labels:
            return frame.image, None
        label = frame.label
        if label is None:
            label = torch.full(self.size, IGNORE_INDEX, dtype=torch.uint8)
        return frame.image, label.to(torch.uint8)

    def _decode(self, i: int, start: int, count: int) -> Iterator[tuple[torch.Tensor, ...]]:
        """`count` fitted frames of sequence i from position `start`; a source that ends early
        is refused (its container declared more frames than it holds)."""
        sequence = self.sequences[i]
        frames = sequence.frames_from(start)
        try:
            for n in range(count):
                frame = next(frames, None)
                if frame is None:
                    raise ended_early(sequence, start + n)
                yield self.fit(frame)
        finally:
            _close(frames)

    def _resident(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Every span's frames stacked (decoded on first use), their labels, and each stacked
        index's row in them (-1: not held)."""
        if self._stack is None:
            total = self.offsets[-1] + len(self.sequences[-1]) if self.sequences else 0
            rows = torch.full((total,), -1, dtype=torch.int64)
            images, labels = [], []
            for i, span in enumerate(self.spans):
                first = self.offsets[i] + span.start
                rows[first : first + len(span)] = torch.arange(len(span)) + len(images)
                for image, label in self._decode(i, span.start, len(span)):
                    images.append(image)
                    labels.append(label)
            stacked_labels = torch.stack(labels) if self.labels else None
            self._stack = (torch.stack(images), stacked_labels, rows)
        return self._stack


def _close(frames: Iterator) -> None:
    """Stop a source's frame iterator now (its file closes), where it can be stopped."""
    close = getattr(frames, "close", None)
    if close is not None:
        close()


def ended_early(sequence: FrameSequence, position: int) -> NasError:
    return NasError(
        f"'{sequence.name}' ended at frame {position}, before the {len(sequence)} frames its "
        "container declares: the file looks truncated, re-encode or re-download it"
    )


def _allot(lengths: Sequence[int], budget: int, least: int) -> list[int]:
    """Window sizes: `budget` frames shared as evenly as the lengths allow, each at least
    min(length, `least`) and at most its length (0 for spans without a pair)."""
    sizes = [0] * len(lengths)
    order = sorted((i for i, n in enumerate(lengths) if n >= 2), key=lambda i: lengths[i])
    left = budget
    for rank, i in enumerate(order):
        share = left // (len(order) - rank)
        sizes[i] = min(lengths[i], max(least, share))
        left = max(0, left - sizes[i])
    return sizes


class _Window:
    """`size` consecutive fitted frames of one span, starting at `first`, slid on through it."""

    def __init__(self, clips: VideoClips, i: int, size: int, first: int) -> None:
        self.clips, self.i, self.size, self.first = clips, i, size, first
        self.span = clips.spans[i]
        self.items: deque[tuple[int, torch.Tensor, torch.Tensor | None]] = deque()
        self.next = first  # the position the open decoder yields next
        self._frames: Iterator[Frame] | None = None

    @property
    def is_open(self) -> bool:
        return self._frames is not None

    def _pull(self) -> Frame:
        sequence = self.clips.sequences[self.i]
        if self._frames is None:
            self._frames = sequence.frames_from(self.next)
        frame = next(self._frames, None)
        if frame is None:
            raise ended_early(sequence, self.next)
        self.next += 1
        return frame

    def fill(self) -> None:
        """Decode the window's frames that are not held (after a move or a release)."""
        while len(self.items) < self.size:
            position = self.first + len(self.items)
            if self.next != position:
                self.close()
                self.next = position
            self.items.append((position, *self.clips.fit(self._pull())))

    def pairs(self) -> list[tuple[int, int]]:
        """(j, d): the held pairs, as the key's place in `items` and t - key."""
        n = len(self.items)
        return [(j, d) for j in range(n - 1) for d in range(1, min(self.clips.interval, n - j))]

    def advance(self, frames: int) -> None:
        """Slide on by `frames`; past the span's end, start again from its start."""
        starts = len(self.span) - self.size + 1  # where a window may start
        first = self.span.start + (self.first - self.span.start + frames) % starts
        if first == self.first:
            return
        if first > self.first and first - self.first < self.size:  # overlaps: slide
            for _ in range(first - self.first):
                self.items.popleft()
        else:
            self.items.clear()
            ahead = first - self.next
            if self._frames is not None and 0 <= ahead <= REOPEN_AFTER:
                for _ in range(ahead):  # decode on rather than seek
                    self._pull()
        self.first = first
        self.fill()

    def close(self) -> None:
        """Close the decoder (the window reopens it where it left off when it moves)."""
        if self._frames is not None:
            _close(self._frames)
            self._frames = None

    def release(self) -> None:
        """Drop the frames held and the decoder; `fill` decodes them again."""
        self.items.clear()
        self.close()


class _Stream:
    """The windows of one generator's draws, at random starts drawn from it."""

    def __init__(self, clips: VideoClips, generator: torch.Generator) -> None:
        self.windows: list[_Window | None] = []
        for i, (span, size) in enumerate(zip(clips.spans, clips.windows, strict=True)):
            if size < 2:
                self.windows.append(None)
                continue
            starts = len(span) - size + 1
            first = span.start + int(torch.randint(starts, (1,), generator=generator))
            self.windows.append(_Window(clips, i, size, first))
        self._open: OrderedDict[int, _Window] = OrderedDict()

    @property
    def held(self) -> int:
        return sum(len(w.items) for w in self.windows if w is not None)

    def use(self, window: _Window) -> None:
        """Make `window` whole, keeping at most `OPEN_DECODERS` of this stream's decoders open."""
        window.fill()
        self._open[window.i] = window
        self._open.move_to_end(window.i)
        while len(self._open) > OPEN_DECODERS:
            _, oldest = self._open.popitem(last=False)
            oldest.close()

    def release(self) -> None:
        for window in self.windows:
            if window is not None:
                window.release()
        self._open.clear()
