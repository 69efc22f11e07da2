"""The tokenizer model: shapes for every factor, exact encode/decode, gradient
flow, save/load, losses, pluggable quantizers, clear errors."""

from __future__ import annotations

import pytest
import torch

from fsqkit.tokenizer import Tokenizer, TokenizerConfig
from fsqkit.tokenizer.discriminator import PatchDiscriminator
from fsqkit.tokenizer.losses import adaptive_weight, hinge_d_loss, reconstruction_loss
from fsqkit.tokenizer.perceptual import DISABLED_MESSAGE, PerceptualLoss, _vgg16_features
from tests.single_thread import one_thread  # noqa: F401

TINY = dict(base_channels=8, norm_groups=4)


@pytest.mark.parametrize("factor", [2, 4, 8, 16])
def test_shapes_for_every_factor(factor):
    cfg = TokenizerConfig(
        image_size=32, channel_mult=TokenizerConfig.channel_mult_for(factor), **TINY
    )
    assert cfg.downsample_factor == factor and cfg.latent_channels == 4
    tok = Tokenizer(cfg).eval()
    x = torch.rand(2, 3, 32, 32)
    idx = tok.encode(x)
    assert idx.shape == (2, 32 // factor, 32 // factor) and idx.dtype == torch.int32
    assert int(idx.min()) >= 0 and int(idx.max()) < 1000
    y = tok.decode(idx)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1


def test_decode_of_encode_equals_reconstruct():
    tok = Tokenizer(TokenizerConfig(image_size=16, channel_mult=(1, 2), **TINY)).eval()
    x = torch.rand(3, 3, 16, 16)
    torch.testing.assert_close(tok.decode(tok.encode(x)), tok.reconstruct(x), rtol=0, atol=1e-6)


def test_every_parameter_gets_a_gradient():
    tok = Tokenizer(TokenizerConfig(image_size=16, channel_mult=(1, 2), **TINY))
    x = torch.rand(2, 3, 16, 16)
    out = tok(x)
    reconstruction_loss(out.recon, x * 2 - 1).backward()
    for name, p in tok.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert float(p.grad.abs().sum()) > 0, f"no gradient reaches {name}"


def test_save_load_roundtrip(tmp_path):
    cfg = TokenizerConfig(image_size=16, channel_mult=(1, 2), **TINY)
    tok = Tokenizer(cfg).eval()
    tok.save(str(tmp_path / "tok"))
    back = Tokenizer.load(str(tmp_path / "tok"))
    assert back.cfg == cfg and not back.training
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(tok.encode(x), back.encode(x))
    assert torch.equal(tok.reconstruct(x), back.reconstruct(x))


def test_load_channels_last_keeps_the_model(tmp_path):
    cfg = TokenizerConfig(image_size=16, channel_mult=(1, 2), **TINY)
    tok = Tokenizer(cfg).eval()
    tok.save(str(tmp_path / "tok"))
    nhwc = Tokenizer.load(str(tmp_path / "tok"), channels_last=True)
    conv = next(m for m in nhwc.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(64, 3, 16, 16)
    same = (tok.encode(x) == nhwc.encode(x)).float().mean().item()
    assert same > 0.99  # only latents on a bin edge may round the other way
    torch.testing.assert_close(
        nhwc.decode(tok.encode(x)), tok.decode(tok.encode(x)), atol=1e-4, rtol=0
    )


def test_vq_tokenizer_adds_aux_loss():
    cfg = TokenizerConfig(
        quantizer="vq",
        quantizer_kwargs={"codebook_size": 64, "learning": "loss", "entropy_weight": 0.1},
        latent_channels=8,
        image_size=16,
        channel_mult=(1, 2),
        **TINY,
    )
    tok = Tokenizer(cfg)
    out = tok(torch.rand(2, 3, 16, 16))
    assert out.quant.indices.shape == (2, 8, 8)
    assert out.quant.aux_loss.item() > 0 and out.quant.aux_loss.requires_grad
    tok.eval()
    idx = tok.encode(torch.rand(1, 3, 16, 16))
    assert tok.decode(idx).shape == (1, 3, 16, 16)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="f=32"):
        TokenizerConfig(channel_mult=(1, 1, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="latent_channels is required"):
        TokenizerConfig(quantizer="vq", quantizer_kwargs={"codebook_size": 16})
    with pytest.raises(ValueError, match="norm_groups"):
        TokenizerConfig(base_channels=10, norm_groups=4)
    with pytest.raises(ValueError, match="divisible"):
        TokenizerConfig(image_size=30)
    with pytest.raises(ValueError, match="must not set 'dim'"):
        Tokenizer(TokenizerConfig(quantizer_kwargs={"levels": [5, 5], "dim": 2}, **TINY))
    with pytest.raises(ValueError, match="unknown quantizer"):
        Tokenizer(TokenizerConfig(quantizer="nope", quantizer_kwargs={"levels": [5]}, **TINY))
    tok = Tokenizer(TokenizerConfig(image_size=16, channel_mult=(1, 2), **TINY))
    with pytest.raises(ValueError, match="multiples"):
        tok.encode(torch.rand(1, 3, 15, 16))
    with pytest.raises(TypeError, match="integer"):
        tok.decode(torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="out of range"):
        tok.decode(torch.full((1, 8, 8), 1000))


def test_hinge_and_adaptive_weight():
    assert float(hinge_d_loss(torch.full((4,), 2.0), torch.full((4,), -2.0))) == 0.0
    assert float(hinge_d_loss(torch.zeros(4), torch.zeros(4))) == 1.0
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    nll = (w * 3.0).sum()  # grad norm 3*sqrt(2)
    g = (w * 1.5).sum()  # grad norm 1.5*sqrt(2)
    assert abs(float(adaptive_weight(nll, g, w)) - 2.0) < 1e-3
    d = PatchDiscriminator(3, channels=8, num_layers=2)
    assert d(torch.rand(2, 3, 32, 32)).shape[:2] == (2, 1)


def test_perceptual_loss_from_local_weights_only(tmp_path):
    assert "never downloads" in DISABLED_MESSAGE
    with pytest.raises(FileNotFoundError, match=r"vgg\.pth"):
        PerceptualLoss(str(tmp_path / "vgg.pth"))
    torch.save(
        {"features." + k: v for k, v in _vgg16_features().state_dict().items()},
        tmp_path / "vgg.pth",
    )
    loss = PerceptualLoss(str(tmp_path / "vgg.pth"))
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert float(loss(x, x)) == 0.0
    assert float(loss(x, -x)) > 0.0
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a torchvision VGG16"):
        PerceptualLoss(str(tmp_path / "bad.pth"))
