"""Private: the fused back-ends of :class:`~fsqkit.FSQ` (only ``fsqkit.quantizers``
imports this package).

- :mod:`.build` and ``fsq_cpu*.c``/``fsq_cpu.h``: the CPU kernel, compiled at first use;
- :mod:`.cpu`: the CPU path (bin-edge and tanh forward modes);
- :mod:`.edges`: the exact bin edges of the reference pipeline;
- :mod:`.gpu` and :mod:`.triton_kernels`: the CUDA path (Triton);
- :mod:`.fused`: what both paths share (eligibility, layout, autograd, NaN handling).

:func:`fused_quantize` is the one entry point. It takes the immutable
:class:`~fsqkit.quantizers.fsq_math.FSQConstants`, never the module, and keeps
every cache (kernel constants, bin edges, specs) here, keyed by value. Results
are bit-identical to :func:`fsqkit.quantizers.fsq_math.reference_quantize`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fsqkit.quantizers._fsq_backends.cpu import cpu_path_applies, cpu_spec
from fsqkit.quantizers._fsq_backends.fused import run_fused
from fsqkit.quantizers._fsq_backends.gpu import gpu_path_applies, gpu_spec
from fsqkit.quantizers.fsq_math import FSQConstants


def fused_quantize(
    z: Tensor,
    constants: FSQConstants,
    *,
    channel_first: bool,
    out_dtype: torch.dtype,
    raise_on_nonfinite: bool,
    require_cpu_kernel: bool = False,
) -> tuple[Tensor, Tensor] | None:
    """Quantize ``z`` with a fused kernel, or return None where the reference path
    must run (graph capture, an unsupported dtype/device/size, no kernel here).

    Args:
        z: ``(..., C)``, or ``(B, C, ...)`` when ``channel_first`` and ``z.ndim >= 3``,
            with ``C = G * len(levels)``; float32, bfloat16 or float16 (already
            validated by the caller).
        constants: the quantizer's constants.
        out_dtype: dtype of the codes.
        raise_on_nonfinite: raise ``ValueError`` when ``z`` holds NaN/inf; otherwise
            return None then (the reference path defines what NaN gives).
        require_cpu_kernel: raise ``RuntimeError`` if a CPU input cannot use the
            kernel because it cannot be built (``FSQ(fast=True)``).

    Returns:
        ``(codes, indices)``: codes of ``z``'s shape and layout with the
        straight-through gradient; int32 indices ``(positions)``, or
        ``(positions, G)`` when ``G > 1``.
    """
    channels = z.shape[1] if (channel_first and z.ndim >= 3) else z.shape[-1]
    if cpu_path_applies(z, constants, channels, require_cpu_kernel):
        spec_for = cpu_spec
    elif gpu_path_applies(z, constants):
        spec_for = gpu_spec
    else:
        return None
    return run_fused(z, constants, channel_first, out_dtype, raise_on_nonfinite, spec_for)
