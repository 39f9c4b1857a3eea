"""One small registry type, used for teachers, candidate blocks and evaluators.

    TEACHERS = Registry("teacher")

    @TEACHERS.register("deeplabv3_resnet50")
    def deeplabv3_resnet50(*, num_classes=None, aux=False, device="cpu"): ...

    TEACHERS.get("deeplabv3_resnet50")   # the builder
    TEACHERS.get("nope")                 # NasError: unknown teacher 'nope'; known: ...

Registering a name (or alias) twice raises `ValueError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from nas.core.errors import NasError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named objects of one kind, with optional aliases that resolve to a canonical name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(
        self, name: str, obj: T | None = None, *, aliases: tuple[str, ...] = ()
    ) -> Callable[[T], T] | T:
        """Register `obj` under `name` (and `aliases`); usable as a decorator when `obj` is None."""

        def add(item: T) -> T:
            for key in (name, *aliases):
                if key in self._items or key in self._aliases:
                    raise ValueError(f"{self.kind} '{key}' is already registered")
            self._items[name] = item
            for alias in aliases:
                self._aliases[alias] = name
            return item

        return add if obj is None else add(obj)

    def canonical(self, name: str) -> str:
        """The registered name that `name` (a name or an alias) stands for."""
        if name in self._items:
            return name
        if name in self._aliases:
            return self._aliases[name]
        raise NasError(
            f"unknown {self.kind} '{name}'; known: {', '.join(self.names(aliases=True))}"
        )

    def get(self, name: str) -> T:
        return self._items[self.canonical(name)]

    def names(self, *, aliases: bool = False) -> list[str]:
        """Registered names in registration order, then (if asked) the aliases."""
        return [*self._items, *(self._aliases if aliases else ())]

    def aliases_of(self, name: str) -> list[str]:
        return [alias for alias, target in self._aliases.items() if target == name]

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
