"""Fused FSQ forward and backward for CUDA GPUs, in Triton (imported only where
Triton is installed; see ``gpu.py`` beside this file).

Dimension legend: ``C = G * D`` channels, ``D = len(levels)``, ``G``
codebooks, ``S`` spatial positions of a
channel-first input (1 for channel-last), ``N`` positions.

Forward: one read of ``z``, one write of codes and of int32 indices, with the
reference's float32 operations in its order (``tanh`` included: on a GPU it is
free, the kernels are memory-bound). Backward reads ``z`` and the gradient,
recomputes ``t = tanh(z + shift)`` and applies the reference's chain rule. Every float32 step uses libdevice's
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

    @triton.jit
    def _rint(x):
        r = tl.floor(x)
        frac = x - r
        odd = (r - 2.0 * tl.floor(r / 2.0)) != 0.0
        return tl.where((frac > 0.5) | ((frac == 0.5) & odd), r + 1.0, r)

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

    @triton.jit
    def _rint(x):
        return libdevice.rint(x)


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
    """``(element offsets, mask, positions, position mask)`` of this program's tile.

    int32 offsets (the caller guarantees fewer than 2**31 elements). When ``C`` is
    a power of two the mask has no channel term, so that it is constant along the
    contiguous axis and loads and stores can be vectorized."""
    c = tl.arange(0, C_PAD)
    if CF:
        # grid (outer * cdiv(S, BLOCK),); tile (C_PAD, BLOCK), positions along axis 1
        blocks = tl.cdiv(S, BLOCK)
        b = pid0 // blocks
        s = (pid0 % blocks) * BLOCK + tl.arange(0, BLOCK)
        pmask = s < S
        offs = b * (C * S) + c[:, None] * S + s[None, :]
        if C == C_PAD:
            mask = pmask[None, :]
        else:
            mask = (c[:, None] < C) & pmask[None, :]
        pos = b * S + s
    else:
        # grid (cdiv(N, BLOCK),); tile (BLOCK, C_PAD), positions along axis 0
        pos = pid0 * BLOCK + tl.arange(0, BLOCK)
        pmask = pos < n_pos
        offs = pos[:, None] * C + c[None, :]
        if C == C_PAD:
            mask = pmask[:, None]
        else:
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
def _quantize(z, shift, b, offset, h, r, lm1, MODE: tl.constexpr):
    """``(code, clamped digit)`` of float32 ``z`` with broadcastable constants, the
    reference's ops in its order (``fsq_math.reference_quantize``):

    asymmetric: ``x = tanh(z + shift) * half_l - offset``, ``q = x + (rint(x) - x)``,
    ``code = q / h`` (``q * (1/h)`` when ``h`` is a power of two: the same value),
    ``digit = rint(x) + h``; symmetric: ``x = ((L-1) * (tanh(z) + 1)) / 2``,
    ``code = q * scale - 1``, ``digit = rint(x)``; digits clamped to ``[0, L-1]``,
    NaN to 0 (as ``fsq_math.clamped_digits``)."""
    t = _tanh(_add(z, shift))
    if MODE == 2:
        x = _div(_mul(lm1, _add(t, 1.0)), 2.0)
    else:
        x = _sub(_mul(t, b), offset)
    rounded = _rint(x)
    q = _add(x, _sub(rounded, x))  # the straight-through value, with -0 -> +0
    if MODE == 2:
        code = _sub(_mul(q, h), 1.0)
        digit = rounded
    elif MODE == 1:
        code = _mul(q, r)
        digit = _add(rounded, h)
    else:
        code = _div(q, h)
        digit = _add(rounded, h)
    clamped = tl.minimum(tl.maximum(digit, 0.0), lm1)
    return code, tl.where(digit == digit, clamped, 0.0)


@triton.jit
def _gradient(z, g, shift, b, r, h, MODE: tl.constexpr, FMA: tl.constexpr):
    """grad_z = tanh_backward(chain(g), tanh(z + shift)) in the reference's op order:
    asymmetric ``(g / h) * half_l`` (``(g * (1/h)) * half_l`` when ``h`` is a power
    of two: the same value), symmetric ``((g * scale) / 2) * (L - 1)``."""
    t = _tanh(_add(z, shift))
    if MODE == 2:
        a = _mul(_div(_mul(g, h), 2.0), b)
    elif MODE == 1:
        a = _mul(_mul(g, r), b)
    else:
        a = _mul(_div(g, h), b)
    if FMA:
        one_minus = _fma(0.0 - t, t, 1.0)
    else:
        one_minus = _sub(1.0, _mul(t, t))
    return _mul(a, one_minus)


@triton.jit
def fsq_forward_kernel(
    z_ptr,
    codes_ptr,
    idx_ptr,
    flag_ptr,
    shift_ptr,
    b_ptr,
    offset_ptr,
    h_ptr,
    r_ptr,
    lm1_ptr,
    basis_ptr,
    n_pos,
    S,
    C: tl.constexpr,
    C_PAD: tl.constexpr,
    D: tl.constexpr,
    G: tl.constexpr,
    MODE: tl.constexpr,
    CF: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """codes (z's layout and the codes' dtype), int32 indices ``(N, G)``, and
    ``flag[0] = 1`` if any element is NaN or infinite; one 2-D tile per program."""
    offs, mask, pos, pmask = _tile(tl.program_id(0), n_pos, S, C, C_PAD, CF, BLOCK)
    d = tl.arange(0, C_PAD) % D
    z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    code, digit = _quantize(
        z,
        _per_channel(shift_ptr, d, C, C_PAD, CF, 0.0),
        _per_channel(b_ptr, d, C, C_PAD, CF, 0.0),
        _per_channel(offset_ptr, d, C, C_PAD, CF, 0.0),
        _per_channel(h_ptr, d, C, C_PAD, CF, 1.0),
        _per_channel(r_ptr, d, C, C_PAD, CF, 1.0),
        _per_channel(lm1_ptr, d, C, C_PAD, CF, 1.0),
        MODE,
    )
    tl.store(codes_ptr + offs, code.to(codes_ptr.dtype.element_ty), mask=mask)
    w = tl.where(mask, digit.to(tl.int32) * _per_channel(basis_ptr, d, C, C_PAD, CF, 0), 0)
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
    """The input gradient (:func:`_gradient`), one 2-D tile per program."""
    offs, mask, _pos, _pmask = _tile(tl.program_id(0), n_pos, S, C, C_PAD, CF, BLOCK)
    d = tl.arange(0, C_PAD) % D
    z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    grad = _gradient(
        z,
        g,
        _per_channel(shift_ptr, d, C, C_PAD, CF, 0.0),
        _per_channel(b_ptr, d, C, C_PAD, CF, 0.0),
        _per_channel(r_ptr, d, C, C_PAD, CF, 1.0),
        _per_channel(h_ptr, d, C, C_PAD, CF, 1.0),
        MODE,
        FMA,
    )
    tl.store(gz_ptr + offs, grad.to(gz_ptr.dtype.element_ty), mask=mask)


# ---- row variants (opt-in, ``gpu.ROW_KERNELS``): 1-D contiguous programs ----
# Channel-first: one program per (batch, channel) row segment, constants are
# scalars. Channel-last backward: one flat 1-D block, constants gathered per
# element from the (D,) tables. Same element math as above.


@triton.jit
def fsq_forward_rows_kernel(
    z_ptr,
    codes_ptr,
    idx_ptr,
    flag_ptr,
    shift_ptr,
    b_ptr,
    offset_ptr,
    h_ptr,
    r_ptr,
    lm1_ptr,
    basis_ptr,
    S,
    C: tl.constexpr,
    D: tl.constexpr,
    MODE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Channel-first, one codebook: grid ``(B, cdiv(S, BLOCK))``; loops over the
    channels of one block of positions, accumulating the indices in registers."""
    bi = tl.program_id(0)
    s = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = s < S
    idx = tl.zeros((BLOCK,), tl.int32)
    bad = tl.zeros((BLOCK,), tl.int32)
    for c in range(C):
        d = c % D
        offs = (bi * C + c) * S + s
        z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        code, digit = _quantize(
            z,
            tl.load(shift_ptr + d),
            tl.load(b_ptr + d),
            tl.load(offset_ptr + d),
            tl.load(h_ptr + d),
            tl.load(r_ptr + d),
            tl.load(lm1_ptr + d),
            MODE,
        )
        tl.store(codes_ptr + offs, code.to(codes_ptr.dtype.element_ty), mask=mask)
        idx += digit.to(tl.int32) * tl.load(basis_ptr + d)
        bad |= (mask & ((z - z) != 0.0)).to(tl.int32)
    tl.store(idx_ptr + bi * S + s, idx, mask=mask)
    any_bad = tl.max(bad)
    tl.store(flag_ptr, any_bad, mask=any_bad > 0)


@triton.jit
def fsq_backward_rows_kernel(
    g_ptr,
    z_ptr,
    gz_ptr,
    shift_ptr,
    b_ptr,
    r_ptr,
    h_ptr,
    n,
    S,
    C: tl.constexpr,
    D: tl.constexpr,
    MODE: tl.constexpr,
    FMA: tl.constexpr,
    CF: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Channel-first: grid ``(B * C, cdiv(S, BLOCK))``, scalar constants;
    channel-last: grid ``(cdiv(n, BLOCK),)`` over the flat tensor."""
    if CF:
        row = tl.program_id(0)
        s = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = s < S
        offs = row * S + s
        d = (row % C) % D
    else:
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        d = (offs % C) % D
    z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    grad = _gradient(
        z,
        g,
        tl.load(shift_ptr + d),
        tl.load(b_ptr + d),
        tl.load(r_ptr + d),
        tl.load(h_ptr + d),
        MODE,
        FMA,
    )
    tl.store(gz_ptr + offs, grad.to(gz_ptr.dtype.element_ty), mask=mask)
