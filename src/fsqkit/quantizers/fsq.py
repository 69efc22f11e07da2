"""Finite Scalar Quantization (Mentzer et al., "Finite Scalar Quantization:
VQ-VAE Made Simple", arXiv 2309.15505).

Dimension legend: ``B`` batch, ``C`` model channels (``dim``), ``G``
``num_codebooks``, ``D = len(levels)``, ``K = prod(levels)``.

The quantizer projects (optionally) to ``G * D`` channels, bounds each channel
with ``tanh``, rounds it to ``L_i`` levels with a straight-through gradient and
normalises to ``[-1, 1]``. Its implicit codebook is the product of the level
sets: no parameters, no auxiliary loss.

The formulas are :mod:`fsqkit.quantizers.fsq_math` (the reference path); fused
kernels (:mod:`fsqkit.quantizers._fsq_backends`) give the same bits faster.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fsqkit.quantizers._fsq_backends import fused_quantize
from fsqkit.quantizers._fsq_backends.fused import SUPPORTED_DTYPES
from fsqkit.quantizers.base import Quantizer
from fsqkit.quantizers.capture import graph_capture
from fsqkit.quantizers.fsq_math import (
    FSQConstants,
    clamped_digits,
    codes_from_grid,
    digits_to_codes,
    digits_to_indices,
    grid_value,
    indices_to_digits,
    nan_to_zero_,
    round_grid,
)
from fsqkit.quantizers.layout import (
    check_finite_values,
    check_index_tensor,
    check_input,
    check_positive_int,
    from_channel_last,
    to_channel_last,
)
from fsqkit.quantizers.levels import validate_levels
from fsqkit.quantizers.output import QuantizerOutput, index_dtype, zero_loss
from fsqkit.quantizers.registry import register_quantizer

# Refuse to materialise implicit codebooks larger than this many bytes.
MAX_IMPLICIT_CODEBOOK_BYTES = 2**30
# Indices are int64 at most: codebooks beyond this many codes have none.
MAX_INDEXED_CODES = 2**63


class FSQ(Quantizer):
    """Finite Scalar Quantization layer.

    Args:
        levels: number of levels per FSQ dimension, e.g. ``[8, 5, 5, 5]``
            (``K = 1000`` codes). Integers >= 3 (>= 2 with ``symmetric=True``).
        dim: channel width of the inputs. Defaults to ``len(levels) *
            num_codebooks``; if different, learned linear projections map ``dim ->
            G*D`` before and ``G*D -> dim`` after quantization.
        num_codebooks: ``G`` independent FSQ codebooks over consecutive channel
            groups; indices get a trailing ``(..., G)`` dimension when ``G > 1``.
        channel_first: inputs with 3 or more dimensions carry channels at dim 1
            (``(B, C, T)``, ``(B, C, H, W)``, ``(B, C, T, H, W)``); otherwise
            channels are last (``(..., C)``).
        symmetric: use the symmetric grid of arXiv 2411.19842 (allows ``L = 2``).
        eps: the paper's ``eps`` in ``bound`` (ignored when symmetric).
        projection_bias: whether the projections have a bias.
        dither: training only. Probability, per batch element, of replacing the
            rounding by additive uniform noise of one level step.
        passthrough: training only. Probability, per batch element, of passing the
            unquantized (bounded, normalised) value through. Indices always come
            from the clean rounded value.
        check_finite: raise ``ValueError`` on NaN/inf inputs (one extra reduction;
            skipped while a graph is captured; fused into the fast path's kernel).
            Unchecked NaN inputs give NaN codes and digit 0 (always valid indices).
        fast: the fused kernels (:mod:`fsqkit.quantizers._fsq_backends`): C on CPU,
            Triton on CUDA; same codes, indices and gradients as the reference
            path, bit for bit. ``None``: use them where they apply
            (float32/bf16/fp16, no graph capture), else the reference path;
            ``False``: always the reference path; ``True``: like ``None`` but
            raise ``RuntimeError`` if the CPU kernel cannot be built.
        return_indices: compute indices. ``False`` returns the quantized values only
            (``indices`` is None); required for codebooks of more than ``2**63``
            codes (e.g. ``[16] * 16``), whose indices do not fit int64.
        bound: ``"paper"`` (the paper's ``half_l = (L - 1)(1 - eps) / 2``) or
            ``"vq-pytorch"``: vector-quantize-pytorch's bins, bit for bit (its
            ``(1 + eps)`` bound, float32-derived constants, and ``floor(x + 0.5)``
            in the symmetric variant), so a model trained with it keeps its tokens.
            See :mod:`fsqkit.quantizers.fsq_math`.

    Forward: ``z`` of shape ``(..., C)`` (or channel-first) -> :class:`QuantizerOutput`
    with ``quantized`` of the same shape and dtype, ``indices`` of shape ``(...)``
    (``(..., G)`` when ``G > 1``), and a zero ``aux_loss``. Quantization runs in
    float32 with autocast disabled, so indices are exact for bf16/fp16 inputs.

    Example::

        >>> import torch
        >>> from fsqkit import FSQ
        >>> fsq = FSQ([8, 5, 5, 5], dim=16, channel_first=True)  # 1000 codes
        >>> out = fsq(torch.randn(2, 16, 8, 8))
        >>> out.quantized.shape, out.indices.shape, out.indices.dtype
        (torch.Size([2, 16, 8, 8]), torch.Size([2, 8, 8]), torch.int32)
        >>> torch.equal(fsq.eval().indices_to_codes(out.indices), out.quantized)
        True
        >>> quantized, indices, aux_loss = fsq(torch.randn(2, 16, 8, 8))  # unpacks too
    """

    def __init__(
        self,
        levels: Sequence[int],
        dim: int | None = None,
        num_codebooks: int = 1,
        channel_first: bool = False,
        symmetric: bool = False,
        eps: float = 1e-3,
        projection_bias: bool = True,
        dither: float = 0.0,
        passthrough: float = 0.0,
        check_finite: bool = True,
        fast: bool | None = None,
        return_indices: bool = True,
        bound: str = "paper",
    ) -> None:
        super().__init__()
        self.levels = validate_levels(levels, allow_two=symmetric)
        self.num_codebooks = check_positive_int(num_codebooks, "num_codebooks")
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps must be in (0, 1), got {eps}")
        for name, p in (("dither", dither), ("passthrough", passthrough)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        if dither + passthrough > 1.0:
            raise ValueError(f"dither + passthrough must be <= 1, got {dither + passthrough}")
        self.codebook_dim = len(self.levels)
        effective = self.codebook_dim * num_codebooks
        self.dim = check_positive_int(effective if dim is None else dim, "dim")
        self.channel_first = channel_first
        self.symmetric = symmetric
        self.eps = eps
        self.dither = float(dither)
        self.passthrough = float(passthrough)
        self.check_finite = check_finite
        if fast is not None and not isinstance(fast, bool):
            raise TypeError(f"fast must be True, False or None, got {fast!r}")
        self.fast = fast
        # Python constants: module casts (.half(), .to(dtype)) cannot change them.
        self.constants = FSQConstants.build(self.levels, eps=eps, symmetric=symmetric, bound=bound)
        self.bound = bound
        self.codebook_size = self.constants.codebook_size
        self.index_dtype = index_dtype(self.codebook_size)
        self.return_indices = bool(return_indices)
        if self.return_indices and self.codebook_size > MAX_INDEXED_CODES:
            raise ValueError(self._no_indices_message() + "; pass return_indices=False to get "
                             "the quantized values only (indices=None)")  # fmt: skip

        self.has_projections = self.dim != effective
        if self.has_projections:
            self.project_in: nn.Module = nn.Linear(self.dim, effective, bias=projection_bias)
            self.project_out: nn.Module = nn.Linear(effective, self.dim, bias=projection_bias)
        else:
            self.project_in = nn.Identity()
            self.project_out = nn.Identity()

    # ------------------------------------------------------------ quantization
    def quantize_digits(self, z: Tensor, apply_dither: bool = True) -> tuple[Tensor, Tensor]:
        """Core quantization on float32 ``z`` of shape ``(..., D)``.

        Returns ``(codes, digits)``: ``codes`` float32 in ``[-1, 1]`` with the
        straight-through gradient (and training-time dither unless
        ``apply_dither=False``), ``digits`` the clean integer digits ``(..., D)``
        in ``[0, L_i)`` as float32 (detached); a NaN gets digit 0 unless ``forward``
        has checked the input for NaN (``check_finite``, eager mode).
        """
        c = self.constants
        t = c.tensors(z.device)
        x = grid_value(z, c, t)  # (..., D)
        q = round_grid(x, c)
        digits = clamped_digits(q.detach(), c, t, nan_to_zero=not self._checks_finite())
        if apply_dither and self.training and (self.dither > 0 or self.passthrough > 0):
            q = self._dither(x, q)
        return codes_from_grid(q, c, t), digits

    def _dither(self, x: Tensor, rounded: Tensor) -> Tensor:
        """Training-time mixing, one draw per batch element (dim 0): with probability
        ``dither`` add uniform noise of one level step instead of rounding; with
        probability ``passthrough`` keep the unrounded value."""
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        u = torch.rand(shape, device=x.device)
        noisy = x + (torch.rand_like(x) - 0.5)
        use_noise = u < self.dither
        use_pass = (u >= self.dither) & (u < self.dither + self.passthrough)
        return torch.where(use_noise, noisy, torch.where(use_pass, x, rounded))

    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize ``z`` ``(..., C)`` (channel-first ``(B, C, ...)`` with
        ``channel_first``): see the class docstring for the output."""
        fuse = self._may_fuse()
        # Without projections the fused kernels check finiteness themselves.
        checked = self.check_finite and (self.has_projections or not fuse)
        check_input(z, self.dim, self.channel_first, "FSQ", check_finite=checked)
        if fuse:
            out = self._fused_forward(z)
            if out is not None:
                return out
        if self.check_finite and not checked:
            check_finite_values(z, "FSQ")
        return self._reference_forward(z)

    def _checks_finite(self) -> bool:
        """Whether what is quantized was checked for NaN (``forward`` checks its input,
        in eager mode; a projection's output is not checked)."""
        return self.check_finite and not self.has_projections and not graph_capture()

    def _may_fuse(self) -> bool:
        """Whether a fused kernel may run (the back-end decides whether one does)."""
        if self.fast is False or graph_capture():
            return False
        if self.training and (self.dither > 0 or self.passthrough > 0):
            return False
        return not self.has_projections or self._proj_dtype() in SUPPORTED_DTYPES

    def _fused_forward(self, z: Tensor) -> QuantizerOutput | None:
        """``forward`` through a fused kernel; None where the reference path must run."""
        require = self.fast is True
        if not self.has_projections:
            result = fused_quantize(
                z, self.constants, channel_first=self.channel_first, out_dtype=z.dtype,
                raise_on_nonfinite=self.check_finite, require_cpu_kernel=require,
            )  # fmt: skip
            return None if result is None else self._output(*result)
        zp = self.project_in(to_channel_last(z, self.channel_first)).contiguous()  # (..., G*D)
        with torch.autocast(device_type=z.device.type, enabled=False):
            result = fused_quantize(
                zp, self.constants, channel_first=False, out_dtype=torch.float32,
                raise_on_nonfinite=False, require_cpu_kernel=require,
            )  # fmt: skip
        if result is None:
            return None
        codes, indices = result
        out = self.project_out(codes.to(self._proj_dtype())).to(z.dtype)
        return self._output(from_channel_last(out, self.channel_first), indices)

    def _reference_forward(self, z: Tensor) -> QuantizerOutput:
        orig_dtype = z.dtype
        z = to_channel_last(z, self.channel_first)
        z = self.project_in(z)  # (..., G*D)
        with torch.autocast(device_type=z.device.type, enabled=False):
            zq = z.float().unflatten(-1, (self.num_codebooks, self.codebook_dim))  # (..., G, D)
            codes, digits = self.quantize_digits(zq)
            basis = self.constants.tensors(z.device).basis
            indices = None
            if self.return_indices:
                indices = digits_to_indices(digits, basis, self.index_dtype)  # (..., G)
                indices = indices.squeeze(-1) if self.num_codebooks == 1 else indices
            codes = codes.flatten(-2)  # (..., G*D)
        if self.has_projections:
            codes = codes.to(self._proj_dtype())
        out = self.project_out(codes).to(orig_dtype)
        return self._output(from_channel_last(out, self.channel_first), indices)

    def _output(self, quantized: Tensor, indices: Tensor | None) -> QuantizerOutput:
        return QuantizerOutput(
            quantized=quantized,
            indices=indices if self.return_indices else None,
            aux_loss=zero_loss(quantized),
            codebook_size=self.codebook_size,
        )

    def _proj_dtype(self) -> torch.dtype:
        return self.project_out.weight.dtype  # type: ignore[union-attr]

    # ------------------------------------------------------ codes and indices
    def _no_indices_message(self) -> str:
        return (
            f"FSQ levels {self.levels} have {self.codebook_size} codes (more than 2**63): "
            f"their indices do not fit int64"
        )

    def _check_indices(self, indices: Tensor) -> Tensor:
        """Validate ``indices``; returns them as ``(..., G)``."""
        if self.codebook_size > MAX_INDEXED_CODES:
            raise ValueError(self._no_indices_message())
        check_index_tensor(indices, self.codebook_size)
        if self.num_codebooks > 1 and (
            indices.ndim == 0 or indices.shape[-1] != self.num_codebooks
        ):
            raise ValueError(
                f"with num_codebooks={self.num_codebooks}, indices must have a trailing "
                f"dimension of size {self.num_codebooks}, got shape {tuple(indices.shape)}"
            )
        return indices if self.num_codebooks > 1 else indices.unsqueeze(-1)

    def _digits(self, idx: Tensor) -> Tensor:
        """``(..., G)`` indices -> ``(..., G, D)`` int64 digits."""
        t = self.constants.tensors(idx.device)
        return indices_to_digits(idx, t.basis_long, t.levels_long)

    def indices_to_digits(self, indices: Tensor) -> Tensor:
        """Per-dimension digits (for factorised embeddings).

        ``(...)`` (or ``(..., G)``) integer indices -> ``(..., D)`` (or ``(..., G, D)``)
        int64 digits with ``0 <= digit_i < L_i``."""
        digits = self._digits(self._check_indices(indices))
        return digits.squeeze(-2) if self.num_codebooks == 1 else digits

    def indices_to_codes(self, indices: Tensor, project_out: bool = True) -> Tensor:
        """Indices -> what ``forward`` returns as ``quantized`` (in eval mode).

        ``(...)`` (or ``(..., G)``) -> ``(..., C)``, or channel-first ``(B, C, ...)``
        when ``channel_first`` and the result has >= 3 dimensions. Float32, or the
        projection's dtype. With ``project_out=False`` the raw ``(..., G*D)`` codes.
        """
        digits = self._digits(self._check_indices(indices))  # (..., G, D)
        t = self.constants.tensors(indices.device)
        codes = digits_to_codes(digits, self.constants, t).flatten(-2)  # (..., G*D)
        if project_out:
            if self.has_projections:
                codes = self.project_out(codes.to(self._proj_dtype()))
            codes = from_channel_last(codes, self.channel_first)
        return codes

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Normalised codes ``(..., G*D)`` (channel-last, before ``project_out``) ->
        indices ``(...)`` / ``(..., G)``. Codes are rounded to the grid in float32,
        so codes stored in bf16/fp16 map back to their exact indices."""
        if not codes.is_floating_point():
            raise TypeError(f"codes must be a floating-point tensor, got dtype {codes.dtype}")
        if self.codebook_size > MAX_INDEXED_CODES:
            raise ValueError(self._no_indices_message())
        width = self.codebook_dim * self.num_codebooks
        if codes.shape[-1] != width:
            raise ValueError(
                f"codes must have a last dimension of size {width} (num_codebooks * "
                f"len(levels)), got shape {tuple(codes.shape)}"
            )
        t = self.constants.tensors(codes.device)
        c = codes.float().unflatten(-1, (self.num_codebooks, self.codebook_dim))
        if self.symmetric:
            digits = torch.round((c + 1.0) * (t.levels - 1) / 2.0)
        else:
            digits = torch.round(c * t.half_width) + t.half_width
        digits = nan_to_zero_(torch.minimum(digits.clamp_min(0), t.levels - 1))
        indices = digits_to_indices(digits, t.basis, self.index_dtype)
        return indices.squeeze(-1) if self.num_codebooks == 1 else indices

    @property
    def implicit_codebook(self) -> Tensor:
        """All ``K`` codes, ``(K, D)`` float32, row ``i`` = code of index ``i``, on the
        device of the projections (CPU without them).

        Built on each access; raises ``ValueError`` instead of allocating more than
        1 GiB (e.g. levels ``[4] * 16`` would need 34 GB)."""
        nbytes = self.codebook_size * self.codebook_dim * 4
        if nbytes > MAX_IMPLICIT_CODEBOOK_BYTES:
            raise ValueError(
                f"the implicit codebook of levels {self.levels} has {self.codebook_size} codes "
                f"({nbytes / 2**30:.1f} GiB); refusing to build it. Convert indices in chunks "
                f"with indices_to_codes(...) instead."
            )
        device = next((p.device for p in self.parameters()), torch.device("cpu"))
        digits = self._digits(torch.arange(self.codebook_size, device=device).unsqueeze(-1))
        return digits_to_codes(digits.squeeze(-2), self.constants, self.constants.tensors(device))

    def extra_repr(self) -> str:
        parts = [f"levels={self.levels}", f"codebook_size={self.codebook_size}", f"dim={self.dim}"]
        if self.num_codebooks > 1:
            parts.append(f"num_codebooks={self.num_codebooks}")
        if self.channel_first:
            parts.append("channel_first=True")
        if self.symmetric:
            parts.append("symmetric=True")
        if self.bound != "paper":
            parts.append(f"bound={self.bound!r}")
        return ", ".join(parts)


@register_quantizer("fsq")
def _build_fsq(**kwargs) -> FSQ:
    return FSQ(**kwargs)
