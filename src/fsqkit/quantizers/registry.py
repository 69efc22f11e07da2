"""Quantizers by name, so models and CLIs pick one with a string.

``build_quantizer("fsq", levels=[8, 5, 5, 5], dim=4)``. New quantizers register
with :func:`register_quantizer`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fsqkit.quantizers.base import Quantizer

_REGISTRY: dict[str, Callable[..., Quantizer]] = {}


def register_quantizer(name: str) -> Callable[[Callable[..., Quantizer]], Callable[..., Quantizer]]:
    def deco(factory: Callable[..., Quantizer]) -> Callable[..., Quantizer]:
        if name in _REGISTRY:
            raise ValueError(f"quantizer {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return deco


def available_quantizers() -> list[str]:
    return sorted(_REGISTRY)


def build_quantizer(name: str, **kwargs: Any) -> Quantizer:
    """Construct a registered quantizer by name with keyword arguments."""
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown quantizer {name!r}; available: {', '.join(available_quantizers())}"
        )
    return _REGISTRY[name](**kwargs)
