"""Fused FSQ forward and backward for CUDA GPUs, in Triton (imported only where
Triton is installed; see ``fsqkit/quantizers/fsq_gpu.py``).

Dimension legend: ``C = G * D`` channels, ``D = len(levels)``, ``G``
codebooks, ``K`` bin edges per dimension, ``S`` spatial positions of a
channel-first input (1 for channel-last), ``N`` positions.

Forward (bin-edge mode, see ``fsq_edges.py``): the digit of each element is the
number of its dimension's edges at or below it; codes follow from the digit with
the reference's float32 formula. One read of ``z``, one write of codes and of
int32 indices; no ``tanh``. Backward recomputes ``t = tanh(z + shift)`` and
applies the reference's chain rule. Every float32 step uses libdevice's
explicitly rounded operations (``mul_rn``, ``div_rn``, ...): Triton's ``/`` is
an approximate division, and ptxas would otherwise fuse a multiply and an add
into one FMA, which rounds once where the reference's separate kernels round
twice. Launches pass ``enable_reflect_ftz=False``: Triton otherwise selects
libdevice's flush-to-zero variants, which zero subnormal results that torch's
kernels keep. Whether the reference's ``tanh_backward`` computes ``1 - t*t``
with an FMA is probed once at run time (``FMA`` below).

Tiles are 2-D, ``(positions, channels)`` for channel-last inputs and
``(channels, positions)`` for channel-first ones, so every load and store is
coalesced and per-channel constants are broadcast along one axis. Under
``TRITON_INTERPRET=1`` (CPU tests of the indexing) the libdevice calls are
replaced by plain operations and an exp-based ``tanh``.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "") not in ("", "0")

if INTERPRET:

    @triton.jit
    def _mul(a, b):
        return a * b

    @triton.jit
    def _div(a, b):
        return a / b

    @triton.jit
    def _sub(a, b):
        return a - b

    @triton.jit
    def _add(a, b):
        return a + b

    @triton.jit
    def _fma(a, b, c):
        return a * b + c

    @triton.jit
    def _tanh(x):
        e = tl.exp(-2.0 * tl.abs(x))
        t = (1.0 - e) / (1.0 + e)
        return tl.where(x < 0, -t, t)

else:
    from triton.language.extra import libdevice

    @triton.jit
    def _mul(a, b):
        return libdevice.mul_rn(a, b)

    @triton.jit
    def _div(a, b):
        return libdevice.div_rn(a, b)

    @triton.jit
    def _sub(a, b):
        return libdevice.sub_rn(a, b)

    @triton.jit
    def _add(a, b):
        return libdevice.add_rn(a, b)

    @triton.jit
    def _fma(a, b, c):
        return libdevice.fma_rn(a, b, c)

    @triton.jit
    def _tanh(x):
        return libdevice.tanh(x)


MODE_DIV, MODE_MULINV, MODE_SYM = 0, 1, 2


@triton.jit
def _tile(
    pid0,
    n_pos,
    S,
    C: tl.constexpr,
    C_PAD: tl.constexpr,
    CF: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """``(element offsets, mask, positions, position mask)`` of this program's tile."""
    c = tl.arange(0, C_PAD)
    if CF:
        # grid (outer * cdiv(S, BLOCK),); tile (C_PAD, BLOCK), positions along axis 1
        blocks = tl.cdiv(S, BLOCK)
        b = (pid0 // blocks).to(tl.int64)
        s = (pid0 % blocks) * BLOCK + tl.arange(0, BLOCK)
        pmask = s < S
        offs = b * C * S + c[:, None].to(tl.int64) * S + s[None, :]
        mask = (c[:, None] < C) & pmask[None, :]
        pos = b * S + s
    else:
        # grid (cdiv(N, BLOCK),); tile (BLOCK, C_PAD), positions along axis 0
        pos = (pid0 * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
        pmask = pos < n_pos
        offs = pos[:, None] * C + c[None, :]
        mask = pmask[:, None] & (c[None, :] < C)
    return offs, mask, pos, pmask


@triton.jit
def _bcast(v, CF: tl.constexpr):
    """A per-channel vector ``(C_PAD,)`` shaped to broadcast over the tile."""
    if CF:
        return v[:, None]
    else:
        return v[None, :]


@triton.jit
def _sum_channels(w, CF: tl.constexpr):
    """Sum over the channel axis of a tile: one value per position."""
    if CF:
        return tl.sum(w, axis=0)
    else:
        return tl.sum(w, axis=1)


@triton.jit
def _per_channel(ptr, index, C: tl.constexpr, C_PAD: tl.constexpr, CF: tl.constexpr, other):
    """``ptr[index[c]]`` for each channel, shaped to broadcast over the tile."""
    c = tl.arange(0, C_PAD)
    return _bcast(tl.load(ptr + index, mask=c < C, other=other), CF)


@triton.jit
def fsq_forward_edges_kernel(
    z_ptr,
    codes_ptr,
    idx_ptr,
    flag_ptr,
    edges_ptr,
    scale_ptr,
    inv_ptr,
    basis_ptr,
    n_pos,
    S,
    C: tl.constexpr,
    C_PAD: tl.constexpr,
    D: tl.constexpr,
    G: tl.constexpr,
    K: tl.constexpr,
    MODE: tl.constexpr,
    CF: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """codes (z's layout and the codes' dtype), int32 indices ``(N, G)``, and
    ``flag[0] = 1`` if any element is NaN or infinite."""
    offs, mask, pos, pmask = _tile(tl.program_id(0), n_pos, S, C, C_PAD, CF, BLOCK)
    d = tl.arange(0, C_PAD) % D
    z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    cnt = tl.zeros(z.shape, tl.int32)
    for k in tl.static_range(K):
        e = _per_channel(edges_ptr, d * K + k, C, C_PAD, CF, float("inf"))
        cnt += (z >= e).to(tl.int32)
    dv = cnt.to(tl.float32)
    sc = _per_channel(scale_ptr, d, C, C_PAD, CF, 1.0)
    if MODE == 2:
        code = _sub(_mul(dv, sc), 1.0)
    elif MODE == 1:
        code = _mul(_sub(dv, sc), _per_channel(inv_ptr, d, C, C_PAD, CF, 1.0))
    else:
        code = _div(_sub(dv, sc), sc)
    code = tl.where(z == z, code, z)  # NaN stays NaN, as in the reference
    tl.store(codes_ptr + offs, code.to(codes_ptr.dtype.element_ty), mask=mask)
    w = tl.where(mask, cnt * _per_channel(basis_ptr, d, C, C_PAD, CF, 0), 0)
    if G == 1:
        tl.store(idx_ptr + pos, _sum_channels(w, CF), mask=pmask)
    else:
        grp = _bcast(tl.arange(0, C_PAD) // D, CF)
        for g in tl.static_range(G):
            part = _sum_channels(tl.where(grp == g, w, 0), CF)
            tl.store(idx_ptr + pos * G + g, part, mask=pmask)
    nonfinite = mask & ((z - z) != 0.0)
    bad = tl.max(tl.where(nonfinite, 1, 0))
    tl.store(flag_ptr, bad, mask=bad > 0)


@triton.jit
def fsq_backward_kernel(
    g_ptr,
    z_ptr,
    gz_ptr,
    shift_ptr,
    b_ptr,
    r_ptr,
    h_ptr,
    n_pos,
    S,
    C: tl.constexpr,
    C_PAD: tl.constexpr,
    D: tl.constexpr,
    MODE: tl.constexpr,
    FMA: tl.constexpr,
    CF: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """grad_z = tanh_backward(chain(g), tanh(z + shift)) in the reference's op order:
    asymmetric ``(g / h) * half_l`` (``(g * (1/h)) * half_l`` when ``h`` is a power
    of two: the same value), symmetric ``((g * scale) / 2) * (L - 1)``."""
    offs, mask, _pos, _pmask = _tile(tl.program_id(0), n_pos, S, C, C_PAD, CF, BLOCK)
    d = tl.arange(0, C_PAD) % D
    z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    t = _tanh(_add(z, _per_channel(shift_ptr, d, C, C_PAD, CF, 0.0)))
    b = _per_channel(b_ptr, d, C, C_PAD, CF, 0.0)
    if MODE == 2:
        a = _mul(_div(_mul(g, _per_channel(h_ptr, d, C, C_PAD, CF, 1.0)), 2.0), b)
    elif MODE == 1:
        a = _mul(_mul(g, _per_channel(r_ptr, d, C, C_PAD, CF, 1.0)), b)
    else:
        a = _mul(_div(g, _per_channel(h_ptr, d, C, C_PAD, CF, 1.0)), b)
    if FMA:
        one_minus = _fma(0.0 - t, t, 1.0)
    else:
        one_minus = _sub(1.0, _mul(t, t))
    tl.store(gz_ptr + offs, _mul(a, one_minus).to(gz_ptr.dtype.element_ty), mask=mask)
