"""Training UViM: three tasks for the shared :class:`~fsqkit.training.Trainer`
(the oracle, stage II and the direct baseline) and one function per run kind.

Every batch is a pure function of ``(seed, step)`` (:class:`StepSampler`), so
``--resume`` continues exactly. Stage II encodes the training targets with the
frozen oracle once, up front, and learns to predict those tokens.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from fsqkit.data.dense import DenseDataset, build_dense_dataset
from fsqkit.quantizers.stats import WindowUsage, code_counts
from fsqkit.training import (
    DistInfo,
    StepSampler,
    Trainer,
    TrainerConfig,
    seed_everything,
    unwrap,
    wrap_ddp,
)
from fsqkit.training.optim import OptimConfig
from fsqkit.training.step import Update, micro_steps
from fsqkit.uvim.config import OracleConfig, Stage2Config
from fsqkit.uvim.evaluate import PredictFn, evaluate_dense, save_prediction_grid
from fsqkit.uvim.model import UViM, load_oracle
from fsqkit.uvim.oracle import DirectModel, Oracle
from fsqkit.uvim.stage2 import TokenPredictor
from fsqkit.uvim.tasks import DenseBatch, DenseTask, get_task

USAGE_WINDOW = 20


@dataclass
class UViMTrainConfig(OptimConfig):
    """Data and optimisation settings shared by the three UViM runs (Adam with the
    optimiser fields of :class:`~fsqkit.training.optim.OptimConfig`).

    Attributes:
        data: ``scenes``, ``embedded``, ``nyu:PATH`` or ``pairs:PATH``.
        num_train, num_val: item counts of generated data (default 2048 / 256).
        eval_batch_size, grid_images: evaluation batch and images in ``pred.png``.
    """

    data: str = "scenes"
    num_train: int | None = None
    num_val: int | None = None
    eval_batch_size: int = 128
    grid_images: int = 8


def load_data(
    cfg: UViMTrainConfig, task: DenseTask | str, image_size: int
) -> tuple[DenseDataset, DenseDataset]:
    """Train and val datasets, checked against the task (a task or a registered
    name; e.g. depth needs depth maps)."""
    task = get_task(task) if isinstance(task, str) else task
    out = []
    for split, n in (("train", cfg.num_train), ("val", cfg.num_val)):
        ds = build_dense_dataset(cfg.data, split, image_size=image_size, num=n, seed=cfg.seed)
        task.check_batch(ds.batch(slice(0, 1)), f"data {cfg.data!r}")
        task.check_categories(ds.categories, f"data {cfg.data!r}")
        out.append(ds)
    return out[0], out[1]


class _DenseTaskBase:
    """What the three runs share: data, sampler, optimizer, LR schedule, grids."""

    progress_keys: tuple[str, ...] = ("loss", "lr")
    model: torch.nn.Module

    def __init__(
        self,
        model_cfg: OracleConfig,
        cfg: UViMTrainConfig,
        total_steps: int,
        out_dir: str,
        dist_info: DistInfo | None,
    ) -> None:
        self.cfg = cfg
        self.task = get_task(model_cfg.task, model_cfg.task_options)
        image_size = model_cfg.image_size
        self.total_steps = total_steps
        self.out_dir = out_dir
        self.dist = dist_info or DistInfo()
        self.train_data, self.val_data = load_data(cfg, self.task, image_size)
        self.sampler = StepSampler(
            len(self.train_data), cfg.batch_size, cfg.seed, self.dist.rank, self.dist.world_size
        )

    def _set_model(self, cls: Callable[[Any], torch.nn.Module], model_cfg: Any) -> None:
        """Build ``cls(model_cfg)`` (identical init on every rank), wrap it for DDP
        and make its optimizer."""
        seed_everything(self.cfg.seed)
        self.model = cls(model_cfg).to(self.dist.device)
        self.ddp = wrap_ddp(self.model, self.dist)
        self.params = list(self.model.parameters())
        self.opt = torch.optim.Adam(
            self.params, lr=self.cfg.lr, betas=self.cfg.betas, weight_decay=self.cfg.weight_decay
        )
        torch.manual_seed(self.cfg.seed + 1 + self.dist.rank)

    def micro_batches(self, step: int, n: int) -> list[Any]:
        return [self._batch(s) for s in micro_steps(step, n)]

    def _batch(self, step: int) -> Any:
        """The batch a run without accumulation draws at ``step``."""
        batch = self.train_data.batch(self.sampler.indices(step)).to(self.dist.device)
        return self.task.inputs(batch), batch

    def updates(self, step: int) -> list[Update]:
        return [Update("opt", self.cfg, self.params, [self.ddp])]

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt": self.opt}

    def _evaluate(self, predict: PredictFn, codebook_size: int = 0) -> dict[str, float]:
        self.model.eval()
        try:
            metrics = evaluate_dense(
                self.task,
                predict,
                self.val_data,
                batch_size=self.cfg.eval_batch_size,
                codebook_size=codebook_size,
                device=self.dist.device,
            )
            if self.dist.is_main and self.cfg.grid_images:
                save_prediction_grid(
                    self.task,
                    predict,
                    self.val_data,
                    os.path.join(self.out_dir, "pred.png"),
                    self.cfg.grid_images,
                )
        finally:
            self.model.train()
        return metrics


class OracleTask(_DenseTaskBase):
    """Stage I: reconstruct the target through the quantized bottleneck."""

    progress_keys = ("loss", "usage", "lr")

    def __init__(
        self,
        model_cfg: OracleConfig,
        cfg: UViMTrainConfig,
        total_steps: int,
        out_dir: str,
        dist_info: DistInfo | None = None,
    ) -> None:
        super().__init__(model_cfg, cfg, total_steps, out_dir, dist_info)
        self.model_cfg = model_cfg
        self._set_model(Oracle, model_cfg)
        self._live_usage = WindowUsage(self.model.codebook_size, USAGE_WINDOW)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"oracle": self.model}

    def config(self) -> dict[str, Any]:
        return {"oracle": self.model_cfg.to_dict(), "train": asdict(self.cfg)}

    def loss(self, update: str, micro: Any, step: int) -> tuple[Tensor, dict[str, float]]:
        x, batch = micro
        target = self.task.target(batch)
        out = self.ddp(x, target)
        rec = self.task.loss(out.recon, target, self.task.valid(batch), x)
        loss = rec + out.quant.aux_loss
        usage = self._live_usage.update(out.quant.indices)
        return loss, {"loss": loss.item(), "recon": rec.item(), "usage": usage}

    def evaluate(self, step: int) -> dict[str, float]:
        m = self.model

        def predict(inputs: Tensor, batch: DenseBatch) -> tuple[Tensor, Tensor | None]:
            out = m(inputs, self.task.target(batch))
            return self.task.decode(out.recon, inputs), out.quant.indices

        metrics = self._evaluate(predict, m.codebook_size)
        # Usage on the (larger) training set too: the paper's codebook-usage number.
        self.model.eval()
        with torch.no_grad():
            train_tokens = encode_tokens(m, self.train_data, self.cfg.eval_batch_size)
        self.model.train()
        metrics["train_usage"] = float(
            (code_counts(train_tokens, m.codebook_size) > 0).float().mean()
        )
        return metrics


@torch.no_grad()
def encode_tokens(oracle: Oracle, data: DenseDataset, batch_size: int = 256) -> Tensor:
    """The oracle's tokens ``(N, h, w)`` int64 for every item of ``data``."""
    device = next(oracle.parameters()).device
    out = []
    for i in range(0, len(data), batch_size):
        batch = data.batch(slice(i, i + batch_size)).to(device)
        x = oracle.task.inputs(batch)
        out.append(oracle.encode(x, oracle.task.target(batch)).long().cpu())
    return torch.cat(out)


