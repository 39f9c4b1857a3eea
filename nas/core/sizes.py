"""Input sizes: `HxW` strings (e.g. `520x520`, `1024x2048`) parsed and checked against a teacher."""

from __future__ import annotations

import re

from nas.core.errors import NasError

_PATTERN = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_size(text: str) -> tuple[int, int]:
    """`'520x520'` -> `(520, 520)`: height then width, both positive integers."""
    match = _PATTERN.match(text)
    if match is None or min(int(match[1]), int(match[2])) <= 0:
        raise NasError(f"invalid input size '{text}': expected HxW in pixels, e.g. 520x520")
    return int(match[1]), int(match[2])


def check_multiple(size: tuple[int, int], multiple: int, *, who: str) -> None:
    """Refuse a size the model cannot take, naming the nearest sizes it can."""
    if all(side % multiple == 0 for side in size):
        return
    fixed = "x".join(str(max(multiple, round(side / multiple) * multiple)) for side in size)
    raise NasError(
        f"input size {size[0]}x{size[1]} does not fit {who}: height and width must be "
        f"multiples of {multiple}, e.g. {fixed}"
    )


def scaled_size(size: tuple[int, int], scale: float, multiple: int) -> tuple[int, int]:
    """`size` times `scale`, each side rounded to the nearest positive multiple of `multiple`."""
    if not 0 < scale <= 1:
        raise NasError(f"invalid input scale {scale}: expected a factor in (0, 1]")
    return tuple(max(multiple, round(side * scale / multiple) * multiple) for side in size)
