"""An independent image classifier for "is the sample of the class asked for?".

A scikit-learn RBF support-vector classifier on gray, downsized pixels, trained
on *real* training images only (never on tokenizer reconstructions or samples),
so it judges samples by the real data's standard. Its accuracy on held-out real
images is the ceiling to report next to the sample accuracy.

Dimension legend: ``N`` images, ``H, W`` image size, ``P = size²`` pixels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fsqkit.metrics.features import check_images


class PixelClassifier:
    """RBF-SVM on gray ``size x size`` pixels (``C=10``, ``gamma="scale"``; deterministic).

    Args:
        size: images are converted to gray and resized (antialiased) to ``size x size``.
    """

    def __init__(self, size: int = 16) -> None:
        from sklearn.svm import SVC

        self.size = size
        self.svm = SVC(C=10.0, gamma="scale")
        self.num_classes = 0

    def _pixels(self, images: Tensor) -> np.ndarray:  # [N, 3, H, W] -> [N, P]
        x = check_images(images).float().cpu().mean(dim=1, keepdim=True)
        x = F.interpolate(
            x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
        )
        return x.flatten(1).clamp(0, 1).numpy().astype(np.float64)

    def fit(self, images: Tensor, labels: Tensor) -> PixelClassifier:
        """Train on real images ``[N, 3, H, W]`` in ``[0, 1]`` with labels ``[N]``."""
        labels = torch.as_tensor(labels).long().cpu()
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"labels must have shape [{images.shape[0]}], got {list(labels.shape)}"
            )
        self.svm.fit(self._pixels(images), labels.numpy())
        self.num_classes = int(labels.max()) + 1
        return self

    def predict(self, images: Tensor) -> Tensor:
        """Predicted labels ``[N]`` (int64)."""
        if not self.num_classes:
            raise ValueError("PixelClassifier.predict called before fit")
        return torch.from_numpy(self.svm.predict(self._pixels(images)).astype(np.int64))

    def accuracy(self, images: Tensor, labels: Tensor) -> float:
        """Fraction of ``images`` classified as ``labels`` (the requested classes)."""
        labels = torch.as_tensor(labels).long().cpu()
        return float((self.predict(images) == labels).double().mean())
