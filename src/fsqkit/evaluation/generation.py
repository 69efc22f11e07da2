"""One call that measures a trained MaskGIT model: sample quality (Fréchet
distance, precision, recall against held-out real images), class accuracy of
conditional samples (with the judge's accuracy on real held-out images beside
it), and compression cost of the held-out token grids.

Dimension legend: ``N`` samples, ``H, W`` image size, ``h, w`` token grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fsqkit.data import ImageDataset
from fsqkit.evaluation.classifier import PixelClassifier
from fsqkit.evaluation.compression import compression_cost
from fsqkit.evaluation.features import FeatureExtractor, RandomConvFeatures
from fsqkit.evaluation.frechet import frechet_distance_features
from fsqkit.evaluation.precision_recall import precision_recall
from fsqkit.maskgit.model import MaskGITTransformer
from fsqkit.maskgit.sampling import sample_tokens
from fsqkit.tokenizer import Tokenizer


@dataclass
class GenerationEval:
    """Result of :func:`evaluate_generation`.

    Attributes:
        metrics: ``fd``, ``precision``, ``recall`` (samples vs held-out real images),
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
    fake_f = extractor(samples)
    precision, recall = precision_recall(real_f, fake_f)
    metrics = {
        "fd": frechet_distance_features(real_f, fake_f),
        "precision": precision,
        "recall": recall,
    }
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
