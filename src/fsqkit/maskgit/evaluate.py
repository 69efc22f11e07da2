"""Measuring a trained MaskGIT model.

- :func:`compression_cost`: the FSQ paper's Fig. 3 metric. The model's negative
  log-likelihood, in bits per image, when tokens are revealed in a
  *deterministic* masking schedule: a fixed pseudo-random order of the ``S``
  positions (seeded) cut into ``T`` steps of :func:`decoding_schedule` sizes. At
  each step the model sees the tokens revealed so far and pays ``-log2 p`` for
  each token of this step. Encoder and decoder can both compute these
  distributions, so an entropy coder reaches this size (within a few bits); it
  is an upper bound on what the model can compress to.
- :func:`evaluate_generation`: one call for sample quality (Fréchet distance,
  precision, recall against held-out real images), class accuracy of
  conditional samples (with the judge's accuracy on real held-out images beside
  it) and the compression cost of the held-out token grids.

Dimension legend: ``N`` images, ``S`` tokens per image, ``K`` codebook size,
``H, W`` image size, ``h, w`` token grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from fsqkit.data import ImageDataset
from fsqkit.maskgit.model import MaskGITTransformer
from fsqkit.maskgit.sampling import sample_tokens
from fsqkit.maskgit.schedule import decoding_schedule
from fsqkit.metrics.classifier import PixelClassifier
from fsqkit.metrics.features import FeatureExtractor, RandomConvFeatures
from fsqkit.metrics.fid import FeatureStats, fid_from_stats, gather_rows, shard
from fsqkit.metrics.inception import is_inception
from fsqkit.metrics.precision_recall import precision_recall
from fsqkit.metrics.sample_quality import feature_quality
from fsqkit.tokenizer import Tokenizer
from fsqkit.training.distributed import DistInfo


@torch.no_grad()
def compression_cost(
    model: torch.nn.Module,
    tokens: Tensor,
    labels: Tensor | None = None,
    *,
    num_steps: int = 12,
    order_seed: int = 0,
    batch_size: int = 128,
) -> dict[str, float]:
    """Bits per image of ``tokens [N, h, w]`` (or ``[N, S]``) under the model.

    Args:
        model: a :class:`~fsqkit.maskgit.model.MaskGITTransformer`.
        tokens: token ids in ``[0, K)``.
        labels: class labels ``[N]`` to condition on (``None``: "no class").
        num_steps: ``T`` of the deterministic schedule.
        order_seed: seed of the fixed reveal order.

    Returns:
        ``{"bits_per_image", "bits_per_token", "raw_bits_per_image"}`` where the raw
        size is ``S · log2 K`` (no model).
    """
    config = model.config
    tokens = tokens.reshape(tokens.shape[0], -1)
    s = config.seq_len
    if tokens.shape[1] != s:
        raise ValueError(
            f"tokens must have {s} positions per image (grid {config.grid}), got {tokens.shape[1]}"
        )
    schedule = decoding_schedule(s, num_steps)
    order = torch.randperm(s, generator=torch.Generator().manual_seed(order_seed))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        for start in range(0, len(tokens), batch_size):
            x = tokens[start : start + batch_size].to(device).long()
            lab = labels[start : start + batch_size].to(device) if labels is not None else None
            inputs = torch.full_like(x, config.mask_id)
            pos = 0
            for count in schedule:
                # Only this step's positions need logits (the output head is the
                # largest product); ascending, as boolean selection returns them.
                step_pos = order[pos : pos + count].sort().values.to(device)
                select = torch.zeros(s, dtype=torch.bool, device=device)
                select[step_pos] = True
                logits = model(inputs, lab, select=select.expand(len(x), s))  # [b * count, K]
                logp = torch.log_softmax(logits.float(), dim=-1)
                target = x[:, step_pos]  # [b, count]
                total -= logp.gather(-1, target.reshape(-1, 1)).sum().item()
                inputs[:, step_pos] = target
                pos += count
    finally:
        model.train(was_training)
    bits = total / math.log(2) / len(tokens)
    return {
        "bits_per_image": bits,
        "bits_per_token": bits / s,
        "raw_bits_per_image": s * math.log2(config.codebook_size),
    }


@dataclass
class GenerationEval:
    """Result of :func:`evaluate_generation`.

    Attributes:
        metrics: ``fd``, ``precision``, ``recall`` (samples vs held-out real images;
            also ``fid`` when the features are Inception-v3's),
            ``bits_per_image`` / ``bits_per_token`` / ``raw_bits_per_image``
            (compression cost of the held-out images' tokens), and for conditional
            models ``class_accuracy`` (samples classified as the requested class)
            and ``real_accuracy`` (the same classifier on held-out real images).
        samples: ``[N, 3, H, W]`` decoded samples in ``[0, 1]``.
        tokens: ``[N, h, w]`` the sampled token grids.
        labels: ``[N]`` requested classes (``None`` for unconditional models).
    """

    metrics: dict[str, float]
    samples: Tensor
    tokens: Tensor
    labels: Tensor | None


@torch.no_grad()
def evaluate_generation(
    model: MaskGITTransformer,
    tokenizer: Tokenizer,
    val: ImageDataset,
    train: ImageDataset | None = None,
    *,
    num_samples: int = 200,
    num_steps: int = 12,
    guidance: float = 0.0,
    seed: int = 0,
    extractor: FeatureExtractor | None = None,
    compression_steps: int | None = None,
    real_features: Tensor | None = None,
) -> GenerationEval:
    """Sample ``num_samples`` images and measure them (see :class:`GenerationEval`).

    Conditional models get the classes in turn (``0, 1, …, N-1, 0, …``). The class
    judge (:class:`PixelClassifier`) is trained on ``train``'s real images.
    ``real_features``: ``extractor(val images)`` if already computed (saves a pass).
    """
    conditional = model.config.num_classes > 0
    labels = torch.arange(num_samples) % model.config.num_classes if conditional else None
    tokens = sample_tokens(
        model, num_samples, labels, num_steps=num_steps, guidance=guidance, seed=seed
    )
    device = next(tokenizer.parameters()).device
    samples = torch.cat([tokenizer.decode(t.to(device)).cpu() for t in tokens.split(256)])
    real = val.batch(slice(None))
    extractor = extractor or RandomConvFeatures()
    real_f = extractor(real) if real_features is None else real_features
    metrics = feature_quality(real_f, extractor(samples))
    if is_inception(extractor):
        metrics["fid"] = metrics["fd"]  # the Fréchet distance of Inception features
    val_tokens = torch.cat([tokenizer.encode(x.to(device)).cpu() for x in real.split(256)])
    val_labels = val.labels if conditional else None
    steps = compression_steps or min(num_steps, model.config.seq_len)
    metrics.update(compression_cost(model, val_tokens, val_labels, num_steps=steps))
    if conditional:
        if train is None or train.labels is None or val.labels is None:
            raise ValueError("class accuracy needs labelled train and val data sets")
        judge = PixelClassifier().fit(train.batch(slice(None)), train.labels)
        metrics["class_accuracy"] = judge.accuracy(samples, labels)
        metrics["real_accuracy"] = judge.accuracy(real, val.labels)
    return GenerationEval(metrics, samples, tokens, labels)


@torch.no_grad()
def sample_fid(
    model: MaskGITTransformer,
    tokenizer: Tokenizer,
    val: ImageDataset,
    extractor: FeatureExtractor,
    num_samples: int,
    *,
    info: DistInfo | None = None,
    num_steps: int = 12,
    seed: int = 0,
    batch_size: int = 64,
    pr_samples: int = 10_000,
    real: tuple[FeatureStats, Tensor] | None = None,
) -> tuple[dict[str, float], tuple[FeatureStats, Tensor]]:
    """Sampling FID against all of ``val``, streamed: each rank samples and
    measures its share of ``num_samples`` (conditional models get the classes in
    turn) and of ``val``; the statistics are summed over ranks. Precision and
    recall use the first ``pr_samples`` of each.

    Returns ``({"fid" or "sample_fd", "precision", "recall"}, real)`` where
    ``real`` (the validation statistics and precision/recall features) can be
    passed back to skip the real images next time.
    """
    info = info or DistInfo()
    device = next(tokenizer.parameters()).device
    if real is None:
        stats, kept = FeatureStats(), []
        for idx in torch.tensor(list(shard(len(val), info)), dtype=torch.long).split(batch_size):
            f = extractor(val.batch(idx))
            stats.update(f)
            kept.append(f[idx < pr_samples])
        stats.all_reduce(info)
        real = (stats, gather_rows(torch.cat(kept), info))
    fake, kept = FeatureStats(), []
    classes = model.config.num_classes
    for idx in torch.tensor(list(shard(num_samples, info)), dtype=torch.long).split(batch_size):
        labels = idx % classes if classes else None
        tokens = sample_tokens(
            model, len(idx), labels, num_steps=num_steps, seed=seed * 1_000_003 + int(idx[0])
        )
        f = extractor(tokenizer.decode(tokens.to(device)).cpu())
        fake.update(f)
        kept.append(f[idx < pr_samples])
    fake.all_reduce(info)
    precision, recall = precision_recall(real[1], gather_rows(torch.cat(kept), info))
    key = "fid" if is_inception(extractor) else "sample_fd"
    return {key: fid_from_stats(real[0], fake), "precision": precision, "recall": recall}, real
