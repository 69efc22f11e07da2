"""vector-quantize-pytorch 1.32's ``VectorQuantize`` (single head, EMA codebook).

Dimension legend: ``B`` batch, ``N`` positions, ``C`` ``dim``, ``D``
``codebook_dim``, ``K`` ``codebook_size``.

The semantics are vector-quantize-pytorch's, not :class:`fsqkit.VectorQuantizer`'s:
codebook ``(1, K, D)`` initialised with ``kaiming_uniform_`` (or k-means on the
first training batch: random distinct batch vectors, Lloyd iterations on
``-cdist``); nearest code by ``argmax(-sqrt(max(|x|^2 + |e|^2 - 2 x.e, 1e-8)))``;
in training, EMA statistics updated with ``lerp`` (``decay``), the codebook set
to the Laplace-smoothed mean (``eps``), then codes whose count fell below
``threshold_ema_dead_code`` replaced by random batch vectors; the output is the
code with the rotation-trick gradient (arXiv 2410.06424) or a straight-through
one; ``commitment_weight * mse(sg(code), x)`` as the loss in training (0 in
eval). Every step uses the same float operations in the same order, so a
checkpoint loaded from vector-quantize-pytorch gives the same codes, indices,
losses and updates. Arguments in :data:`UNSUPPORTED` raise unless left at their
defaults.
"""

from __future__ import annotations

import logging
from collections import namedtuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from fsqkit.compat.vector_quantize_pytorch._args import refuse_unsupported
from fsqkit.quantizers.layout import check_positive_int

log = logging.getLogger("fsqkit.compat")

LossBreakdown = namedtuple(
    "LossBreakdown", ["commitment", "codebook_diversity", "orthogonal_reg", "inplace_optimize"]
)

UNSUPPORTED = {
    "heads": 1,
    "separate_codebook_per_head": False,
    "layernorm_after_project_in": False,
    "commitment_use_cross_entropy_loss": False,
    "orthogonal_reg_weight": 0.0,
    "orthogonal_reg_active_codes_only": False,
    "orthogonal_reg_max_codes": None,
    "codebook_diversity_loss_weight": 0.0,
    "stochastic_sample_codes": False,
    "straight_through": False,
    "directional_reparam": False,
    "sync_affine_param": False,
    "ema_update": None,
    "vq_bridge": None,
    "manual_ema_update": False,
    "learnable_codebook": None,
    "in_place_codebook_optimizer": None,
    "manual_in_place_optimizer_update": False,
    "affine_param": False,
    "sync_update_v": 0.0,
}
UNSUPPORTED_FORWARD = {
    "indices": None,
    "mask": None,
    "lens": None,
    "topk": None,
    "codebook_transform_fn": None,
    "ema_update_weight": None,
    "accum_ema_update": False,
}


def l2norm(t: Tensor, dim: int = -1) -> Tensor:
    return F.normalize(t, p=2, dim=dim, eps=1e-6)


def neg_distances(x: Tensor, codes: Tensor) -> Tensor:
    """``-sqrt(max(|x|^2 + |e|^2 - 2 x.e, 1e-8))``, ``(H, N, D), (H, K, D) -> (H, N, K)``:
    vector-quantize-pytorch's formula and operation order (ties and rounding decide
    indices, so both must be the same)."""
    x2 = (x**2).sum(-1)
    e2 = (codes**2).sum(-1)
    xe = torch.einsum("bid,bjd->bij", x, codes) * -2
    return -(x2.unsqueeze(-1) + e2.unsqueeze(-2) + xe).clamp(min=1e-8).sqrt()


def sample_rows(samples: Tensor, num: int) -> Tensor:
    """``num`` rows of ``samples (n, D)``: distinct if there are enough, else drawn
    with replacement (torch's global generator, as vector-quantize-pytorch)."""
    n = samples.shape[0]
    if n >= num:
        picked = torch.randperm(n, device=samples.device)[:num]
    else:
        picked = torch.randint(0, n, (num,), device=samples.device)
    return samples[picked]


