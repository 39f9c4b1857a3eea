"""Writing a delta model's predictions on a video: mask PNGs, or an overlay video.

`OUT` ending in a video suffix (`.mp4`, `.mkv`, `.mov`) gets an overlay video (the frame with
its predicted mask blended in, encoded with PyAV); anything else is a folder of PNG masks, one
per frame (`000000.png`, ...): class ids for class logits, probability x 255 for probability
maps. Each file appears whole (written to a temporary name, then renamed).

`side_by_side` puts two labelled overlays next to each other (the teacher's left, the student's
right, as `nas infer` writes them into a video), each labelled in its top-left corner.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from nas.core.io import atomic_write_bytes
from nas.teachers.base import OutputKind

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi")


def palette(num_classes: int) -> np.ndarray:
    """A fixed colour per class (golden-ratio hues), class 0 black."""
    colours = np.zeros((max(num_classes, 2), 3), dtype=np.uint8)
    for c in range(1, len(colours)):
        hue = (c * 0.618033988749895) % 1.0
        rgb = np.clip(np.abs(((hue * 6 + np.array([0, 4, 2])) % 6) - 3) - 1, 0, 1)
        colours[c] = (rgb * 255).astype(np.uint8)
    return colours


def to_mask(prediction: torch.Tensor, kind: OutputKind) -> np.ndarray:
    """One frame's prediction (1 x C x H x W) as an H x W uint8 image."""
    if kind is OutputKind.PROB_MAP:
        return (prediction[0, 0].clamp(0, 1) * 255).round().byte().cpu().numpy()
    return prediction[0].argmax(0).byte().cpu().numpy()


def overlay(
    frame: torch.Tensor, mask: np.ndarray, kind: OutputKind, num_classes: int
) -> np.ndarray:
    """The RGB frame (3 x H x W uint8) with the mask blended in, H x W x 3 uint8."""
    image = frame.permute(1, 2, 0).cpu().numpy().astype(np.float32)
    if kind is OutputKind.PROB_MAP:
        weight = mask.astype(np.float32)[..., None] / 255.0
        colour = np.array([255.0, 40.0, 40.0])
        blended = image * (1 - 0.6 * weight) + colour * 0.6 * weight
    else:
        blended = 0.5 * image + 0.5 * palette(num_classes)[mask].astype(np.float32)
    return blended.clip(0, 255).astype(np.uint8)


def _font(height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's default font, about 1/24 of the frame's height (at least 10 px) where it scales."""
    try:
        return ImageFont.load_default(size=max(10, height // 24))
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def label(image: np.ndarray, text: str) -> np.ndarray:
    """An H x W x 3 uint8 image with `text` in white on a dark box in its top-left corner."""
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    font = _font(image.shape[0])
    *_, right, bottom = draw.textbbox((3, 2), text, font=font)
    draw.rectangle((0, 0, right + 3, bottom + 2), fill=(0, 0, 0))
    draw.text((3, 2), text, fill=(255, 255, 255), font=font)
    return np.asarray(picture)


def step_label(is_key: bool, distance: int, per_frame: bool = False) -> str:
    """The student's label of a frame: `student · key`, `student · delta +d` (d frames after its
    key frame), or plain `student` for a per-frame student (no key frames)."""
    if per_frame:
        return "student"
    return "student \u00b7 key" if is_key else f"student \u00b7 delta +{distance}"


def side_by_side(left: np.ndarray, right: np.ndarray, labels: tuple[str, str]) -> np.ndarray:
    """Two H x W x 3 images, labelled, next to each other: H x 2W x 3."""
    return np.concatenate([label(left, labels[0]), label(right, labels[1])], axis=1)


class MaskFolder:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def write(self, frame: torch.Tensor, mask: np.ndarray, kind: OutputKind, classes: int) -> None:
        buffer = io.BytesIO()
        Image.fromarray(mask).save(buffer, format="PNG")
        atomic_write_bytes(self.path / f"{self.count:06d}.png", buffer.getvalue())
        self.count += 1

    def close(self) -> None:
        pass


class OverlayVideo:
    """Encodes overlay frames into a temporary file, renamed to the target when closed."""

    def __init__(self, path: Path, fps: float = 25.0) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
        self.container = av.open(str(self.tmp), "w")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.stream = self.container.add_stream(codec, rate=round(fps))
        self.stream.pix_fmt = "yuv420p"
        self.count = 0

    def write(self, frame: torch.Tensor, mask: np.ndarray, kind: OutputKind, classes: int) -> None:
        self.write_image(overlay(frame, mask, kind, classes))

    def write_image(self, image: np.ndarray) -> None:
        """One H x W x 3 uint8 frame as it is (the first frame sets the video's size)."""
        if self.count == 0:
            self.stream.height, self.stream.width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
        image = image[: self.stream.height, : self.stream.width]
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            self.container.mux(packet)
        self.count += 1

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        os.replace(self.tmp, self.path)


def writer_for(out: Path, fps: float = 25.0) -> MaskFolder | OverlayVideo:
    return OverlayVideo(out, fps) if out.suffix.lower() in VIDEO_SUFFIXES else MaskFolder(out)
