"""Fréchet distance between Gaussians fitted to two feature sets (FID when the
features are Inception-v3 pool features; see :mod:`fsqkit.metrics.features`).

``FD = |μ1 - μ2|² + tr(Σ1 + Σ2 - 2 (Σ1^½ Σ2 Σ1^½)^½)``

From feature sets, when one set has fewer images than features (e.g. 256 samples
of 736 features), the trace term comes from an ``N x N`` matrix instead of two
``F x F`` eigendecompositions: with ``X`` the centred smaller set,
``Σ2 = XᵀX / (N - 1)`` and ``Σ1^½ Σ2 Σ1^½`` has the non-zero eigenvalues of
``X Σ1 Xᵀ / (N - 1)``. Same value (to round-off), 10-100x less work.

Dimension legend: ``N`` images, ``F`` feature width.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor


def _as_features(x: Tensor | np.ndarray, what: str) -> np.ndarray:
    a = x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(x, np.float64)
    if a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"{what} must be features of shape [N >= 2, F], got {list(a.shape)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what} contains NaN or inf")
    return a


def gaussian_stats(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[F]`` and covariance ``[F, F]`` (float64, unbiased) of features ``[N, F]``."""
    a = _as_features(features, "features")
    return a.mean(0), np.cov(a, rowvar=False).reshape(a.shape[1], a.shape[1])


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet distance of ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    Uses the symmetric form ``tr((Σ1^½ Σ2 Σ1^½)^½)`` (same value as ``tr((Σ1 Σ2)^½)``)
    computed with eigendecompositions, which stays real and stable for the singular
    covariances that small sample sets give.
    """
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(
            f"feature widths differ: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    s1 = _psd_sqrt(sigma1)
    cross = np.linalg.eigvalsh(s1 @ sigma2 @ s1)
    tr_covmean = np.sqrt(np.clip(cross, 0.0, None)).sum()
    diff = mu1 - mu2
    fd = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
    return max(fd, 0.0)  # tiny negative values are round-off


def frechet_distance_features(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """Fréchet distance between feature sets ``a [N1, F]`` and ``b [N2, F]``."""
    fa, fb = _as_features(a, "features a"), _as_features(b, "features b")
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"feature widths differ: {fa.shape[1]} vs {fb.shape[1]}")
    if len(fb) > len(fa):
        fa, fb = fb, fa  # the FD is symmetric; fb is the smaller set
    if len(fb) >= fa.shape[1]:
        return frechet_distance(*gaussian_stats(fa), *gaussian_stats(fb))
    mu_a, sigma_a = gaussian_stats(fa)
    mu_b = fb.mean(0)
    xb = fb - mu_b  # [N2, F], N2 < F
    small = xb @ sigma_a @ xb.T / (len(fb) - 1)  # [N2, N2]
    cross = np.linalg.eigvalsh((small + small.T) / 2)
    tr_covmean = np.sqrt(np.clip(cross, 0.0, None)).sum()
    tr_b = float((xb * xb).sum()) / (len(fb) - 1)
    diff = mu_a - mu_b
    fd = float(diff @ diff + np.trace(sigma_a) + tr_b - 2.0 * tr_covmean)
    return max(fd, 0.0)
