"""Whether a graph is being captured, for the code paths that must differ then."""

from __future__ import annotations

import torch


def graph_capture() -> bool:
    """Whether a graph is being captured: ``torch.compile``/``torch.export``
    (dynamo or non-strict), ``torch.jit`` tracing or scripting, or a classic
    ``torch.onnx.export``. Host reads, data-dependent checks, caches and fused
    kernels are left out then: the graph holds the reference operations only."""
    return (
        torch.compiler.is_compiling()
        or torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.onnx.is_in_onnx_export()
    )
