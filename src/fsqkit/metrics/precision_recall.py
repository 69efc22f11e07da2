"""Improved precision and recall (Kynkäänniemi et al., 2019) with k-NN manifolds.

Each feature set defines a manifold: the union of balls around its points whose
radius is the distance to the point's k-th nearest neighbour in the same set.
*Precision* = fraction of generated samples inside the real manifold (are
samples realistic?); *recall* = fraction of real samples inside the generated
manifold (is the variety covered?).

Dimension legend: ``N`` real, ``M`` generated, ``F`` feature width.
"""

from __future__ import annotations

import torch
from torch import Tensor


def knn_radii(features: Tensor, k: int, chunk: int = 1024) -> Tensor:
    """Distance ``[N]`` from each point to its k-th nearest other point in ``features [N, F]``."""
    if not 1 <= k < features.shape[0]:
        raise ValueError(f"k must be in [1, N-1] = [1, {features.shape[0] - 1}], got {k}")
    out = []
    for start in range(0, features.shape[0], chunk):
        d = torch.cdist(features[start : start + chunk], features)  # [c, N]
        # The k+1 smallest include the point itself at distance 0.
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(out)


def _coverage(queries: Tensor, support: Tensor, radii: Tensor, chunk: int = 1024) -> float:
    """Fraction of ``queries`` within ``radii`` of at least one ``support`` point."""
    inside = []
    for start in range(0, queries.shape[0], chunk):
        d = torch.cdist(queries[start : start + chunk], support)  # [c, N]
        inside.append((d <= radii[None]).any(dim=1))
    return float(torch.cat(inside).double().mean())


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """``(precision, recall)`` of generated features ``fake [M, F]`` against ``real [N, F]``."""
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"expected features [N, F] and [M, F], got {list(real.shape)} and {list(fake.shape)}"
        )
    real, fake = real.double(), fake.double()
    precision = _coverage(fake, real, knn_radii(real, k))
    recall = _coverage(real, fake, knn_radii(fake, k))
    return precision, recall