class Stage2Task(_DenseTaskBase):
    """Stage II: predict the frozen oracle's tokens from the image."""

    progress_keys = ("loss", "token_acc", "lr")

    def __init__(
        self,
        oracle_path: str,
        stage2_kwargs: dict[str, Any],
        cfg: UViMTrainConfig,
        total_steps: int,
        out_dir: str,
        dist_info: DistInfo | None = None,
    ) -> None:
        dev = (dist_info or DistInfo()).device
        self.oracle = load_oracle(oracle_path, map_location=str(dev))
        self.oracle.requires_grad_(False)
        ocfg = self.oracle.cfg
        super().__init__(ocfg, cfg, total_steps, out_dir, dist_info)
        self.oracle_path = oracle_path
        self.s2_cfg = Stage2Config.from_oracle(ocfg, self.oracle.codebook_size, **stage2_kwargs)
        self.train_tokens = encode_tokens(self.oracle, self.train_data, cfg.eval_batch_size)
        self.val_tokens = encode_tokens(self.oracle, self.val_data, cfg.eval_batch_size)
        self._set_model(TokenPredictor, self.s2_cfg)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"stage2": self.model, "oracle": self.oracle}

    def config(self) -> dict[str, Any]:
        return {
            "oracle": self.oracle.cfg.to_dict(),
            "oracle_path": os.path.abspath(self.oracle_path),
            "stage2": self.s2_cfg.to_dict(),
            "train": asdict(self.cfg),
        }

    def _batch(self, step: int) -> Any:
        idx = self.sampler.indices(step)
        batch = self.train_data.batch(idx).to(self.dist.device)
        tokens = self.train_tokens[idx].to(self.dist.device)
        seed = (self.cfg.seed * 1_000_003 + step) % 2**63
        return self.task.inputs(batch), tokens, seed

    def loss(self, update: str, micro: Any, step: int) -> tuple[Tensor, dict[str, float]]:
        inputs, tokens, seed = micro
        gen = torch.Generator().manual_seed(seed)
        return self.ddp(inputs, tokens, gen)  # forward = loss (DDP sync)

    def evaluate(self, step: int) -> dict[str, float]:
        full = UViM(self.oracle, self.model)
        predicted: list[Tensor] = []

        def predict(inputs: Tensor, batch: DenseBatch) -> tuple[Tensor, Tensor | None]:
            tokens = full.predict_tokens(inputs)
            predicted.append(tokens.cpu())
            return self.oracle.decode(tokens, inputs), tokens

        metrics = self._evaluate(predict, self.oracle.codebook_size)
        n = len(self.val_tokens)  # the grid's extra batch (if any) comes after the val set
        metrics["token_acc"] = float((torch.cat(predicted)[:n] == self.val_tokens).float().mean())
        return metrics


