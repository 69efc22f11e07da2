"""Arguments of vector-quantize-pytorch that this layer does not implement: each
one is refused with an error that names it, never silently ignored."""

from __future__ import annotations

from collections.abc import Mapping

GUIDE = "see docs/migrating.md"


def _is_default(value: object, default: object) -> bool:
    if value is default:
        return True
    if isinstance(default, (bool, int, float, str, tuple)) and type(value) is type(default):
        return value == default
    return False


def refuse_unsupported(
    owner: str, given: Mapping[str, object], defaults: Mapping[str, object]
) -> None:
    """Raise ``NotImplementedError`` for the first argument of ``given`` that is in
    ``defaults`` (vector-quantize-pytorch arguments not implemented here) with a
    value other than its default."""
    for name, default in defaults.items():
        if name in given and not _is_default(given[name], default):
            raise NotImplementedError(
                f"{owner}({name}={given[name]!r}): not supported by "
                f"fsqkit.compat.vector_quantize_pytorch (leave it at {default!r}); {GUIDE}"
            )


def refuse_unknown(owner: str, given: Mapping[str, object], known: set[str]) -> None:
    """Raise ``TypeError`` for keyword arguments vector-quantize-pytorch does not
    have either (a typo must not pass silently through ``**kwargs``)."""
    unknown = sorted(set(given) - known)
    if unknown:
        raise TypeError(f"{owner}() got unexpected keyword arguments {unknown}; {GUIDE}")
