"""Synthetic video: coloured rectangles and discs gliding over a textured background.

Every pixel's label is exact (0 background, 1 rectangle, 2 disc; a later shape covers an earlier
one), and the frames are a pure function of the options, so tests get real motion in
milliseconds. Spec grammar, as accepted by `open_video`:

    synthetic                                  the defaults below
    synthetic:frames=32,size=64x96,seed=3      comma-separated key=value options

Options: `frames` (clip length, default 32), `size` (HxW, default 64x96), `seed` (default 0),
`shapes` (how many, default 3; rectangles and discs alternate). Shapes move with constant
velocities and bounce off the borders; the background does not move.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nas.core.errors import NasError
from nas.core.sizes import parse_size
from nas.data.frames import Frame, FrameSequence, Video

SYNTHETIC_CLASSES = ("background", "rectangle", "disc")
RECTANGLE, DISC = 1, 2
DEFAULTS = {"frames": 32, "size": (64, 96), "seed": 0, "shapes": 3}
EXAMPLE = "synthetic:frames=32,size=64x96,seed=3"


def _bounce(start: float, velocity: float, t: int, low: float, high: float) -> float:
    """Position at time t of a point moving at `velocity` that reflects off `low` and `high`."""
    span = high - low
    if span <= 0:
        return (low + high) / 2
    x = (start - low + velocity * t) % (2 * span)
    return low + (x if x <= span else 2 * span - x)


@dataclass(frozen=True)
class MovingShape:
    """One shape: class, centre at frame 0, velocity (pixels per frame), half extents, colour."""

    kind: int  # RECTANGLE or DISC
    centre: tuple[float, float]  # (y, x) in pixels, pixel centres at +0.5
    velocity: tuple[float, float]
    half_size: tuple[float, float]  # (half height, half width); a disc's are both its radius
    colour: tuple[int, int, int]

    def position(self, t: int, size: tuple[int, int]) -> tuple[float, float]:
        """Centre (y, x) at frame t in a frame of `size`, staying inside where it fits."""
        (y, x), (vy, vx), (hy, hx) = self.centre, self.velocity, self.half_size
        return _bounce(y, vy, t, hy, size[0] - hy), _bounce(x, vx, t, hx, size[1] - hx)

    def mask(self, t: int, size: tuple[int, int]) -> torch.Tensor:
        """Boolean H x W mask of the pixels whose centres the shape covers at frame t."""
        cy, cx = self.position(t, size)
        ys = torch.arange(size[0], dtype=torch.float64) + 0.5 - cy
        xs = torch.arange(size[1], dtype=torch.float64) + 0.5 - cx
        if self.kind == DISC:
            return ys[:, None] ** 2 + xs[None, :] ** 2 <= self.half_size[0] ** 2
        return (ys.abs() <= self.half_size[0])[:, None] & (xs.abs() <= self.half_size[1])[None, :]


def _hsv_colour(hue: float) -> tuple[int, int, int]:
    """A saturated RGB colour of the given hue (0..1), distinct from the grey-ish background."""
    value, saturation = 240.0, 0.85
    channels = []
    for n in (5, 3, 1):
        k = (n + hue * 6) % 6
        channels.append(round(value - value * saturation * max(0.0, min(k, 4 - k, 1.0))))
    return channels[0], channels[1], channels[2]


class SyntheticVideo(FrameSequence):
    """Moving shapes with exact labels; identical for identical options, `seed` included."""

    has_labels = True

    def __init__(
        self,
        *,
        frames: int = 32,
        size: tuple[int, int] = (64, 96),
        seed: int = 0,
        shapes: int = 3,
        max_frames: int | None = None,
        stride: int = 1,
        name: str | None = None,
    ) -> None:
        super().__init__(name or "synthetic", max_frames=max_frames, stride=stride)
        if frames < 1 or min(size) < 1 or shapes < 0:
            raise NasError(
                f"invalid synthetic video: frames={frames}, size={size[0]}x{size[1]}, "
                f"shapes={shapes}; expected frames >= 1, a positive size and shapes >= 0"
            )
        self.length, self.size, self.seed = frames, (int(size[0]), int(size[1])), seed
        generator = torch.Generator().manual_seed(seed)
        self.background = self._texture(generator)
        self.shapes = tuple(self._shape(i, generator) for i in range(shapes))

    def _texture(self, generator: torch.Generator) -> torch.Tensor:
        height, width = self.size
        coarse = torch.rand(1, 3, max(2, height // 16), max(2, width // 16), generator=generator)
        smooth = F.interpolate(coarse, size=self.size, mode="bilinear", align_corners=False)[0]
        grain = torch.rand(1, height, width, generator=generator)
        return (70 + 80 * smooth + 30 * grain).round().to(torch.uint8)

    def _shape(self, i: int, generator: torch.Generator) -> MovingShape:
        u = torch.rand(8, generator=generator, dtype=torch.float64).tolist()
        height, width = self.size
        side = min(height, width)
        kind = RECTANGLE if i % 2 == 0 else DISC
        extent = max(1.5, side * (0.08 + 0.12 * u[0]))
        half = (extent, extent * (0.6 + 0.8 * u[1])) if kind == RECTANGLE else (extent, extent)
        centre = (
            half[0] + u[2] * max(0.0, height - 2 * half[0]),
            half[1] + u[3] * max(0.0, width - 2 * half[1]),
        )
        speed = max(0.5, side * (0.01 + 0.03 * u[4]))
        angle = 2 * math.pi * u[5]
        velocity = (speed * math.sin(angle), speed * math.cos(angle))
        return MovingShape(kind, centre, velocity, half, _hsv_colour(u[6]))

    def render(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame t (any t >= 0, also past `frames`): uint8 image 3 x H x W, uint8 labels H x W."""
        image = self.background.clone()
        label = torch.zeros(self.size, dtype=torch.uint8)
        for shape in self.shapes:
            mask = shape.mask(t, self.size)
            image[:, mask] = torch.tensor(shape.colour, dtype=torch.uint8)[:, None]
            label[mask] = shape.kind
        return image, label

    def __iter__(self) -> Iterator[Frame]:
        return self.frames_from(0)

    def __len__(self) -> int:
        return len(self.selected(self.length))

    def frames_from(self, start: int) -> Iterator[Frame]:
        for t in self.selected(self.length)[start:]:  # any frame renders directly
            image, label = self.render(t)
            yield Frame(image, label, t)


