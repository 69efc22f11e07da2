"""The full UViM model (stage II tokens -> stage I decoder) and loading of every
UViM run directory (oracle, full model, direct baseline).

Example::

    model = UViM.load("runs/uvim-depth")
    depth = model.predict(images)   # (B, 3, H, W) in [0, 1] -> (B, 1, H, W) metres
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fsqkit.training.checkpoint import load_checkpoint
from fsqkit.training.ema import module_weights
from fsqkit.uvim.config import OracleConfig, Stage2Config
from fsqkit.uvim.nets import inference
from fsqkit.uvim.oracle import DirectModel, Oracle
from fsqkit.uvim.stage2 import TokenPredictor
from fsqkit.uvim.tasks import DenseBatch, DenseTask


class UViM(nn.Module):
    """Stage II predicts tokens from the image; the oracle's decoder turns them
    (with the image) into the prediction."""

    def __init__(self, oracle: Oracle, stage2: TokenPredictor) -> None:
        super().__init__()
        if stage2.cfg.codebook_size != oracle.codebook_size or stage2.cfg.grid != oracle.cfg.grid:
            raise ValueError(
                f"stage II (K={stage2.cfg.codebook_size}, grid {stage2.cfg.grid}) does not match "
                f"the oracle (K={oracle.codebook_size}, grid {oracle.cfg.grid})"
            )
        self.oracle = oracle
        self.stage2 = stage2

    @property
    def task(self) -> DenseTask:
        return self.oracle.task

    def predict_tokens(
        self, inputs: Tensor, temperature: float = 0.0, seed: int = 0, *, fast: bool = True
    ) -> Tensor:
        """Model inputs ``(B, 3, H, W)`` -> token grids ``(B, h, w)``
        (:meth:`TokenPredictor.predict_tokens`)."""
        return self.stage2.predict_tokens(inputs, temperature, seed, fast=fast)

    @inference
    def predict(
        self,
        images: Tensor,
        temperature: float = 0.0,
        seed: int = 0,
        batch_size: int = 128,
        *,
        fast: bool = True,
    ) -> Tensor:
        """Images ``(B, 3, H, W)`` in ``[0, 1]`` -> predictions ``(B, C, H, W)`` in task
        units. The task's input transform is applied first (e.g. grayscale for
        colorization), so colour images may be passed as they are. Batch ``i``
        (``batch_size`` images) decodes with seed ``seed + i * batch_size``; greedy
        decoding (``temperature=0``) does not depend on the batching. ``fast=False``:
        the reference path (the general token decoder, each network on the whole
        batch), the same values, slower."""
        out = []
        for i in range(0, images.shape[0], batch_size):
            x = self.task.inputs(DenseBatch(images[i : i + batch_size]))
            tokens = self.predict_tokens(x, temperature, seed + i, fast=fast)
            out.append(self.oracle.decode(tokens, x) if fast else self.oracle._decode(tokens, x))
        return torch.cat(out)

    @classmethod
    def load(cls, path: str, map_location: str = "cpu") -> UViM:
        """Load a ``fsqkit uvim train`` run directory (or checkpoint); eval mode."""
        model = load_uvim_model(path, map_location)
        if not isinstance(model, UViM):
            raise ValueError(f"{path} is not a full UViM model (stage II) checkpoint")
        return model


def load_uvim_model(path: str, map_location: str = "cpu") -> Oracle | UViM | DirectModel:
    """Any UViM run: an oracle, a full model or a direct baseline (eval mode)."""
    ckpt = load_checkpoint(path, weights_only=True, map_location=map_location)
    cfg = ckpt.config
    w = {name: module_weights(ckpt.weights, name) for name in ckpt.weights}  # EMA if kept
    if "oracle" not in cfg and "direct" not in cfg:
        raise ValueError(f"{ckpt.path} is not a UViM checkpoint (no 'oracle' or 'direct' config)")
    if "direct" in cfg:
        direct = DirectModel(OracleConfig.from_dict(cfg["direct"]))
        direct.load_state_dict(w["direct"])
        return direct.to(map_location).eval()
    oracle = Oracle(OracleConfig.from_dict(cfg["oracle"]))
    oracle.load_state_dict(w["oracle"])
    if "stage2" not in cfg:
        return oracle.to(map_location).eval()
    stage2 = TokenPredictor(Stage2Config.from_dict(cfg["stage2"]))
    stage2.load_state_dict(w["stage2"])
    return UViM(oracle, stage2).to(map_location).eval()


def load_oracle(path: str, map_location: str = "cpu") -> Oracle:
    """The oracle of an oracle run, or of a full model's run (eval mode)."""
    model = load_uvim_model(path, map_location)
    if isinstance(model, UViM):
        return model.oracle
    if not isinstance(model, Oracle):
        raise ValueError(f"{path} holds a direct baseline, not an oracle")
    return model
