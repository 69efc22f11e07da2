"""Model configs saved inside checkpoints: one (de)serialisation for all of them.

A config is a dataclass that derives from :class:`SavedConfig`; ``to_dict()``
gives plain JSON-ready values (tuples become lists) and ``from_dict()`` rebuilds
it, refusing keys the class does not have (a checkpoint from another version or
a typo never loads silently).
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, TypeVar

C = TypeVar("C", bound="SavedConfig")


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively through dicts and lists (what JSON holds)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class SavedConfig:
    """Mixin of dataclass configs that are saved as JSON and loaded back."""

    def to_dict(self) -> dict[str, Any]:
        """The config's fields as JSON-ready values."""
        return _plain(asdict(self))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        """The config of ``d`` (as :meth:`to_dict` made it); ``ValueError`` naming any
        key that is not a field."""
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - known
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} keys {sorted(unknown)}; expected {sorted(known)}"
            )
        return cls(**d)
