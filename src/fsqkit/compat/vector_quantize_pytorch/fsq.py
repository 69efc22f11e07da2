"""vector-quantize-pytorch 1.32's ``FSQ`` on fsqkit's :class:`fsqkit.FSQ`.

Dimension legend: ``B`` batch, ``N`` positions, ``C`` ``dim``, ``G``
``num_codebooks``, ``D = len(levels)``.

Same constructor arguments, forward signature (``xhat, indices = fsq(x)``),
layouts (inputs with 4 or more dimensions are channel-first, as are 3-D ones
with ``channel_first=True``), bins (``bound="vq-pytorch"``: bit for bit),
gradients and state-dict keys; quantized by fsqkit's exact, fused kernels.
Differences: float64 inputs are quantized in float32 (fsqkit's rule; codes of a
level with ``L // 2`` not a power of two differ by float32 rounding), indices are
int64 for codebooks of ``2**31`` codes or more (int32 wraps there), NaN/inf
inputs raise ``ValueError``, and the arguments in :data:`UNSUPPORTED` raise
``NotImplementedError`` unless left at their defaults.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fsqkit.compat.vector_quantize_pytorch._args import refuse_unsupported
from fsqkit.quantizers import FSQ as CoreFSQ
from fsqkit.quantizers.fsq_math import indices_to_digits
from fsqkit.quantizers.layout import from_channel_last, to_channel_last

# vector-quantize-pytorch arguments not implemented here, with their defaults.
UNSUPPORTED = {
    "noise_dropout": 0.0,
    "bound_hard_clamp": False,
    "orthogonal_rotation": False,
    "force_quantization_f32": True,
    "scale": None,
}


class FSQ(nn.Module):
    """vector-quantize-pytorch's ``FSQ``: ``xhat, indices = fsq(x)``.

    Args (as in vector-quantize-pytorch 1.32):
        levels: levels per dimension (2 needs ``preserve_symmetry=True``).
        dim: input channels; projections when it differs from ``G * D``.
        num_codebooks: ``G``.
        keep_num_codebooks_dim: keep a trailing ``G`` dimension in the indices
            (default: when ``G > 1``; required then).
        allowed_dtypes: dtypes quantized as they are; any subset of float32 and
            float64 (fsqkit quantizes both in float32).
        channel_first: 3-D inputs are ``(B, C, N)`` (4-D and 5-D always are).
        projection_has_bias: bias of the projections.
        return_indices: ``False``: ``indices`` is None.
        preserve_symmetry: the symmetric grid (arXiv 2411.19842).
        noise_dropout, bound_hard_clamp, orthogonal_rotation, scale,
        force_quantization_f32: only their defaults are supported.

    Example::

        >>> import torch
        >>> from fsqkit.compat.vector_quantize_pytorch import FSQ
        >>> quantizer = FSQ(levels=[8, 5, 5, 5])
        >>> x = torch.randn(1, 1024, 4)
        >>> xhat, indices = quantizer(x)
        >>> xhat.shape, indices.shape
        (torch.Size([1, 1024, 4]), torch.Size([1, 1024]))
        >>> bool(torch.all(xhat == quantizer.indices_to_codes(indices)))
        True
    """

    def __init__(
        self,
        levels: Sequence[int],
        dim: int | None = None,
        num_codebooks: int = 1,
        keep_num_codebooks_dim: bool | None = None,
        scale: float | None = None,
        allowed_dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64),
        channel_first: bool = False,
        projection_has_bias: bool = True,
        return_indices: bool = True,
        force_quantization_f32: bool = True,
        preserve_symmetry: bool = False,
        noise_dropout: float = 0.0,
        bound_hard_clamp: bool = False,
        orthogonal_rotation: bool = False,
    ) -> None:
        super().__init__()
        refuse_unsupported("FSQ", locals(), UNSUPPORTED)
        levels = list(levels)
        if 2 in levels and not preserve_symmetry:
            raise ValueError(f"levels {levels}: a level of 2 needs preserve_symmetry=True")
        if not set(allowed_dtypes) <= {torch.float32, torch.float64}:
            raise NotImplementedError(
                f"FSQ(allowed_dtypes={allowed_dtypes!r}): fsqkit quantizes in float32 "
                f"(exact indices); allowed_dtypes may only hold float32 and float64"
            )
        keep = num_codebooks > 1 if keep_num_codebooks_dim is None else keep_num_codebooks_dim
        if num_codebooks > 1 and not keep:
            raise ValueError("num_codebooks > 1 needs keep_num_codebooks_dim=True")
        self.core = CoreFSQ(
            levels, num_codebooks=num_codebooks, symmetric=preserve_symmetry,
            bound="vq-pytorch", return_indices=return_indices,
        )  # fmt: skip
        self.levels = self.core.levels
        self.codebook_dim = self.core.codebook_dim
        self.num_codebooks = num_codebooks
        self.effective_codebook_dim = self.codebook_dim * num_codebooks
        self.keep_num_codebooks_dim = keep
        self.dim = self.effective_codebook_dim if dim is None else dim
        self.channel_first = channel_first
        self.preserve_symmetry = preserve_symmetry
        self.return_indices = return_indices
        self.allowed_dtypes = allowed_dtypes
        self.force_quantization_f32 = force_quantization_f32
        self.codebook_size = self.core.codebook_size
        self.has_projections = self.dim != self.effective_codebook_dim
        effective, bias = self.effective_codebook_dim, projection_has_bias
        self.project_in: nn.Module = (
            nn.Linear(self.dim, effective, bias=bias) if self.has_projections else nn.Identity()
        )
        self.project_out: nn.Module = (
            nn.Linear(effective, self.dim, bias=bias) if self.has_projections else nn.Identity()
        )

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor | None]:
        """``z``: ``(B, N, C)``, or channel-first ``(B, C, ...)`` (4-D/5-D, or 3-D with
        ``channel_first``). Returns ``(xhat, indices)``: ``xhat`` like ``z``;
        indices ``(B, N)`` / ``(B, ...)``, with a trailing ``G`` when
        ``keep_num_codebooks_dim`` (None without ``return_indices``)."""
        channel_first = z.ndim >= 4 or self.channel_first
        z = to_channel_last(z, channel_first)
        if z.shape[-1] != self.dim:
            raise ValueError(
                f"expected dimension of {self.dim} but found dimension of {z.shape[-1]}"
            )
        out = self.core(self.project_in(z))
        xhat = from_channel_last(self.project_out(out.quantized), channel_first)
        indices = out.indices
        if indices is not None and self.keep_num_codebooks_dim and self.num_codebooks == 1:
            indices = indices.unsqueeze(-1)
        return xhat, indices

    def _core_indices(self, indices: Tensor) -> Tensor:
        if self.keep_num_codebooks_dim and self.num_codebooks == 1:
            return indices.squeeze(-1)
        return indices

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Indices as ``forward`` returns them -> ``xhat`` (channel-first for image or
        video indices, or with ``channel_first``)."""
        channel_first = indices.ndim >= 3 + int(self.keep_num_codebooks_dim) or self.channel_first
        codes = self.core.indices_to_codes(self._core_indices(indices))  # (..., G*D)
        return from_channel_last(self.project_out(codes), channel_first)

    def indices_to_level_indices(self, indices: Tensor) -> Tensor:
        """Per-dimension digits of indices of any shape: ``(...)`` -> ``(..., D)`` int32."""
        t = self.core.constants.tensors(indices.device)
        return indices_to_digits(indices, t.basis_long, t.levels_long).to(torch.int32)

    def codes_to_indices(self, zhat: Tensor) -> Tensor:
        """Codes of one codebook ``(..., D)`` (before ``project_out``) -> indices ``(...)``."""
        if zhat.shape[-1] != self.codebook_dim:
            raise ValueError(
                f"codes must end in codebook_dim={self.codebook_dim}, got {tuple(zhat.shape)}"
            )
        groups = zhat.unsqueeze(-2).expand(*zhat.shape[:-1], self.num_codebooks, self.codebook_dim)
        indices = self.core.codes_to_indices(groups.flatten(-2))
        return indices[..., 0] if self.num_codebooks > 1 else indices

    @property
    def implicit_codebook(self) -> Tensor:
        """All codes ``(K, D)`` float32, row ``i`` = code of index ``i``."""
        return self.core.implicit_codebook

    def extra_repr(self) -> str:
        return f"dim={self.dim}, channel_first={self.channel_first}"
