"""A folder of still frames (PNG or JPEG) played in name order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from nas.core.errors import NasError
from nas.data.frames import Frame, FrameSequence
from nas.data.images import IMAGE_SUFFIXES, list_images, read_image


class ImageFolder(FrameSequence):
    """The folder's images sorted by name (`frame_2.png` before `frame_10.png`), unlabelled."""

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
        if not self.path.is_dir():
            raise NasError(f"frame folder '{path}' not found: expected a folder of images")
        files = list_images(self.path)
        if not files:
            raise NasError(
                f"folder '{path}' has no images: expected frames named in time order with "
                f"suffix {', '.join(IMAGE_SUFFIXES)}"
            )
        self.files = tuple(files[i] for i in self.selected(len(files)))
        self._numbers = tuple(self.selected(len(files)))

    def __iter__(self) -> Iterator[Frame]:
        return self.frames_from(0)

    def __len__(self) -> int:
        return len(self.files)

    def frames_from(self, start: int) -> Iterator[Frame]:
        for number, path in zip(self._numbers[start:], self.files[start:], strict=True):
            yield Frame(read_image(path), None, number)
