"""The teacher registry and the builder signature every entry shares."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from nas.core.registry import Registry
from nas.teachers.base import Teacher


class TeacherBuilder(Protocol):
    def __call__(
        self,
        *,
        weights: Path | None = None,
        num_classes: int | None = None,
        aux: bool = False,
        device: str = "cpu",
    ) -> Teacher:
        """Build the teacher in eval mode; `device="meta"` builds its shapes only (for costs)."""
        ...


TEACHERS: Registry[TeacherBuilder] = Registry("teacher")
