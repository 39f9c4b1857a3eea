"""Files shipped inside installed packages (trained weights, sample clips), found without
importing the package: several of them import libraries the toolkit must not load."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from nas.core.errors import NasError


def packaged_file(package: str, relative: str, *, needed_by: str, install: str) -> Path:
    """The file `relative` inside the installed `package`, e.g.
    `packaged_file("rembg", "u2netp.onnx", needed_by="teacher u2netp", install="pip ...")`."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise NasError(f"{needed_by} needs the '{package}' package, which is missing: {install}")
    path = Path(spec.origin).parent / relative
    if not path.is_file():
        raise NasError(
            f"{needed_by} needs '{relative}' from the '{package}' package, but the installed "
            f"one lacks it: {install}"
        )
    return path
