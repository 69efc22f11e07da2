"""Sample-quality metrics: Fréchet distance, precision/recall, features, classifier."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from fsqkit.data import build_dataset
from fsqkit.metrics import (
    PixelClassifier,
    RandomConvFeatures,
    TorchScriptInceptionFeatures,
    build_feature_extractor,
    frechet_distance,
    frechet_distance_features,
    gaussian_stats,
    precision_recall,
    sample_quality,
)
from tests.single_thread import one_thread  # noqa: F401  (autouse)


def test_frechet_closed_form_diagonal() -> None:
    # For diagonal covariances FD = |μ1-μ2|² + Σ(√a - √b)².
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected)


def test_frechet_matches_scipy_sqrtm() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = x @ x.T, y @ y.T + np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)


def test_frechet_features_behaviour() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 5, generator=g)
    b = torch.randn(4000, 5, generator=g)
    assert frechet_distance_features(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance_features(a, b) < 0.05  # same distribution: small
    assert frechet_distance_features(a, b + 2.0) == pytest.approx(20.0, rel=0.05)  # shift² · F
    with pytest.raises(ValueError, match=r"features of shape \[N >= 2, F\]"):
        frechet_distance_features(a[:1], b)
    with pytest.raises(ValueError, match="feature widths differ"):
        frechet_distance_features(a, b[:, :3])


@pytest.mark.parametrize("n_a,n_b", [(300, 40), (40, 300), (30, 50), (60, 60)])
def test_frechet_features_with_fewer_images_than_features(n_a, n_b) -> None:
    """Sets smaller than the feature width take the N x N route; it must give the
    value of the two F x F covariances (correlated, shifted, differently scaled)."""
    g = torch.Generator().manual_seed(1)
    mix = torch.randn(64, 64, generator=g) / 8
    a = torch.randn(n_a, 64, generator=g) @ mix
    b = (torch.randn(n_b, 64, generator=g) * 1.7 + 0.3) @ mix
    dense = frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
    assert min(n_a, n_b) < 64
    # rel 1e-7: the dense route takes square roots of the singular covariance's
    # round-off eigenvalues (~1e-16 -> ~1e-8 each); the small route has none.
    assert frechet_distance_features(a, b) == pytest.approx(dense, rel=1e-7)
    assert frechet_distance_features(b, a) == pytest.approx(dense, rel=1e-7)
    assert frechet_distance_features(a[:20], a[:20]) == pytest.approx(0.0, abs=1e-9)


def test_precision_recall_cases() -> None:
    g = torch.Generator().manual_seed(0)
    real = torch.randn(500, 4, generator=g)
    assert precision_recall(real, real.clone()) == (1.0, 1.0)
    far = torch.randn(300, 4, generator=g) + 100.0
    assert precision_recall(real, far) == (0.0, 0.0)
    # Mode dropping: samples only from a small part of the real cloud.
    part = real[real[:, 0] > 1.0]
    precision, recall = precision_recall(real, part + 0.01 * torch.randn(part.shape, generator=g))
    assert precision > 0.9 and recall < 0.5
    with pytest.raises(ValueError, match=r"k must be in \[1, N-1\]"):
        precision_recall(real[:3], real[:3], k=3)


@pytest.fixture(scope="module")
def digits():
    train = build_dataset("digits", "train", image_size=16)
    val = build_dataset("digits", "val", image_size=16)
    return train, val


def _blur(x: torch.Tensor, k: int) -> torch.Tensor:
    w = torch.full((3, 1, k, k), 1.0 / (k * k))
    return F.conv2d(F.pad(x, (k // 2,) * 4, mode="replicate"), w, groups=3)


def test_default_features_rank_real_blur_noise(digits) -> None:
    train, val = digits
    held_out = val.batch(slice(None))
    ext = RandomConvFeatures()
    real_f = ext(train.batch(slice(None)))
    noise = torch.rand(held_out.shape, generator=torch.Generator().manual_seed(0))

    def quality(images):
        f = ext(images)
        return frechet_distance_features(real_f, f), precision_recall(real_f, f)[0]

    (fd_real, p_real), (fd_blur, p_blur), (fd_noise, p_noise) = map(
        quality, [held_out, _blur(held_out, 3), noise]
    )
    # Held-out real images score far better than blurred ones, which beat noise.
    assert fd_real * 5 < fd_blur < fd_noise
    assert p_real > 0.8 and p_real > p_blur > p_noise == 0.0
    # sample_quality wraps the same computation (and adds recall).
    q = sample_quality(held_out[:100], train.batch(slice(0, 300)), ext)
    assert q["fd"] > 0 and q["precision"] > 0.8 and q["recall"] > 0.5


def test_default_features_deterministic() -> None:
    x = torch.rand(7, 3, 20, 20, generator=torch.Generator().manual_seed(1))
    a, b = RandomConvFeatures()(x), build_feature_extractor("random-conv")(x)
    assert a.shape == (7, RandomConvFeatures().num_features) and torch.equal(a, b)
    assert not torch.equal(a, RandomConvFeatures(seed=1)(x))
    # Gray input is accepted and equals its RGB replication.
    gray = x[:, :1]
    assert torch.equal(RandomConvFeatures()(gray), RandomConvFeatures()(gray.expand(-1, 3, -1, -1)))


def test_feature_input_errors() -> None:
    with pytest.raises(ValueError, match=r"shape \[N, 3, H, W\]"):
        RandomConvFeatures()(torch.rand(3, 16, 16))
    with pytest.raises(TypeError, match="float in"):
        RandomConvFeatures()(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="unknown feature extractor"):
        build_feature_extractor("clip")


class FakeInception(torch.nn.Module):
    """Stands in for the TorchScript FID Inception: same call convention."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        assert return_features
        return torch.stack([x.shape[-1] * torch.ones(x.shape[0]), x.amax(dim=(1, 2, 3))], dim=1)


def test_torchscript_inception_convention(tmp_path) -> None:
    path = tmp_path / "inception.pt"
    torch.jit.save(torch.jit.script(FakeInception()), str(path))
    ext = build_feature_extractor(f"inception:{path}")
    assert isinstance(ext, TorchScriptInceptionFeatures)
    feats = ext(torch.ones(3, 3, 16, 16))
    # Resized to 299x299 and scaled to [0, 255] as the standard FID network expects.
    assert feats.tolist() == [[299.0, 255.0]] * 3
    with pytest.raises(FileNotFoundError, match="never downloads"):
        build_feature_extractor(f"inception:{tmp_path / 'missing.pt'}")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a loadable TorchScript file"):
        TorchScriptInceptionFeatures(bad)


def test_pixel_classifier_on_real_digits(digits) -> None:
    train, val = digits
    clf = PixelClassifier().fit(train.batch(slice(None)), train.labels)
    assert clf.accuracy(val.batch(slice(None)), val.labels) > 0.95
    # "Sample is of the requested class": a wrong requested class scores low.
    assert clf.accuracy(val.batch(slice(None)), (val.labels + 1) % 10) < 0.1
    with pytest.raises(ValueError, match="before fit"):
        PixelClassifier().predict(val.batch(slice(0, 2)))
