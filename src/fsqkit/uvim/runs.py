"""Evaluating a saved UViM run (oracle, full model or direct baseline) on the
validation or test split of its data, or of another source, with bootstrap
standard errors."""

from __future__ import annotations

from torch import Tensor

from fsqkit.data.dense import build_dense_dataset
from fsqkit.training.checkpoint import load_checkpoint
from fsqkit.uvim.evaluate import DenseEvaluation, PredictFn, evaluate_images
from fsqkit.uvim.intervals import RESAMPLES, score
from fsqkit.uvim.model import UViM, load_uvim_model
from fsqkit.uvim.oracle import DirectModel, Oracle
from fsqkit.uvim.tasks import DenseBatch


def model_predictor(model: Oracle | UViM | DirectModel) -> tuple[PredictFn, int]:
    """A loaded UViM model as a ``PredictFn`` (an oracle encodes the true target
    first) and its codebook size (0: no tokens)."""
    task = model.task

    def predict(inputs: Tensor, batch: DenseBatch) -> tuple[Tensor, Tensor | None]:
        if isinstance(model, Oracle):
            out = model(inputs, task.target(batch))
            return task.decode(out.recon, inputs), out.quant.indices
        if isinstance(model, UViM):
            tokens = model.predict_tokens(inputs)
            return model.oracle.decode(tokens, inputs), tokens
        return model.predict(inputs), None

    if isinstance(model, Oracle):
        return predict, model.codebook_size
    if isinstance(model, UViM):
        return predict, model.oracle.codebook_size
    return predict, 0


def evaluate_model_run(
    path: str,
    data: str | None = None,
    num: int | None = None,
    seed: int | None = None,
    batch_size: int = 128,
    split: str = "val",
) -> tuple[DenseEvaluation, UViM | Oracle | DirectModel]:
    """The run at ``path`` scored image by image on the ``split`` (``val``, or
    ``test`` for ``scenes``) of ``data`` (default: the run's own data source and
    seed; ``num`` items, default: the run's val count, 2048 for test)."""
    model = load_uvim_model(path)
    train = load_checkpoint(path, weights_only=True).config.get("train", {})
    cfg = model.oracle.cfg if isinstance(model, UViM) else model.cfg
    if num is None and split == "val":
        num = train.get("num_val")
    ds = build_dense_dataset(
        data or train.get("data", "scenes"),
        split,
        image_size=cfg.image_size,
        num=num,
        seed=seed if seed is not None else int(train.get("seed", 0)),
    )
    model.task.check_categories(ds.categories, f"data {ds.name!r}")
    predict, codebook = model_predictor(model)
    ev = evaluate_images(model.task, predict, ds, batch_size=batch_size, codebook_size=codebook)
    return ev, model


def evaluate_run(
    path: str,
    data: str | None = None,
    num_val: int | None = None,
    seed: int | None = None,
    batch_size: int = 128,
    split: str = "val",
    resamples: int = RESAMPLES,
) -> dict[str, float]:
    """Metrics of the run at ``path`` (:func:`evaluate_model_run`), each with its
    bootstrap standard error ``<metric>_se`` (``resamples=0``: none), and
    ``images``, the number scored. Oracles and full models also report
    codebook ``usage`` of their tokens."""
    ev, model = evaluate_model_run(path, data, num_val, seed, batch_size, split)
    scores = score(model.task, ev, resamples)
    out = dict(scores.metrics)
    out.update({f"{k}_se": v for k, v in scores.standard_errors().items()})
    out["images"] = float(len(ev))
    return out
