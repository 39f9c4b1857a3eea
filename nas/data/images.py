"""Still images on disk: RGB frames and single-channel label maps, read with Pillow."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nas.core.errors import NasError
from nas.data.frames import error_text

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_image(path: str | Path) -> torch.Tensor:
    """An image file -> uint8 RGB tensor, 3 x H x W."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except OSError as error:
        raise NasError(
            f"cannot read image '{path}': {error_text(error)}; expected a readable PNG or JPEG"
        ) from error
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def read_label_ids(path: str | Path) -> torch.Tensor:
    """A single-channel label image (8-bit, palette or 16/32-bit) -> int64 ids, H x W."""
    try:
        with Image.open(path) as image:
            mode = image.mode
            array = np.asarray(image)
    except OSError as error:
        raise NasError(
            f"cannot read label map '{path}': {error_text(error)}; expected a readable PNG"
        ) from error
    if array.ndim != 2:
        raise NasError(
            f"label map '{path}' has mode {mode} with {array.shape[-1]} channels: expected a "
            "single-channel image of class ids (mode L, P or I)"
        )
    return torch.from_numpy(array.astype(np.int64))


def _natural_key(path: Path) -> list:
    """`frame_2.png` before `frame_10.png`: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def list_images(folder: Path) -> list[Path]:
    """The folder's PNG and JPEG files, sorted by name with numbers in numeric order."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=_natural_key)