def parse_synthetic_options(text: str) -> dict:
    """`'frames=32,size=64x96,seed=3'` -> `{'frames': 32, 'size': (64, 96), 'seed': 3}`."""
    options: dict = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        if key not in DEFAULTS:
            raise NasError(
                f"unknown synthetic option '{key}' in 'synthetic:{text}': known options are "
                f"{', '.join(DEFAULTS)}, e.g. {EXAMPLE}"
            )
        if not sep or not value:
            raise NasError(
                f"synthetic option '{item}' has no value: expected key=value, e.g. {EXAMPLE}"
            )
        if key == "size":
            options[key] = parse_size(value)
            continue
        try:
            options[key] = int(value)
        except ValueError:
            raise NasError(
                f"synthetic option {key}='{value}' is not an integer: e.g. {EXAMPLE}"
            ) from None
    return options


def open_synthetic(
    text: str = "", *, max_frames: int | None = None, stride: int = 1, name: str | None = None
) -> Video:
    """A synthetic video from an option string (the part after `synthetic:`)."""
    options = parse_synthetic_options(text)
    name = name or ("synthetic:" + text if text else "synthetic")
    sequence = SyntheticVideo(**options, max_frames=max_frames, stride=stride, name=name)
    return Video(name, (sequence,), SYNTHETIC_CLASSES)
