"""Name -> object registries for compression methods and model families.

A method or family declares itself in one module and registers one instance here; the
config's allowed choices, `--help`, the input checks, saving and loading all look it up
by name, so adding one touches no other module.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from qa_compress.errors import UserError


class Named(Protocol):
    name: str
    description: str


T = TypeVar("T", bound=Named)


class Registry(Generic[T]):
    """Registered objects by name, in registration order."""

    def __init__(self, kind: str, config_key: str) -> None:
        self.kind = kind  # "quantization method", in messages
        self.config_key = config_key  # "quantization", the config group that chooses one
        self._entries: dict[str, T] = {}

    def register(self, entry: T) -> T:
        """Add `entry` under its name; a second, different entry under one name is a mistake."""
        existing = self._entries.get(entry.name)
        if existing is not None and existing is not entry and type(existing) is not type(entry):
            raise ValueError(f"{self.kind} {entry.name!r} is registered already ({type(existing).__name__})")
        self._entries[entry.name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The entry called `name`; a user-facing error listing the choices otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            raise UserError(
                f"{self.config_key}={name}: unknown {self.kind} (choose from {', '.join(self.names())})"
            ) from None

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._entries.values()))
