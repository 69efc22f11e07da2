"""UViM's fast prediction path gives the values of the reference path
(``fast=False``: MaskGIT's general decoder on the whole logits tensor, every
network on the whole batch): the same tokens and predictions bit for bit, for
both stage-II decoders, every task, head chunks that split the batch unevenly
and any batch size."""

from __future__ import annotations

import pytest
import torch

import fsqkit.uvim.nets as nets
import fsqkit.uvim.stage2 as stage2
from fsqkit.data.dense import build_dense_dataset
from fsqkit.uvim import DenseBatch, Oracle, OracleConfig, Stage2Config, TokenPredictor, UViM
from tests.single_thread import one_thread  # noqa: F401


def tiny_uvim(task: str, decoder: str, levels=(5, 5, 5)) -> UViM:
    torch.manual_seed(0)
    ocfg = OracleConfig(
        task=task, quantizer_kwargs={"levels": list(levels)}, image_size=16, base_channels=8,
        channel_mult=(1, 2),
    )  # fmt: skip
    oracle = Oracle(ocfg)
    # the output layer starts at zero; random weights make predictions depend on tokens
    torch.nn.init.normal_(oracle.decoder.conv_out.weight, std=0.3)
    s2 = Stage2Config.from_oracle(
        ocfg, oracle.codebook_size, dim=32, depth=1, heads=2, decoder=decoder, decode_steps=5
    )
    predictor = TokenPredictor(s2)
    torch.nn.init.normal_(predictor.head.weight, std=1.0)  # varied tokens
    torch.nn.init.normal_(predictor.pos_emb, std=1.0)
    return UViM(oracle, predictor).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return build_dense_dataset("scenes", "val", image_size=16, num=40).batch(slice(None)).image


@pytest.mark.parametrize("decoder", ["masked", "autoregressive"])
@pytest.mark.parametrize("task", ["depth", "colorize", "panoptic"])
def test_fast_prediction_is_bit_identical(task, decoder, images, monkeypatch):
    model = tiny_uvim(task, decoder)
    x = model.task.inputs(DenseBatch(images))
    ref_tokens = model.predict_tokens(x, fast=False)
    ref = model.predict(images, batch_size=16, fast=False)
    assert len(ref_tokens.unique()) > 1 and len(ref.flatten(1).unique(dim=0)) > 1  # not constant
    # the convs see the same 16-image batches (<= CONV_BATCH): bit for bit, with
    # head chunks of 7 rows, so every chunk boundary falls mid-image
    monkeypatch.setattr(stage2, "HEAD_ROWS", 7)
    assert torch.equal(model.predict(images, batch_size=16), ref)
    # image features in batches of 6: still the same tokens
    monkeypatch.setattr(nets.in_batches, "__defaults__", (6,))
    assert torch.equal(model.predict_tokens(x), ref_tokens)


@pytest.mark.parametrize("task", ["depth", "colorize", "panoptic"])
def test_prediction_does_not_depend_on_the_batching(task, images):
    """Greedy decoding is per image; only the convs' round-off changes with the
    number of images per call (a few ulps), and never a token or a class."""
    model = tiny_uvim(task, "masked")
    ref = model.predict(images, batch_size=16, fast=False)
    for batch_size in (128, 3):
        out = model.predict(images, batch_size=batch_size)
        if task == "panoptic":
            assert torch.equal(out, ref)
        else:
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)  # metres / [0, 1]


def test_sampling_is_unchanged_and_seeded(images):
    """``temperature > 0`` keeps the general decoder: ``fast`` has no effect."""
    model = tiny_uvim("depth", "masked")
    x = images
    a = model.predict_tokens(x, temperature=1.0, seed=4)
    assert torch.equal(a, model.predict_tokens(x, temperature=1.0, seed=4, fast=False))
    assert not torch.equal(a, model.predict_tokens(x, temperature=1.0, seed=5))
    p = model.predict(x, temperature=1.0, seed=4, batch_size=16)
    assert torch.equal(p, model.predict(x, temperature=1.0, seed=4, batch_size=16, fast=False))


def test_predictions_are_ordinary_tensors(images):
    """Computed in inference mode, returned as tensors autograd may use (e.g.
    predicted tokens as training targets)."""
    model = tiny_uvim("depth", "masked")
    out = model.predict(images[:4])
    tokens = model.predict_tokens(images[:4])
    assert not out.requires_grad and not out.is_inference() and not tokens.is_inference()
    loss, _ = model.stage2(images[:4], tokens)
    loss.backward()
