"""Evaluating a saved UViM run (oracle, full model or direct baseline) on the
validation split of its data, or of another source."""

from __future__ import annotations

import torch
from torch import Tensor

from fsqkit.data.dense import build_dense_dataset
from fsqkit.training.checkpoint import load_checkpoint
from fsqkit.uvim.evaluate import evaluate_dense
from fsqkit.uvim.model import UViM, load_uvim_model
from fsqkit.uvim.oracle import DirectModel, Oracle
from fsqkit.uvim.tasks import DenseBatch


def evaluate_run(
    path: str,
    data: str | None = None,
    num_val: int | None = None,
    seed: int | None = None,
    batch_size: int = 128,
) -> dict[str, float]:
    """Metrics of the run at ``path`` on the ``val`` split of ``data`` (default:
    the run's own data source, count and seed). Oracles and full models also
    report codebook ``usage`` of their tokens."""
    model = load_uvim_model(path)
    train = load_checkpoint(path, weights_only=True).config.get("train", {})
    cfg = model.oracle.cfg if isinstance(model, UViM) else model.cfg
    ds = build_dense_dataset(
        data or train.get("data", "scenes"),
        "val",
        image_size=cfg.image_size,
        num=num_val if num_val is not None else train.get("num_val"),
        seed=seed if seed is not None else int(train.get("seed", 0)),
    )
    task = model.task
    task.check_categories(ds.categories, f"data {ds.name!r}")
    codebook = 0

    def predict(inputs: Tensor, batch: DenseBatch) -> tuple[Tensor, Tensor | None]:
        if isinstance(model, Oracle):
            out = model(inputs, task.target(batch))
            return task.decode(out.recon, inputs), out.quant.indices
        if isinstance(model, UViM):
            tokens = model.predict_tokens(inputs)
            return model.oracle.decode(tokens, inputs), tokens
        assert isinstance(model, DirectModel)
        return model.predict(inputs), None

    if isinstance(model, Oracle):
        codebook = model.codebook_size
    elif isinstance(model, UViM):
        codebook = model.oracle.codebook_size
    with torch.no_grad():
        return evaluate_dense(task, predict, ds, batch_size=batch_size, codebook_size=codebook)
