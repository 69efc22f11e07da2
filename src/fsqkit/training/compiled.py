"""``torch.compile`` of a task's trainable modules, with a way back to eager.

Each module's ``forward`` is replaced by ``torch.compile(module.forward)`` (an
instance attribute: the module object, its parameters and its state-dict keys
stay the same, so checkpoints, optimizers and DDP wrappers are unaffected).
Autograd compiles the backward pass of the captured graphs too, so this
compiles the step's forward and backward work; Python-side code (data,
metrics, the optimizer) stays eager. Code dynamo cannot capture runs eagerly
between compiled pieces (graph breaks) rather than failing.

Compilation happens at the first call. If it fails (no C++ compiler, an
unsupported operation) the trainer calls :meth:`CompiledModules.revert` and
runs eagerly, saying so in one line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class CompiledModules:
    """Compile the ``forward`` of ``modules`` in place (see the module docstring).

    Args:
        modules: ``{name: module}``.
        backend: ``torch.compile`` backend (``"inductor"``: generated kernels;
            ``"aot_eager"``: graph capture only, for tests).
    """

    def __init__(self, modules: dict[str, nn.Module], backend: str = "inductor") -> None:
        self.modules = modules
        self.backend = backend
        self._compiled: dict[str, Callable[..., Any]] = {}
        self._called: set[str] = set()
        for name, module in modules.items():
            self._compiled[name] = self._tracked(
                name, torch.compile(module.forward, backend=backend)
            )
        self._install()

    def _tracked(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn``; if its first call fails to compile, ``name`` reverts to eager
        (one line on stderr) and the call runs eagerly."""

        def forward(*args: Any, **kwargs: Any) -> Any:
            if name in self._called:
                return fn(*args, **kwargs)
            try:
                out = fn(*args, **kwargs)
            except Exception as err:
                if not is_compile_error(err):
                    raise
                module = self.modules[name]
                self._drop(name)
                print(f"{name}: {compile_failure_line(err)}", file=sys.stderr)
                return module.forward(*args, **kwargs)
            self._called.add(name)
            return out

        return forward

    def _drop(self, name: str) -> None:
        module = self.modules.pop(name)
        self._compiled.pop(name)
        if "forward" in module.__dict__:
            del module.forward

    def _install(self) -> None:
        for name, module in self.modules.items():
            module.forward = self._compiled[name]  # type: ignore[method-assign]

    def _remove(self) -> None:
        for module in self.modules.values():
            if "forward" in module.__dict__:
                del module.forward

    def revert(self) -> None:
        """Back to eager ``forward`` for good."""
        self._remove()
        self._compiled.clear()
        self.modules = {}
        self._called.clear()

    @contextmanager
    def eager(self) -> Iterator[None]:
        """Eager ``forward`` within the block (evaluation runs in eval mode and
        other shapes; compiling it too would only add compile time)."""
        self._remove()
        try:
            yield
        finally:
            self._install()


def is_compile_error(err: BaseException) -> bool:
    """Whether ``err`` comes from ``torch.compile`` (dynamo, AOTAutograd,
    inductor) rather than from the model itself."""
    mod = type(err).__module__
    return mod.startswith(("torch._dynamo", "torch._inductor", "torch._functorch")) or (
        "BackendCompilerFailed" in type(err).__name__
    )


def compile_failure_line(err: BaseException) -> str:
    """One line saying compilation failed and training continues eagerly."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    return f"note: torch.compile failed ({type(err).__name__}: {first}); training continues eagerly"