def kmeans(samples: Tensor, num_clusters: int, iters: int, cosine: bool) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means on ``samples (1, n, D)``: ``(means (1, K, D), counts (1, K))``."""
    means = torch.stack([sample_rows(s, num_clusters) for s in samples])
    bins = torch.zeros(0)
    for _ in range(iters):
        dists = samples @ means.transpose(-1, -2) if cosine else neg_distances(samples, means)
        buckets = dists.argmax(dim=-1)  # (1, n)
        bins = torch.zeros(
            buckets.shape[0], num_clusters, dtype=buckets.dtype, device=buckets.device
        )
        bins.scatter_add_(-1, buckets, torch.ones_like(buckets))
        empty = bins == 0
        sums = buckets.new_zeros(*bins.shape, samples.shape[-1], dtype=samples.dtype)
        sums.scatter_add_(1, buckets.unsqueeze(-1).expand(-1, -1, samples.shape[-1]), samples)
        new_means = sums / bins.masked_fill(empty, 1).unsqueeze(-1)
        if cosine:
            new_means = l2norm(new_means)
        means = torch.where(empty.unsqueeze(-1), means, new_means)
    return means, bins


def rotate_to(src: Tensor, tgt: Tensor) -> Tensor:
    """The rotation trick (arXiv 2410.06424, section 4.2): ``tgt``'s value (up to
    rounding) with the gradient of rotating and rescaling ``src`` onto it."""
    shape = src.shape
    src, tgt = src.reshape(-1, shape[-1]), tgt.reshape(-1, shape[-1])
    norm_src = src.norm(dim=-1, keepdim=True)
    norm_tgt = tgt.norm(dim=-1, keepdim=True)
    u = src / norm_src.clamp(min=1e-6)
    q = tgt / norm_tgt.clamp(min=1e-6)
    e = src.unsqueeze(1)  # (M, 1, D)
    w = l2norm(u + q, dim=1).detach()
    rotated = (
        e
        - 2 * (e @ w.unsqueeze(-1) @ w.unsqueeze(1))
        + 2 * (e @ u.unsqueeze(-1).detach() @ q.unsqueeze(1).detach())
    ).squeeze(1)
    return (rotated * (norm_tgt / norm_src.clamp(min=1e-6)).detach()).reshape(shape)


class EmaCodebook(nn.Module):
    """The codebook and its EMA statistics, with vector-quantize-pytorch's buffer
    names (``initted``, ``cluster_size (1, K)``, ``embed_avg (1, K, D)``,
    ``embed (1, K, D)``), so its state dicts load as they are."""

    def __init__(
        self, dim: int, codebook_size: int, kmeans_init: bool, kmeans_iters: int, decay: float,
        eps: float, threshold_ema_dead_code: float, cosine: bool, sync: bool,
    ) -> None:  # fmt: skip
        super().__init__()
        if kmeans_init:
            embed = torch.zeros(1, codebook_size, dim)
        else:
            embed = torch.empty(1, codebook_size, dim)
            nn.init.kaiming_uniform_(embed)
            if cosine:
                embed = l2norm(embed)
        self.codebook_size = codebook_size
        self.kmeans_iters = kmeans_iters
        self.decay = decay
        self.eps = eps
        self.threshold_ema_dead_code = threshold_ema_dead_code
        self.cosine = cosine
        self.sync = sync
        self.register_buffer("initted", torch.tensor(not kmeans_init))
        self.register_buffer("cluster_size", torch.ones(1, codebook_size))
        self.register_buffer("embed_avg", embed.clone())
        self.register_buffer("embed", embed)

    def _all_reduce(self, t: Tensor) -> None:
        if self.sync:
            dist.all_reduce(t)

    @torch.no_grad()
    def init_embed_(self, flat: Tensor) -> None:
        """k-means on the first training batch ``flat (1, N, D)``."""
        if bool(self.initted):
            return
        if flat.shape[-2] < self.codebook_size:
            log.warning(
                "k-means init received %d vectors for a codebook of %d: duplicates will be sampled",
                flat.shape[-2], self.codebook_size,
            )  # fmt: skip
        embed, counts = kmeans(flat, self.codebook_size, self.kmeans_iters, self.cosine)
        self.embed_avg.copy_(embed * counts.unsqueeze(-1))
        self.cluster_size.copy_(counts)
        self.update_ema()
        self.initted.fill_(True)

    @torch.no_grad()
    def update_ema(self) -> None:
        """Codebook = EMA sums / Laplace-smoothed EMA counts."""
        total = self.cluster_size.sum(dim=-1, keepdim=True)
        smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
        embed = self.embed_avg / smoothed.unsqueeze(-1)
        self.embed.copy_(l2norm(embed) if self.cosine else embed)

    @torch.no_grad()
    def update(self, flat: Tensor, onehot: Tensor, ema_update: bool) -> None:
        """EMA statistics of a training batch, the codebook, then dead-code expiry."""
        if not ema_update and self.threshold_ema_dead_code <= 0:
            return
        counts = onehot.sum(dim=1)
        self._all_reduce(counts)
        sums = torch.einsum("hnd,hnc->hcd", flat, onehot).contiguous()
        self._all_reduce(sums)
        self.cluster_size.lerp_(counts.to(self.cluster_size), 1.0 - self.decay)
        self.embed_avg.lerp_(sums.to(self.embed_avg), 1.0 - self.decay)
        if ema_update:
            self.update_ema()
        self.expire_codes_(flat)

    @torch.no_grad()
    def expire_codes_(self, flat: Tensor) -> None:
        """Codes whose EMA count is below the threshold become random batch vectors
        (at most as many as the batch has; the rest wait for later steps)."""
        if self.threshold_ema_dead_code <= 0 or not self.training:
            return
        expired = self.cluster_size < self.threshold_ema_dead_code
        if not bool(expired.any()):
            return
        samples = l2norm(flat[0]) if self.cosine else flat[0]
        if samples.numel() == 0:
            return
        mask = expired[0]
        num_dead = int(mask.sum())
        if num_dead > samples.shape[0]:
            dead = mask.nonzero(as_tuple=True)[0]
            dead = dead[torch.randperm(num_dead, device=mask.device)[: samples.shape[0]]]
            mask = torch.zeros_like(mask)
            mask[dead] = True
            num_dead = samples.shape[0]
        sampled = sample_rows(samples, num_dead).to(self.embed)
        reset = self.threshold_ema_dead_code
        self.embed[0][mask] = sampled
        self.cluster_size[0][mask] = reset
        self.embed_avg[0][mask] = sampled * reset

    def forward(self, x: Tensor, freeze: bool, ema_update: bool) -> tuple[Tensor, Tensor]:
        """``x (B, N, D)`` -> ``(codes (B, N, D) float32, indices (B, N) int64)``."""
        flat = x.float().reshape(1, -1, x.shape[-1])  # (1, B*N, D)
        self.init_embed_(flat)  # on the first call, training or not (as there)
        codes = self.embed.detach().float()
        if self.cosine:
            dist_ = torch.einsum("hnd,hcd->hnc", flat, codes)
        else:
            dist_ = neg_distances(flat, codes)
        indices = dist_.argmax(dim=-1)  # (1, B*N)
        quantize = F.embedding(indices[0], codes[0])
        if self.training and not freeze:
            onehot = F.one_hot(indices, self.codebook_size).float()
            self.update(flat, onehot, ema_update)
        return quantize.reshape(x.shape), indices[0].reshape(x.shape[:-1])


class VectorQuantize(nn.Module):
    """vector-quantize-pytorch's ``VectorQuantize``: ``quantized, indices, loss = vq(x)``.

    Supported arguments (as in vector-quantize-pytorch 1.32): ``dim``,
    ``codebook_size``, ``codebook_dim``, ``decay``, ``eps``, ``freeze_codebook``,
    ``kmeans_init``, ``kmeans_iters``, ``sync_kmeans``, ``use_cosine_sim``,
    ``threshold_ema_dead_code``, ``channel_last``, ``accept_image_fmap``,
    ``accept_3d_fmap``, ``commitment_weight``, ``rotation_trick``,
    ``sample_codebook_temp`` (no effect without stochastic sampling, as there),
    ``sync_codebook``, ``return_zeros_for_masked_padding``,
    ``route_gradients_to_input``. The others raise ``NotImplementedError`` unless
    left at their defaults. Under ``torch.distributed`` the EMA statistics are
    all-reduced; k-means init and dead-code expiry are not supported there.

    Example::

        >>> import torch
        >>> from fsqkit.compat.vector_quantize_pytorch import VectorQuantize
        >>> vq = VectorQuantize(dim=256, codebook_size=512, decay=0.8, commitment_weight=1.0)
        >>> x = torch.randn(1, 1024, 256)
        >>> quantized, indices, commit_loss = vq(x)
        >>> quantized.shape, indices.shape, commit_loss.shape
        (torch.Size([1, 1024, 256]), torch.Size([1, 1024]), torch.Size([]))
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        codebook_dim: int | None = None,
        heads: int = 1,
        separate_codebook_per_head: bool = False,
        decay: float = 0.8,
        eps: float = 1e-5,
        freeze_codebook: bool = False,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        sync_kmeans: bool = True,
        use_cosine_sim: bool = False,
        layernorm_after_project_in: bool = False,
        threshold_ema_dead_code: float = 0,
        channel_last: bool = True,
        accept_image_fmap: bool = False,
        accept_3d_fmap: bool = False,
        commitment_weight: float = 1.0,
        commitment_use_cross_entropy_loss: bool = False,
        orthogonal_reg_weight: float = 0.0,
        orthogonal_reg_active_codes_only: bool = False,
        orthogonal_reg_max_codes: int | None = None,
        codebook_diversity_loss_weight: float = 0.0,
        codebook_diversity_temperature: float = 100.0,
        stochastic_sample_codes: bool = False,
        sample_codebook_temp: float = 1.0,
        straight_through: bool = False,
        rotation_trick: bool | None = None,
        directional_reparam: bool = False,
        directional_reparam_variance: float = 5e-3,
        sync_codebook: bool | None = None,
        sync_affine_param: bool = False,
        ema_update: bool | None = None,
        vq_bridge: nn.Module | None = None,
        manual_ema_update: bool = False,
        learnable_codebook: bool | None = None,
        in_place_codebook_optimizer: object = None,
        manual_in_place_optimizer_update: bool = False,
        affine_param: bool = False,
        affine_param_batch_decay: float = 0.99,
        affine_param_codebook_decay: float = 0.9,
        sync_update_v: float = 0.0,
        return_zeros_for_masked_padding: bool = True,
        route_gradients_to_input: bool = True,
    ) -> None:
        super().__init__()
        given = dict(locals())
        if given["ema_update"] is True:
            given["ema_update"] = None  # the default is True here
        if given["learnable_codebook"] is False:
            given["learnable_codebook"] = None
        refuse_unsupported("VectorQuantize", given, UNSUPPORTED)
        self.dim = check_positive_int(dim, "dim")
        self.codebook_size = check_positive_int(codebook_size, "codebook_size")
        codebook_dim = (
            dim if codebook_dim is None else check_positive_int(codebook_dim, "codebook_dim")
        )
        self.heads = 1
        self.separate_codebook_per_head = False
        self.has_projections = codebook_dim != dim
        self.project_in: nn.Module = (
            nn.Linear(dim, codebook_dim) if self.has_projections else nn.Identity()
        )
        self.project_out: nn.Module = (
            nn.Linear(codebook_dim, dim) if self.has_projections else nn.Identity()
        )
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        if sync_codebook is None:
            sync_codebook = dist.is_initialized() and dist.get_world_size() > 1
        if sync_codebook and (kmeans_init or threshold_ema_dead_code > 0):
            raise NotImplementedError(
                "VectorQuantize under torch.distributed: kmeans_init and threshold_ema_dead_code "
                "are not supported by fsqkit.compat.vector_quantize_pytorch; see docs/migrating.md"
            )
        self._codebook = EmaCodebook(
            codebook_dim, codebook_size, kmeans_init, kmeans_iters, decay, eps,
            threshold_ema_dead_code, use_cosine_sim, bool(sync_codebook),
        )  # fmt: skip
        self.use_cosine_sim = use_cosine_sim
        self.commitment_weight = commitment_weight
        self.rotation_trick = dim > 1 if rotation_trick is None else rotation_trick
        self.route_gradients_to_input = route_gradients_to_input
        self.channel_last = channel_last
        self.accept_image_fmap = accept_image_fmap
        self.accept_3d_fmap = accept_3d_fmap
        self.freeze_codebook = freeze_codebook
        self.sample_codebook_temp = sample_codebook_temp
        self.return_zeros_for_masked_padding = return_zeros_for_masked_padding
        self.learnable_codebook = False
        self.ema_update = True

    @property
    def codebook(self) -> Tensor:
        """The codebook ``(K, D)``."""
        return self._codebook.embed[0]

    @codebook.setter
    def codebook(self, codes: Tensor) -> None:
        self._codebook.embed.copy_(codes.unsqueeze(0))

    def _channel_first_input(self) -> bool:
        return self.accept_image_fmap or self.accept_3d_fmap or not self.channel_last

    def get_codes_from_indices(self, indices: Tensor) -> Tensor:
        """Indices -> codes ``(..., D)`` (channel-first for image/3-D/channel-first use)."""
        codes = self.codebook[indices]
        return codes.movedim(-1, 1) if self._channel_first_input() else codes

    def get_output_from_indices(self, indices: Tensor) -> Tensor:
        """``project_out`` of :meth:`get_codes_from_indices` (as there: channel-first
        for image/3-D/channel-first use, where only an identity projection fits)."""
        return self.project_out(self.get_codes_from_indices(indices))

    def forward(
        self,
        x: Tensor,
        indices: Tensor | None = None,
        mask: Tensor | None = None,
        lens: Tensor | None = None,
        topk: int | None = None,
        sample_codebook_temp: float | None = None,
        freeze_codebook: bool | None = None,
        return_loss_breakdown: bool = False,
        codebook_transform_fn: object = None,
        ema_update_weight: Tensor | None = None,
        accum_ema_update: bool = False,
        ema_update: bool | None = None,
    ) -> tuple:
        """``x``: ``(B, N, C)``; ``(B, C)`` (one token); ``(B, C, N)`` without
        ``channel_last``; ``(B, C, H, W)`` with ``accept_image_fmap``; ``(B, C, T, H,
        W)`` with ``accept_3d_fmap``. Returns ``(quantized, indices, loss)`` (and a
        ``LossBreakdown`` with ``return_loss_breakdown``): quantized like ``x``,
        int64 indices ``(B, N)`` / ``(B, H, W)`` / ``(B, T, H, W)`` / ``(B,)``, loss
        a 0-d tensor (the weighted commitment loss in training, 0 in eval)."""
        refuse_unsupported("VectorQuantize.forward", locals(), UNSUPPORTED_FORWARD)
        freeze = self.freeze_codebook if freeze_codebook is None else freeze_codebook
        ema_update = True if ema_update is None else ema_update
        input_requires_grad = x.requires_grad
        only_one = x.ndim == 2
        if only_one:
            x = x.unsqueeze(1)
        dtype, spatial = x.dtype, x.shape[2:]
        if self.accept_image_fmap or self.accept_3d_fmap:
            x = x.flatten(2).transpose(1, 2)  # (B, H*W, C)
        elif not self.channel_last and not only_one:
            x = x.transpose(1, 2)
        x = self.project_in(x)
        if self.use_cosine_sim:
            x = l2norm(x)
        quantize, embed_ind = self._codebook(x, freeze, ema_update)
        quantize = quantize.type(dtype)
        commitment = loss = torch.zeros((), device=x.device)
        if self.training:
            commit_quantize = quantize.detach()
            if input_requires_grad and self.route_gradients_to_input:
                quantize = (
                    rotate_to(x, quantize) if self.rotation_trick else x + (quantize - x).detach()
                )
            if self.commitment_weight > 0:
                commitment = F.mse_loss(commit_quantize, x)
                loss = loss + commitment * self.commitment_weight
        quantize = self.project_out(quantize)
        if self.accept_image_fmap or self.accept_3d_fmap:
            quantize = quantize.transpose(1, 2).reshape(*quantize.shape[:1], -1, *spatial)
            embed_ind = embed_ind.reshape(embed_ind.shape[0], *spatial)
        elif not self.channel_last and not only_one:
            quantize = quantize.transpose(1, 2)
        if only_one:
            quantize, embed_ind = quantize.squeeze(1), embed_ind.squeeze(1)
        if return_loss_breakdown:
            zero = torch.zeros((), device=x.device)
            return quantize, embed_ind, loss, LossBreakdown(commitment, zero, zero, zero)
        return quantize, embed_ind, loss
