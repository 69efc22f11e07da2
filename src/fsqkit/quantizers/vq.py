"""Vector quantization baseline (van den Oord et al., "Neural Discrete
Representation Learning", arXiv 1711.00937), with the machinery the FSQ paper
compares against: EMA codebook updates, k-means initialisation, dead-code
reseeding, UViM's code splitting (arXiv 2205.10337) and MaskGIT's entropy
penalty (arXiv 2202.04200).

Dimension legend: ``B`` batch, ``C`` model channels (``dim``), ``N`` flattened
positions, ``K`` ``codebook_size``, ``D`` ``codebook_dim``.

Training-mode call order (``forward`` with ``module.training``):
1. maintenance on the incoming batch: k-means init (first call), then dead-code
   reseeding or splitting from the statistics of previous steps;
2. nearest-code search (chunked, float32) with the resulting codebook;
3. losses; 4. EMA statistics update (and, with ``learning="ema"``, the codebook).
Under ``torch.distributed`` steps 1 and 4 are synchronised: every rank calls the
same collectives (including ranks with empty batches and calls under
``torch.no_grad``), so all ranks keep bit-identical codebooks. Eval mode never
changes the codebook and never communicates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsqkit.quantizers.base import Quantizer
from fsqkit.quantizers.layout import (
    check_index_tensor,
    check_input,
    check_positive_int,
    from_channel_last,
    to_channel_last,
)
from fsqkit.quantizers.output import QuantizerOutput, index_dtype, zero_loss
from fsqkit.quantizers.registry import register_quantizer
from fsqkit.quantizers.vq_codebook import (
    ema_codebook,
    kmeans,
    reseed_dead_,
    split_codes_,
    synced_counts_and_sums,
)
from fsqkit.quantizers.vq_search import ENTROPY_TEMPORARIES, FLOAT_BYTES, entropy_penalty
from fsqkit.quantizers.vq_search import nearest_codes as _nearest_codes

LEARNING_MODES = ("ema", "loss")
DEFAULT_MAX_DISTANCE_BYTES = 2**27  # 128 MiB per distance block


def _check_nonneg(value: float, name: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return float(value)


class VectorQuantizer(Quantizer):
    """Nearest-neighbour vector quantizer with optional VQ training tricks.

    Args:
        dim: channel width ``C`` of the inputs.
        codebook_size: number of codes ``K`` (>= 1).
        codebook_dim: code dimension ``D``; if it differs from ``dim``, learned linear
            projections map ``C -> D`` before and ``D -> C`` after quantization.
        channel_first: inputs with >= 3 dims carry channels at dim 1.
        cosine: l2-normalise inputs and codes (distances on the unit sphere).
        learning: ``"ema"`` (codebook = exponential moving average of assigned
            vectors, not a parameter) or ``"loss"`` (codebook is an ``nn.Parameter``
            trained by the codebook loss ``||sg(z) - e||^2``).
        ema_decay: decay of the EMA statistics (codebook for ``"ema"``, and the
            discounted usage counts used for dead codes in both modes).
        commitment_weight: weight of ``||z - sg(e)||^2`` (VQ-VAE's beta, 0.25).
        codebook_weight: weight of the codebook loss (``learning="loss"`` only).
        entropy_weight: weight of MaskGIT's entropy penalty (0 disables it). It is
            computed in training mode or with gradients enabled; ``eval()`` calls
            under ``torch.no_grad()`` report it as 0.
        entropy_temperature: softmax temperature of the entropy penalty.
        kmeans_init: initialise the codebook by k-means on the first training batch.
        kmeans_iters: Lloyd iterations of the k-means init.
        reseed_dead: replace codes whose discounted count < ``dead_threshold`` by
            random vectors of the current batch.
        dead_threshold: discounted-count threshold of a dead code (reseeding and the
            ``dead_codes`` statistic).
        split_codes: UViM's code splitting: a code with discounted count
            < ``split_threshold`` is replaced by the most used code split in two.
        split_threshold: discounted-count threshold of the splitting.
        split_perturbation: scale of the multiplicative perturbation of a split.
        sync_distributed: synchronise statistics and maintenance across
            ``torch.distributed`` ranks (when initialised).
        max_distance_bytes: bound on any distance block of the search (and on the
            temporaries of one chunk of the entropy penalty).
        seed: seed of the generator of the split perturbations (combined with the
            step counter, so it is identical on all ranks).
        check_finite: raise ``ValueError`` on NaN/inf inputs (one reduction and one
            host read per call, in eager mode; skipped while a graph is captured).

    Forward: ``z`` ``(..., C)`` (or channel-first) -> :class:`QuantizerOutput` with
    ``quantized`` of the same shape and dtype (value: the selected codes, gradient:
    straight-through to ``z``), ``indices`` int32 ``(...)``, ``aux_loss`` = sum of
    ``losses`` ``{"commitment", "codebook", "entropy"}`` (weights applied), and
    ``extra_stats["dead_codes"]`` (a 0-d tensor: no host read in ``forward``;
    ``out.stats`` reads it). Search and losses run in float32 with autocast off.

    A forward pass reads nothing back to the host (no graph break under
    ``torch.compile``, ``fullgraph=True`` works, ``torch.export`` works in eval
    mode) except in training calls that reseed or split dead codes (they count
    them), or run the k-means initialisation under ``torch.distributed``.
    ``initted`` is mirrored in a Python flag when the module is built or its state
    dict is loaded, so checking it costs no host read.

    Presets: :meth:`plain` (no tricks), :meth:`with_tricks` (k-means init +
    reseeding, or splitting), :meth:`maskgit` (MaskGIT's VQGAN quantizer).

    Example::

        >>> import torch
        >>> from fsqkit import VectorQuantizer
        >>> vq = VectorQuantizer.with_tricks(64, 512, codebook_dim=8)
        >>> out = vq(torch.randn(4, 100, 64))  # training mode: k-means init, EMA update
        >>> out.indices.shape, sorted(out.losses)
        (torch.Size([4, 100]), ['codebook', 'commitment', 'entropy'])
        >>> loss = out.aux_loss  # add to the model's loss
        >>> vq = vq.eval()
        >>> z = torch.randn(4, 100, 64)
        >>> torch.equal(vq.indices_to_codes(vq(z).indices), vq(z).quantized)
        True
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        codebook_dim: int | None = None,
        channel_first: bool = False,
        cosine: bool = False,
        learning: str = "ema",
        ema_decay: float = 0.99,
        commitment_weight: float = 0.25,
        codebook_weight: float = 1.0,
        entropy_weight: float = 0.0,
        entropy_temperature: float = 0.01,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        reseed_dead: bool = False,
        dead_threshold: float = 0.1,
        split_codes: bool = False,
        split_threshold: float = 0.1,
        split_perturbation: float = 1e-3,
        sync_distributed: bool = True,
        max_distance_bytes: int = DEFAULT_MAX_DISTANCE_BYTES,
        seed: int = 0,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.codebook_size = check_positive_int(codebook_size, "codebook_size")
        self.codebook_dim = check_positive_int(
            dim if codebook_dim is None else codebook_dim, "codebook_dim"
        )
        if learning not in LEARNING_MODES:
            raise ValueError(f"learning must be one of {LEARNING_MODES}, got {learning!r}")
        if not isinstance(ema_decay, (int, float)) or not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {ema_decay!r}")
        self.commitment_weight = _check_nonneg(commitment_weight, "commitment_weight")
        self.codebook_weight = _check_nonneg(codebook_weight, "codebook_weight")
        self.entropy_weight = _check_nonneg(entropy_weight, "entropy_weight")
        if _check_nonneg(entropy_temperature, "entropy_temperature") == 0:
            raise ValueError("entropy_temperature must be > 0, got 0")
        self.dead_threshold = _check_nonneg(dead_threshold, "dead_threshold")
        self.split_threshold = _check_nonneg(split_threshold, "split_threshold")
        if _check_nonneg(split_perturbation, "split_perturbation") == 0 and split_codes:
            raise ValueError(
                "split_perturbation must be > 0: a split into two equal codes never separates"
            )
        self.kmeans_iters = check_positive_int(kmeans_iters, "kmeans_iters")
        if reseed_dead and split_codes:
            raise ValueError(
                "reseed_dead and split_codes are alternative dead-code strategies; enable one"
            )
        if learning == "ema" and codebook_weight != 1.0:
            raise ValueError(
                f"codebook_weight={codebook_weight} has no effect with learning='ema' (the "
                f"codebook follows an EMA, not a loss); use learning='loss' or leave it at 1.0"
            )
        if split_codes and self.codebook_size < 2:
            raise ValueError("split_codes needs codebook_size >= 2")
        self.max_distance_bytes = check_positive_int(max_distance_bytes, "max_distance_bytes")
        if max_distance_bytes < FLOAT_BYTES:
            raise ValueError(
                f"max_distance_bytes must be >= {FLOAT_BYTES}, got {max_distance_bytes}"
            )
        entropy_row = FLOAT_BYTES * ENTROPY_TEMPORARIES * self.codebook_size
        if self.entropy_weight > 0 and entropy_row > max_distance_bytes:
            raise ValueError(
                f"entropy_weight > 0 needs max_distance_bytes >= {entropy_row} "
                f"(one row of {self.codebook_size} softmax probabilities and its temporaries), "
                f"got {max_distance_bytes}"
            )
        self.channel_first = bool(channel_first)
        self.cosine = bool(cosine)
        self.learning = learning
        self.ema_decay = float(ema_decay)
        self.entropy_temperature = float(entropy_temperature)
        self.kmeans_init = bool(kmeans_init)
        self.reseed_dead = bool(reseed_dead)
        self.split_codes = bool(split_codes)
        self.split_perturbation = float(split_perturbation)
        self.sync_distributed = bool(sync_distributed)
        self.seed = int(seed)
        self.check_finite = bool(check_finite)
        self.index_dtype = index_dtype(self.codebook_size)

        k, d = self.codebook_size, self.codebook_dim
        self.has_projections = d != self.dim
        if self.has_projections:
            self.project_in: nn.Module = nn.Linear(self.dim, d)
            self.project_out: nn.Module = nn.Linear(d, self.dim)
        else:
            self.project_in = nn.Identity()
            self.project_out = nn.Identity()

        init = torch.randn(k, d)
        if self.learning == "loss":
            self.embed = nn.Parameter(init)
        else:
            self.register_buffer("embed", init)
            # Discounted sums start at the initial codes with a pseudo-count of one,
            # so an unused code stays where it is instead of decaying to zero.
            self.register_buffer("embed_sum", init.clone())
        self.register_buffer("cluster_size", torch.ones(k))  # (K,) discounted counts
        self.register_buffer("initted", torch.tensor(not self.kmeans_init))
        # ``initted`` as a Python flag: read without a host sync (or a graph break).
        self._kmeans_pending = self.kmeans_init
        self.register_load_state_dict_post_hook(_read_initted)
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    # ------------------------------------------------------------------ presets
    @classmethod
    def plain(cls, dim: int, codebook_size: int, **kwargs: object) -> VectorQuantizer:
        """VQ without tricks: EMA codebook, random init, no reseeding, no splitting."""
        return cls(dim, codebook_size, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def with_tricks(
        cls, dim: int, codebook_size: int, dead_codes: str = "reseed", **kwargs: object
    ) -> VectorQuantizer:
        """VQ with tricks: k-means init plus ``dead_codes="reseed"`` (reseed dead codes
        from the batch) or ``"split"`` (UViM's code splitting)."""
        if dead_codes not in ("reseed", "split"):
            raise ValueError(f"dead_codes must be 'reseed' or 'split', got {dead_codes!r}")
        opts: dict[str, object] = {"kmeans_init": True}
        opts["reseed_dead" if dead_codes == "reseed" else "split_codes"] = True
        opts.update(kwargs)
        return cls(dim, codebook_size, **opts)  # type: ignore[arg-type]

    @classmethod
    def maskgit(cls, dim: int, codebook_size: int = 1024, **kwargs: object) -> VectorQuantizer:
        """MaskGIT's VQGAN quantizer: codebook loss, commitment 0.25, entropy penalty
        0.1 at temperature 0.01."""
        opts: dict[str, object] = {
            "learning": "loss",
            "commitment_weight": 0.25,
            "entropy_weight": 0.1,
            "entropy_temperature": 0.01,
        }
        opts.update(kwargs)
        return cls(dim, codebook_size, **opts)  # type: ignore[arg-type]

    # ---------------------------------------------------------------- codebook
    @property
    def codebook(self) -> Tensor:
        """The effective codebook ``(K, D)`` float32 (unit rows when ``cosine``), detached."""
        return self._effective_codebook().detach()

    def _effective_codebook(self) -> Tensor:
        cb = self.embed.float()
        return F.normalize(cb, dim=-1) if self.cosine else cb

    @property
    def dead_code_threshold(self) -> float:
        return self.split_threshold if self.split_codes else self.dead_threshold

    def num_dead_codes(self) -> int:
        """Codes whose discounted count is below the active threshold."""
        return int(self._dead_code_count())

    def _dead_code_count(self) -> Tensor:
        """:meth:`num_dead_codes` as a 0-d int64 tensor (no host read)."""
        return (self.cluster_size < self.dead_code_threshold).sum().detach()

    def _generator(self) -> torch.Generator:
        # Same seed on every rank (the step counter is advanced identically).
        return torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.steps))

    @torch.no_grad()
    def _maintain(self, x: Tensor) -> None:
        """Step 1 of a training call (see the module docstring). ``x``: ``(N, D)``."""
        embed_sum = getattr(self, "embed_sum", None)
        sync = self.sync_distributed
        if self._kmeans_pending:
            centroids = kmeans(
                x, self.codebook_size, self.kmeans_iters, self.cosine, self.max_distance_bytes, sync
            )
            if centroids is not None:
                self.embed.copy_(centroids)
                if embed_sum is not None:
                    embed_sum.copy_(centroids * self.cluster_size.unsqueeze(-1))
                self.initted.fill_(True)
                self._kmeans_pending = False
        if self.reseed_dead:
            reseed_dead_(self.embed, self.cluster_size, embed_sum, x, self.dead_threshold, sync)
        elif self.split_codes:
            split_codes_(
                self.embed,
                self.cluster_size,
                embed_sum,
                self.split_threshold,
                self.split_perturbation,
                self._generator(),
            )

    @torch.no_grad()
    def _update_statistics(self, x: Tensor, indices: Tensor) -> None:
        """Step 4 of a training call: EMA of the (all-reduced) counts and sums."""
        ema = self.learning == "ema"
        counts, sums = synced_counts_and_sums(
            x, indices, self.codebook_size, with_sums=ema, sync=self.sync_distributed
        )
        decay = self.ema_decay
        self.cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
        if ema:
            assert sums is not None
            self.embed_sum.mul_(decay).add_(sums, alpha=1 - decay)
            self.embed.copy_(ema_codebook(self.cluster_size, self.embed_sum))
        self.steps += 1

    # ------------------------------------------------------------------ forward
    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize ``z`` ``(..., C)`` (channel-first ``(B, C, ...)`` with
        ``channel_first``); in training mode also maintain and update the codebook
        (module docstring). See the class docstring for the output."""
        check_input(z, self.dim, self.channel_first, "VectorQuantizer", self.check_finite)
        orig_dtype = z.dtype
        z = to_channel_last(z, self.channel_first)
        lead = z.shape[:-1]
        h = self.project_in(z)  # (..., D)
        with torch.autocast(device_type=z.device.type, enabled=False):
            x = h.float().reshape(-1, self.codebook_dim)  # (N, D)
            if self.cosine:
                x = F.normalize(x, dim=-1)
            if self.training:
                self._maintain(x.detach())
            cb = self._effective_codebook()  # (K, D)
            if self.learning == "ema" and self.training and cb is self.embed:
                # The EMA update below rewrites ``embed`` in place; the entropy
                # penalty's backward needs the codebook this forward used.
                cb = cb.clone()
            indices = _nearest_codes(x.detach(), cb.detach(), self.max_distance_bytes)  # (N,)
            codes = F.embedding(indices, cb)  # (N, D); grad to the codebook for "loss"
            losses = self._losses(x, codes, cb)
            # Straight-through: the value is exactly ``codes``, the gradient goes to x.
            quantized = codes.detach() + (x - x.detach())
            if self.training:
                self._update_statistics(x.detach(), indices)
        if self.has_projections:
            quantized = quantized.to(self.project_out.weight.dtype)  # type: ignore[union-attr]
        out = self.project_out(quantized).reshape(*lead, self.dim).to(orig_dtype)
        aux = losses["commitment"] + losses["codebook"] + losses["entropy"]
        return QuantizerOutput(
            quantized=from_channel_last(out, self.channel_first),
            indices=indices.to(self.index_dtype).reshape(lead),
            aux_loss=aux,
            losses=losses,
            codebook_size=self.codebook_size,
            extra_stats={"dead_codes": self._dead_code_count()},
        )

    def _losses(self, x: Tensor, codes: Tensor, cb: Tensor) -> dict[str, Tensor]:
        """Weighted loss terms. ``x``, ``codes``: ``(N, D)``; ``cb``: ``(K, D)``."""
        n_el = max(x.numel(), 1)  # sum / count keeps empty batches at an exact 0
        zero = zero_loss(x)
        commitment = zero
        if self.commitment_weight > 0:
            commitment = (x - codes.detach()).square().sum() / n_el * self.commitment_weight
        codebook = zero
        if self.learning == "loss" and self.codebook_weight > 0:
            codebook = (x.detach() - codes).square().sum() / n_el * self.codebook_weight
        entropy = zero
        # A training loss only: eval-mode inference without gradients (encoding a
        # data set) skips its softmax over all K codes (8x the cost of encoding).
        if self.entropy_weight > 0 and (self.training or torch.is_grad_enabled()):
            penalty = entropy_penalty(x, cb, self.entropy_temperature, self.max_distance_bytes)
            entropy = penalty * self.entropy_weight
        return {"commitment": commitment, "codebook": codebook, "entropy": entropy}

    # ---------------------------------------------------------------- decoding
    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Indices ``(...)`` -> what ``forward`` returns as ``quantized`` (exactly, in
        eval mode): ``(..., C)`` or channel-first ``(B, C, ...)``; float32 or the
        projection's dtype."""
        check_index_tensor(indices, self.codebook_size)
        lead = indices.shape
        codes = F.embedding(indices.reshape(-1).long(), self.codebook)  # (N, D)
        if self.has_projections:
            codes = codes.to(self.project_out.weight.dtype)  # type: ignore[union-attr]
        out = self.project_out(codes).reshape(*lead, self.dim)
        return from_channel_last(out, self.channel_first)

    def extra_repr(self) -> str:
        tricks = [
            name
            for name, on in (
                ("kmeans_init", self.kmeans_init),
                ("reseed_dead", self.reseed_dead),
                ("split_codes", self.split_codes),
                ("cosine", self.cosine),
            )
            if on
        ]
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, codebook_dim={self.codebook_dim}, "
            f"learning={self.learning!r}, tricks={tricks}"
        )


def _read_initted(module: VectorQuantizer, _incompatible_keys: object) -> None:
    """After ``load_state_dict``: the Python flag follows the loaded ``initted``."""
    module._kmeans_pending = not bool(module.initted)


@register_quantizer("vq")
def _build_vq(**kwargs: object) -> VectorQuantizer:
    return VectorQuantizer(**kwargs)  # type: ignore[arg-type]
