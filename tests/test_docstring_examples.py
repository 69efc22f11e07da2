"""The examples that ``help(...)`` shows for every quantizer class run and print
what they say (doctest)."""

from __future__ import annotations

import doctest
import inspect

import pytest

import fsqkit.compat.vector_quantize_pytorch as compat
import fsqkit.quantizers as quantizers

CLASSES = [
    getattr(module, name)
    for module in (quantizers, compat)
    for name in module.__all__
    if inspect.isclass(getattr(module, name)) and name not in ("Quantizer", "QuantizerOutput")
    and hasattr(getattr(module, name), "forward")
]  # fmt: skip


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_class_docstring_has_a_runnable_example(cls) -> None:
    assert ">>>" in (cls.__doc__ or ""), f"{cls.__name__} has no example"
    tests = doctest.DocTestFinder(recurse=False).find(cls, cls.__name__, globs={})
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    assert runner.failures == 0 and runner.tries > 0


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_forward_has_a_docstring(cls) -> None:
    assert inspect.getdoc(cls.forward), f"{cls.__name__}.forward has no docstring"