class DirectTask(_DenseTaskBase):
    """The direct baseline: regress the target from the image, no tokens. Same
    constructor as :class:`OracleTask` (the oracle config gives the layout)."""

    def __init__(
        self,
        model_cfg: OracleConfig,
        cfg: UViMTrainConfig,
        total_steps: int,
        out_dir: str,
        dist_info: DistInfo | None = None,
    ) -> None:
        _DenseTaskBase.__init__(self, model_cfg, cfg, total_steps, out_dir, dist_info)
        self.model_cfg = model_cfg
        self._set_model(DirectModel, model_cfg)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"direct": self.model}

    def config(self) -> dict[str, Any]:
        return {"direct": self.model_cfg.to_dict(), "train": asdict(self.cfg)}

    def loss(self, update: str, micro: Any, step: int) -> tuple[Tensor, dict[str, float]]:
        x, batch = micro
        loss = self.task.loss(self.ddp(x), self.task.target(batch), self.task.valid(batch), x)
        return loss, {"loss": loss.item()}

    def evaluate(self, step: int) -> dict[str, float]:
        return self._evaluate(lambda inputs, batch: (self.model.predict(inputs), None))


@dataclass
class RunResult:
    """A finished run: its model, final validation metrics, directory and
    optimisation seconds."""

    model: torch.nn.Module
    metrics: dict[str, float]
    out_dir: str
    train_seconds: float


def _fit(task: Any, trainer_cfg: TrainerConfig, dist_info: DistInfo | None) -> RunResult:
    trainer = Trainer(task, trainer_cfg, dist_info)
    metrics = trainer.fit()
    return RunResult(unwrap(task.model).eval(), metrics, trainer_cfg.out_dir, trainer.train_seconds)


def _train(
    task_cls: type[OracleTask] | type[DirectTask],
    model_cfg: OracleConfig,
    cfg: UViMTrainConfig,
    trainer_cfg: TrainerConfig,
    dist_info: DistInfo | None,
) -> RunResult:
    os.makedirs(trainer_cfg.out_dir, exist_ok=True)
    task = task_cls(model_cfg, cfg, trainer_cfg.steps, trainer_cfg.out_dir, dist_info)
    return _fit(task, trainer_cfg, dist_info)


def train_oracle(
    model_cfg: OracleConfig,
    cfg: UViMTrainConfig,
    trainer_cfg: TrainerConfig,
    dist_info: DistInfo | None = None,
) -> RunResult:
    """Train (or resume) a stage-I oracle in ``trainer_cfg.out_dir``."""
    return _train(OracleTask, model_cfg, cfg, trainer_cfg, dist_info)


def train_direct(
    model_cfg: OracleConfig,
    cfg: UViMTrainConfig,
    trainer_cfg: TrainerConfig,
    dist_info: DistInfo | None = None,
) -> RunResult:
    """Train (or resume) the direct baseline (the oracle's layout, no tokens)."""
    return _train(DirectTask, model_cfg, cfg, trainer_cfg, dist_info)


def train_stage2(
    oracle_path: str,
    cfg: UViMTrainConfig,
    trainer_cfg: TrainerConfig,
    dist_info: DistInfo | None = None,
    **stage2_kwargs: Any,
) -> RunResult:
    """Train (or resume) stage II on the oracle at ``oracle_path``; the result's
    model is the full :class:`UViM`."""
    os.makedirs(trainer_cfg.out_dir, exist_ok=True)
    task = Stage2Task(
        oracle_path, stage2_kwargs, cfg, trainer_cfg.steps, trainer_cfg.out_dir, dist_info
    )
    result = _fit(task, trainer_cfg, dist_info)
    result.model = UViM(task.oracle, unwrap(task.model)).eval()
    return result
