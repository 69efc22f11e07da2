"""Finite Scalar Quantization (Mentzer et al., "Finite Scalar Quantization:
VQ-VAE Made Simple", arXiv 2309.15505).

Dimension legend: ``B`` batch, ``C`` model channels (``dim``), ``G``
``num_codebooks``, ``D = len(levels)``, ``K = prod(levels)``.

The quantizer projects (optionally) to ``G * D`` channels, bounds each channel
with ``tanh``, rounds it to ``L_i`` levels with a straight-through gradient and
normalises to ``[-1, 1]``. Its implicit codebook is the product of the level
sets: no parameters, no auxiliary loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fsqkit.quantizers.base import Quantizer
from fsqkit.quantizers.fsq_fast import fast_forward, fast_path_applies
from fsqkit.quantizers.fsq_gpu import gpu_forward, gpu_path_applies
from fsqkit.quantizers.fsq_math import (
    FSQConstants,
    bound,
    digits_to_indices,
    indices_to_digits,
    round_ste,
    scaled_digits_symmetric,
)
from fsqkit.quantizers.levels import codebook_size_of, validate_levels
from fsqkit.quantizers.output import QuantizerOutput, index_dtype, zero_loss
from fsqkit.quantizers.registry import register_quantizer

# Refuse to materialise implicit codebooks larger than this many bytes.
MAX_IMPLICIT_CODEBOOK_BYTES = 2**30


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
            skipped under ``torch.compile``; fused into the fast path's kernel).
        fast: the fused kernels: C on CPU (:mod:`fsqkit.quantizers.fsq_fast`),
            Triton on CUDA (:mod:`fsqkit.quantizers.fsq_gpu`); same codes, indices
            and gradients as the reference path, bit for bit. ``None``: use them
            where they apply (float32/bf16/fp16, not tracing under
            ``torch.compile``), else the reference path; ``False``: always the
            reference path; ``True``: like ``None`` but raise ``RuntimeError`` if
            the CPU kernel cannot be built.

    Forward: ``z`` of shape ``(..., C)`` (or channel-first) -> :class:`QuantizerOutput`
    with ``quantized`` of the same shape and dtype, ``indices`` of shape ``(...)``
    (``(..., G)`` when ``G > 1``), and a zero ``aux_loss``. Quantization runs in
    float32 with autocast disabled, so indices are exact for bf16/fp16 inputs.
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
    ) -> None:
        super().__init__()
        self.levels = validate_levels(levels, allow_two=symmetric)
        if (
            isinstance(num_codebooks, bool)
            or not isinstance(num_codebooks, int)
            or num_codebooks < 1
        ):
            raise ValueError(f"num_codebooks must be a positive integer, got {num_codebooks!r}")
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps must be in (0, 1), got {eps}")
        for name, p in (("dither", dither), ("passthrough", passthrough)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        if dither + passthrough > 1.0:
            raise ValueError(f"dither + passthrough must be <= 1, got {dither + passthrough}")
        self.codebook_dim = len(self.levels)
        self.num_codebooks = num_codebooks
        effective = self.codebook_dim * num_codebooks
        if dim is None:
            dim = effective
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim = dim
        self.channel_first = channel_first
        self.symmetric = symmetric
        self.eps = eps
        self.dither = float(dither)
        self.passthrough = float(passthrough)
        self.check_finite = check_finite
        if fast is not None and not isinstance(fast, bool):
            raise TypeError(f"fast must be True, False or None, got {fast!r}")
        self.fast = fast
        self.codebook_size = codebook_size_of(self.levels)
        self.index_dtype = index_dtype(self.codebook_size)
        self.constants = FSQConstants.build(self.levels, eps=eps, symmetric=symmetric)

        self.has_projections = dim != effective
        if self.has_projections:
            self.project_in: nn.Module = nn.Linear(dim, effective, bias=projection_bias)
            self.project_out: nn.Module = nn.Linear(effective, dim, bias=projection_bias)
        else:
            self.project_in = nn.Identity()
            self.project_out = nn.Identity()

        c = self.constants
        f32 = torch.float32
        self.register_buffer("_levels", torch.tensor(c.levels, dtype=f32), persistent=False)
        self.register_buffer("_half_l", torch.tensor(c.half_l, dtype=f32), persistent=False)
        self.register_buffer("_offset", torch.tensor(c.offset, dtype=f32), persistent=False)
        self.register_buffer("_shift", torch.tensor(c.shift, dtype=f32), persistent=False)
        self.register_buffer("_half_width", torch.tensor(c.half_width, dtype=f32), persistent=False)
        self.register_buffer(
            "_basis", torch.tensor(c.basis, dtype=self.index_dtype), persistent=False
        )

    # ------------------------------------------------------------------ layout
    def _to_channel_last(self, z: Tensor) -> Tensor:
        if self.channel_first and z.ndim >= 3:
            return z.movedim(1, -1)
        return z

    def _from_channel_last(self, z: Tensor) -> Tensor:
        if self.channel_first and z.ndim >= 3:
            return z.movedim(-1, 1)
        return z

    def _check_input(self, z: Tensor, check_finite: bool | None = None) -> None:
        if not isinstance(z, Tensor):
            raise TypeError(f"FSQ expects a torch.Tensor, got {type(z).__name__}")
        if not z.is_floating_point():
            raise TypeError(f"FSQ expects a floating-point tensor, got dtype {z.dtype}")
        if z.ndim < 1:
            raise ValueError("FSQ expects a tensor with a channel dimension, got a scalar")
        channels_at_1 = self.channel_first and z.ndim >= 3
        if z.shape[1 if channels_at_1 else -1] != self.dim:
            where = "dim 1 (channel_first=True)" if channels_at_1 else "the last dimension"
            raise ValueError(
                f"FSQ expected {where} of size dim={self.dim}, got input of shape {tuple(z.shape)}"
            )
        if (
            (self.check_finite if check_finite is None else check_finite)
            and not torch.compiler.is_compiling()
            and not bool(torch.isfinite(z).all())
        ):
            raise ValueError("FSQ input contains NaN or infinite values")

    # ------------------------------------------------------------ quantization
    def quantize_digits(self, z: Tensor, apply_dither: bool = True) -> tuple[Tensor, Tensor]:
        """Core quantization on float32 ``z`` of shape ``(..., D)``.

        Returns ``(codes, digits)``: ``codes`` float32 in ``[-1, 1]`` with the
        straight-through gradient (and training-time dither unless
        ``apply_dither=False``), ``digits`` the clean integer digits ``(..., D)``
        in ``[0, L_i)`` as float32 (detached).
        """
        if self.symmetric:
            x = scaled_digits_symmetric(z, self._levels)  # (..., D) in [0, L-1]
        else:
            x = bound(z, self._half_l, self._offset, self._shift)  # (..., D)
        q = round_ste(x)
        clean = q.detach()
        digits = clean if self.symmetric else clean + self._half_width
        # Clamping is a no-op for finite inputs (the bound keeps x inside the grid);
        # it guarantees in-range indices whatever float rounding does.
        digits = torch.minimum(digits.clamp_min(0), self._levels - 1)
        if apply_dither and self.training and (self.dither > 0 or self.passthrough > 0):
            q = self._dither(x, q)
        if self.symmetric:
            codes = q * (2.0 / (self._levels - 1)) - 1.0
        else:
            codes = q / self._half_width
        return codes, digits

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
        if fast_path_applies(self, z):
            # The kernel checks finiteness itself; with projections z is checked here.
            self._check_input(z, check_finite=self.check_finite and self.has_projections)
            result = fast_forward(self, z)
            if result is not None:
                return result
        elif gpu_path_applies(self, z):
            self._check_input(z, check_finite=self.check_finite and self.has_projections)
            result = gpu_forward(self, z)
            if result is not None:
                return result
        self._check_input(z)
        orig_dtype = z.dtype
        z = self._to_channel_last(z)
        z = self.project_in(z)  # (..., G*D)
        with torch.autocast(device_type=z.device.type, enabled=False):
            zq = z.float().unflatten(-1, (self.num_codebooks, self.codebook_dim))  # (..., G, D)
            codes, digits = self.quantize_digits(zq)
            indices = digits_to_indices(digits, self._basis, self.index_dtype)  # (..., G)
            codes = codes.flatten(-2)  # (..., G*D)
        if self.has_projections:
            codes = codes.to(self._proj_dtype())
        out = self.project_out(codes).to(orig_dtype)
        out = self._from_channel_last(out)
        if self.num_codebooks == 1:
            indices = indices.squeeze(-1)
        return QuantizerOutput(
            quantized=out,
            indices=indices,
            aux_loss=zero_loss(out),
            codebook_size=self.codebook_size,
        )

    def _proj_dtype(self) -> torch.dtype:
        return self.project_out.weight.dtype  # type: ignore[union-attr]

    # ------------------------------------------------------ codes and indices
    def _check_indices(self, indices: Tensor) -> Tensor:
        if not isinstance(indices, Tensor):
            raise TypeError(f"indices must be a torch.Tensor, got {type(indices).__name__}")
        if (
            indices.dtype.is_floating_point
            or indices.dtype.is_complex
            or indices.dtype == torch.bool
        ):
            raise TypeError(f"indices must be an integer tensor, got dtype {indices.dtype}")
        if self.num_codebooks > 1 and (
            indices.ndim == 0 or indices.shape[-1] != self.num_codebooks
        ):
            raise ValueError(
                f"with num_codebooks={self.num_codebooks}, indices must have a trailing "
                f"dimension of size {self.num_codebooks}, got shape {tuple(indices.shape)}"
            )
        if indices.numel():
            lo, hi = int(indices.min()), int(indices.max())
            if lo < 0 or hi >= self.codebook_size:
                raise ValueError(
                    f"indices out of range: expected values in [0, {self.codebook_size}) for "
                    f"levels {self.levels}, got min {lo}, max {hi}"
                )
        return indices if self.num_codebooks > 1 else indices.unsqueeze(-1)

    def indices_to_digits(self, indices: Tensor) -> Tensor:
        """Per-dimension digits (for factorised embeddings).

        ``(...)`` (or ``(..., G)``) integer indices -> ``(..., D)`` (or ``(..., G, D)``)
        int64 digits with ``0 <= digit_i < L_i``."""
        idx = self._check_indices(indices)
        digits = indices_to_digits(idx, self._basis, self._levels)
        return digits.squeeze(-2) if self.num_codebooks == 1 else digits

    def _digits_to_codes(self, digits: Tensor) -> Tensor:
        d = digits.float()
        if self.symmetric:
            return d * (2.0 / (self._levels - 1)) - 1.0
        return (d - self._half_width) / self._half_width

    def indices_to_codes(self, indices: Tensor, project_out: bool = True) -> Tensor:
        """Indices -> what ``forward`` returns as ``quantized`` (in eval mode).

        ``(...)`` (or ``(..., G)``) -> ``(..., C)``, or channel-first ``(B, C, ...)``
        when ``channel_first`` and the result has >= 3 dimensions. Float32, or the
        projection's dtype. With ``project_out=False`` the raw ``(..., G*D)`` codes.
        """
        idx = self._check_indices(indices)
        digits = indices_to_digits(idx, self._basis, self._levels)  # (..., G, D)
        codes = self._digits_to_codes(digits).flatten(-2)  # (..., G*D)
        if project_out:
            if self.has_projections:
                codes = self.project_out(codes.to(self._proj_dtype()))
            codes = self._from_channel_last(codes)
        return codes

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Normalised codes ``(..., G*D)`` (channel-last, before ``project_out``) ->
        indices ``(...)`` / ``(..., G)``. Codes are rounded to the grid in float32,
        so codes stored in bf16/fp16 map back to their exact indices."""
        if not codes.is_floating_point():
            raise TypeError(f"codes must be a floating-point tensor, got dtype {codes.dtype}")
        width = self.codebook_dim * self.num_codebooks
        if codes.shape[-1] != width:
            raise ValueError(
                f"codes must have a last dimension of size {width} (num_codebooks * "
                f"len(levels)), got shape {tuple(codes.shape)}"
            )
        c = codes.float().unflatten(-1, (self.num_codebooks, self.codebook_dim))
        if self.symmetric:
            digits = torch.round((c + 1.0) * (self._levels - 1) / 2.0)
        else:
            digits = torch.round(c * self._half_width) + self._half_width
        digits = torch.minimum(digits.clamp_min(0), self._levels - 1)
        indices = digits_to_indices(digits, self._basis, self.index_dtype)
        return indices.squeeze(-1) if self.num_codebooks == 1 else indices

    @property
    def implicit_codebook(self) -> Tensor:
        """All ``K`` codes, ``(K, D)`` float32, row ``i`` = code of index ``i``.

        Built on first access; raises ``ValueError`` instead of allocating more than
        1 GiB (e.g. levels ``[4] * 16`` would need 34 GB)."""
        nbytes = self.codebook_size * self.codebook_dim * 4
        if nbytes > MAX_IMPLICIT_CODEBOOK_BYTES:
            raise ValueError(
                f"the implicit codebook of levels {self.levels} has {self.codebook_size} codes "
                f"({nbytes / 2**30:.1f} GiB); refusing to build it. Convert indices in chunks "
                f"with indices_to_codes(...) instead."
            )
        cached = getattr(self, "_codebook_cache", None)
        if cached is None or cached.device != self._levels.device:
            idx = torch.arange(self.codebook_size, device=self._levels.device)
            digits = indices_to_digits(idx, self._basis, self._levels)
            cached = self._digits_to_codes(digits)
            self._codebook_cache = cached
        return cached

    def extra_repr(self) -> str:
        parts = [f"levels={self.levels}", f"codebook_size={self.codebook_size}", f"dim={self.dim}"]
        if self.num_codebooks > 1:
            parts.append(f"num_codebooks={self.num_codebooks}")
        if self.channel_first:
            parts.append("channel_first=True")
        if self.symmetric:
            parts.append("symmetric=True")
        return ", ".join(parts)


@register_quantizer("fsq")
def _build_fsq(**kwargs) -> FSQ:
    return FSQ(**kwargs)


def bits_per_index(levels: Sequence[int]) -> float:
    """``log2(prod(levels))``: bits of one index."""
    return math.log2(codebook_size_of(levels))
