"""``digits``: scikit-learn's 8x8 handwritten digits (1797 images, labels 0-9),
upscaled (bilinear) to ``image_size`` and replicated to RGB.

The split is deterministic for a seed: a shuffled 80% / 20% train / val split.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fsqkit.data.dataset import ImageDataset

VAL_FRACTION = 0.2


def digits_dataset(split: str, *, image_size: int = 32, seed: int = 0) -> ImageDataset:
    """Upscaled digits with labels; ``(N, 3, image_size, image_size)``."""
    from sklearn.datasets import load_digits

    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if image_size < 8:
        raise ValueError(f"digits: image_size must be >= 8, got {image_size}")
    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8)
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(bunch.target.astype(np.int64))
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    n_val = round(len(y) * VAL_FRACTION)
    idx = perm[:n_val] if split == "val" else perm[n_val:]
    return ImageDataset(
        x[idx],
        y[idx],
        num_classes=10,
        name=f"digits/{split}",
        class_names=[str(i) for i in range(10)],
    )
