"""Cityscapes video sequences, with fine labels on the frames that have them.

Layout under ROOT (the official `leftImg8bit_sequence` and `gtFine` packages unpacked side by side):

    ROOT/leftImg8bit_sequence/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png
    ROOT/gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png   (some frames)

e.g. `frankfurt_000000_000294_leftImg8bit.png`. Frames are grouped into sequences by (city, seq)
and ordered by frame number; a jump in frame numbers starts a new sequence, so consecutive frames
of a sequence are always consecutive in time. Label ids are mapped to the 19 train ids of the
benchmark (`CITYSCAPES_CLASSES`); every other id becomes 255 (ignore).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import torch

from nas.core.errors import NasError
from nas.data.frames import IGNORE_INDEX, Frame, FrameSequence, Video
from nas.data.images import read_image, read_label_ids

CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

# Cityscapes label id -> train id for the 19 evaluated classes (ids 7..33); all others ignored.
LABEL_ID_TO_TRAIN_ID = {
    7: 0,  # road
    8: 1,  # sidewalk
    11: 2,  # building
    12: 3,  # wall
    13: 4,  # fence
    17: 5,  # pole
    19: 6,  # traffic light
    20: 7,  # traffic sign
    21: 8,  # vegetation
    22: 9,  # terrain
    23: 10,  # sky
    24: 11,  # person
    25: 12,  # rider
    26: 13,  # car
    27: 14,  # truck
    28: 15,  # bus
    31: 16,  # train
    32: 17,  # motorcycle
    33: 18,  # bicycle
}

_TRAIN_ID_TABLE = torch.full((256,), IGNORE_INDEX, dtype=torch.uint8)
for _label_id, _train_id in LABEL_ID_TO_TRAIN_ID.items():
    _TRAIN_ID_TABLE[_label_id] = _train_id

IMAGES = "leftImg8bit_sequence"
LABELS = "gtFine"
_FRAME_NAME = re.compile(r"^(?P<city>.+)_(?P<seq>\d{6})_(?P<frame>\d{6})_leftImg8bit\.png$")


def to_train_ids(label_ids: torch.Tensor) -> torch.Tensor:
    """Cityscapes label ids (any integer tensor) -> uint8 train ids 0..18, others 255."""
    return _TRAIN_ID_TABLE[label_ids.long().clamp(0, 255)]


def is_cityscapes_root(path: str | Path) -> bool:
    """Whether `path` holds the Cityscapes sequence layout (a `leftImg8bit_sequence` folder)."""
    return (Path(path) / IMAGES).is_dir()


class CityscapesSequence(FrameSequence):
    """Consecutive frames of one (city, seq) snippet; `label` is set where gtFine has the frame."""

    def __init__(
        self,
        name: str,
        frames: list[tuple[int, Path, Path | None]],
        *,
        max_frames: int | None = None,
        stride: int = 1,
    ) -> None:
        super().__init__(name, max_frames=max_frames, stride=stride)
        self.frames = tuple(frames[i] for i in self.selected(len(frames)))
        self.has_labels = any(label is not None for _, _, label in self.frames)

    def __iter__(self) -> Iterator[Frame]:
        return self.frames_from(0)

    def __len__(self) -> int:
        return len(self.frames)

    def frames_from(self, start: int) -> Iterator[Frame]:
        for number, image_path, label_path in self.frames[start:]:
            label = None if label_path is None else to_train_ids(read_label_ids(label_path))
            yield Frame(read_image(image_path), label, number)


def _splits(root: Path) -> list[str]:
    return sorted(p.name for p in (root / IMAGES).iterdir() if p.is_dir())


def open_cityscapes(
    root: str | Path,
    split: str | None = None,
    *,
    max_frames: int | None = None,
    stride: int = 1,
    name: str | None = None,
) -> Video:
    """The sequences of one split; `split` may be left out when the root holds only one."""
    root = Path(root)
    name = name or f"cityscapes:{root}" + (f":{split}" if split else "")
    if not is_cityscapes_root(root):
        raise NasError(
            f"'{root}' is not a Cityscapes root: expected a folder containing {IMAGES}/"
            "{split}/{city}/ with *_leftImg8bit.png frames"
        )
    splits = _splits(root)
    if split is None:
        if len(splits) != 1:
            known = ", ".join(splits) or "none"
            raise NasError(
                f"Cityscapes root '{root}' has splits: {known}; name one, e.g. "
                f"cityscapes:{root}:{splits[0] if splits else 'val'}"
            )
        split = splits[0]
    if split not in splits:
        raise NasError(
            f"Cityscapes root '{root}' has no split '{split}': known splits are "
            f"{', '.join(splits) or 'none'}"
        )
    groups: dict[tuple[str, str], list[tuple[int, Path, Path | None]]] = defaultdict(list)
    for city_dir in sorted(p for p in (root / IMAGES / split).iterdir() if p.is_dir()):
        label_dir = root / LABELS / split / city_dir.name
        label_files = {p.name for p in label_dir.iterdir()} if label_dir.is_dir() else set()
        for image_path in city_dir.iterdir():
            if image_path.suffix.lower() != ".png":
                continue
            match = _FRAME_NAME.match(image_path.name)
            if match is None:
                raise NasError(
                    f"unexpected file '{image_path}' in the Cityscapes layout: expected names "
                    "like {city}_{seq:06d}_{frame:06d}_leftImg8bit.png"
                )
            stem = f"{match['city']}_{match['seq']}_{match['frame']}"
            label_name = f"{stem}_gtFine_labelIds.png"
            label = label_dir / label_name if label_name in label_files else None
            groups[(match["city"], match["seq"])].append((int(match["frame"]), image_path, label))
    sequences: list[FrameSequence] = []
    for (city, seq), frames in sorted(groups.items()):
        frames.sort(key=lambda item: item[0])
        start = 0
        for i in range(1, len(frames) + 1):
            if i == len(frames) or frames[i][0] != frames[i - 1][0] + 1:
                run = frames[start:i]
                sequences.append(
                    CityscapesSequence(
                        f"{city}_{seq}_{run[0][0]:06d}", run, max_frames=max_frames, stride=stride
                    )
                )
                start = i
    if not sequences:
        raise NasError(
            f"Cityscapes split '{root / IMAGES / split}' has no frames: expected "
            "{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png files"
        )
    return Video(name, tuple(sequences), CITYSCAPES_CLASSES)
