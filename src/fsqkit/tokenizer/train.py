"""Training an image tokenizer: the tokenizer *task* for the shared
:class:`~fsqkit.training.Trainer` (losses, optimizers, evaluation).

Defaults are sized for minutes on a 2-core CPU (see docs/tokenizer.md): Adam
``lr=1e-3`` with betas ``(0.5, 0.99)``, linear warm-up then cosine decay, L2
reconstruction, no adversarial or perceptual loss. The paper's stage I
(MaskGIT's VQGAN) uses ``lr=1e-4``, betas ``(0, 0.99)`` and trains for days.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from fsqkit.data import ImageDataset, StreamOptions, open_images
from fsqkit.data.bad_files import BadFiles
from fsqkit.data.io import save_image_grid
from fsqkit.data.options import saved_fields
from fsqkit.metrics.fid import reconstruction_fid
from fsqkit.metrics.inception import FEATURE_KINDS, feature_extractor
from fsqkit.metrics.reconstruction import reconstruction_metrics
from fsqkit.quantizers.stats import WindowUsage
from fsqkit.tokenizer.config import TokenizerConfig
from fsqkit.tokenizer.discriminator import PatchDiscriminator
from fsqkit.tokenizer.losses import (
    RECON_LOSSES,
    adaptive_weight,
    hinge_d_loss,
    hinge_g_loss,
    r1_penalty,
    reconstruction_loss,
)
from fsqkit.tokenizer.model import Tokenizer
from fsqkit.tokenizer.perceptual import DISABLED_MESSAGE, PerceptualLoss
from fsqkit.training import (
    DistInfo,
    Trainer,
    TrainerConfig,
    batch_source,
    seed_everything,
    unwrap,
    wrap_ddp,
)
from fsqkit.training.optim import OptimConfig
from fsqkit.training.step import Update, micro_steps

USAGE_WINDOW = 20  # steps in the progress bar's "live" codebook usage


@dataclass
class TokenizerTrainConfig(StreamOptions, OptimConfig):
    """Optimisation and data settings of a tokenizer run (the optimiser fields
    of :class:`~fsqkit.training.optim.OptimConfig`, Adam betas ``(0.5, 0.99)``;
    the streamed-data fields of :class:`~fsqkit.data.StreamOptions`).

    Attributes:
        data: data spec (``embedded``, ``digits``, ``folder:PATH``, ``npz:PATH``,
            ``wds:PATTERN``).
        num_train_images, num_val_images: crop counts (``embedded``; ``None`` =
            defaults 4096 / 512); streamed sources: ``num_val_images`` evaluates
            the first images of the validation split only.
        channels_last: train with NHWC tensors (``torch.channels_last``): the
            same model, about 15% faster per step on CPU for the demo's tokenizer.
        recon_loss: ``"l1"``, ``"l2"`` or ``"l1+l2"``.
        disc_weight: PatchGAN hinge loss weight (0: off); it is switched on after
            ``disc_start`` steps and scaled by VQGAN's adaptive weight.
        r1_weight: ``gamma`` of the discriminator's R1 gradient penalty on real
            images (``gamma / 2 * E||grad D||^2``; 0: off; MaskGIT's VQGAN: 10).
        perceptual_weight / perceptual_weights: perceptual loss weight and a local
            VGG16 weights file; without the file the loss is off (a message says so).
        eval_batch_size: batch size of evaluation.
        grid_images: originals/reconstructions shown in ``recon.png``.
        fid: reconstruction FID in every evaluation: ``"none"`` (default),
            ``"auto"`` (Inception-v3 when installed, else random-conv features with
            a line saying so), ``"inception"`` or ``"random-conv"``; adds ``rfid``
            (or ``recon_fd``), ``recon_precision`` and ``recon_recall``, streamed
            over the validation set and shared across ranks.
    """

    data: str = "embedded"
    num_train_images: int | None = None
    num_val_images: int | None = None
    betas: tuple[float, float] = (0.5, 0.99)
    channels_last: bool = True
    recon_loss: str = "l2"
    disc_weight: float = 0.0
    disc_start: int = 1000
    disc_lr: float | None = None
    r1_weight: float = 0.0
    perceptual_weight: float = 0.0
    perceptual_weights: str | None = None
    eval_batch_size: int = 256
    grid_images: int = 16
    fid: str = "none"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fid not in ("none", *FEATURE_KINDS):
            raise ValueError(f"fid must be none, {', '.join(FEATURE_KINDS)}; got {self.fid!r}")
        if self.recon_loss not in RECON_LOSSES:
            raise ValueError(f"recon_loss must be one of {RECON_LOSSES}, got {self.recon_loss!r}")
        for name in ("disc_weight", "perceptual_weight", "disc_start", "r1_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.perceptual_weights is not None and not os.path.isfile(self.perceptual_weights):
            raise FileNotFoundError(
                f"perceptual weights file {self.perceptual_weights!r} does not exist"
            )


@torch.no_grad()
def evaluate_tokenizer(
    model: Tokenizer, data: ImageDataset, batch_size: int = 256, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """PSNR / SSIM (mean over images), codebook usage (fraction of codes used at
    least once on ``data``), perplexity and MSE of ``model`` on ``data``."""
    was_training = model.training
    model.eval()

    def codec(x: Tensor) -> tuple[Tensor, Tensor]:
        out = model(x)
        return out.quant.indices, model.to_images(out.recon)

    metrics = reconstruction_metrics(data, codec, model.codebook_size, batch_size, device)
    model.train(was_training)
    return metrics


class TokenizerTask:
    """The tokenizer's :class:`~fsqkit.training.TrainTask`."""

    progress_keys = ("loss", "usage", "lr")
    ema_modules = ("tokenizer",)  # not the discriminator: it is not used after training

    def __init__(
        self,
        model_cfg: TokenizerConfig,
        train_cfg: TokenizerTrainConfig,
        total_steps: int,
        out_dir: str,
        dist_info: DistInfo | None = None,
        verbose: bool = True,
    ) -> None:
        self.model_cfg = model_cfg
        self.cfg = train_cfg
        self.total_steps = total_steps
        self.out_dir = out_dir
        self.dist = dist_info or DistInfo()
        dev = self.dist.device
        say = print if (verbose and self.dist.is_main) else (lambda *a, **k: None)
        # Built-in data in memory; folders and tar shards streamed through workers.
        bad = BadFiles(train_cfg.max_bad_files, quiet=not self.dist.is_main)
        data = {
            split: open_images(
                train_cfg.data,
                split,
                image_size=model_cfg.image_size,
                seed=train_cfg.seed,
                num_images=n,
                cache_dir=out_dir,
                augment=train_cfg.augmentation,
                workers=train_cfg.num_workers,
                bad=bad,
                val_spec=train_cfg.val_data,
            )
            for split, n in (
                ("train", train_cfg.num_train_images),
                ("val", train_cfg.num_val_images),
            )
        }
        self.train_data, self.val_data = data["train"], data["val"]
        seed_everything(train_cfg.seed)  # identical init on every rank
        self.model = Tokenizer(model_cfg).to(dev)
        self.memory_format = torch.channels_last if train_cfg.channels_last else None
        if self.memory_format is not None:
            self.model.to(memory_format=self.memory_format)
        self.ddp_model = wrap_ddp(self.model, self.dist)
        self.opt = torch.optim.Adam(
            self.model.parameters(),
            lr=train_cfg.lr,
            betas=train_cfg.betas,
            weight_decay=train_cfg.weight_decay,
        )
        self.batches = batch_source(
            self.train_data, train_cfg.batch_size, train_cfg.seed, self.dist,
            workers=train_cfg.num_workers,
        )  # fmt: skip
        self.disc = self.ddp_disc = self.disc_opt = None
        if train_cfg.disc_weight > 0:
            self.disc = PatchDiscriminator(model_cfg.in_channels).to(dev)
            self.ddp_disc = wrap_ddp(self.disc, self.dist)
            self.disc_opt = torch.optim.Adam(
                self.disc.parameters(), lr=train_cfg.disc_lr or train_cfg.lr, betas=train_cfg.betas
            )
        self.perceptual = None
        if train_cfg.perceptual_weight > 0 and train_cfg.perceptual_weights:
            self.perceptual = PerceptualLoss(train_cfg.perceptual_weights).to(dev)
        elif train_cfg.perceptual_weight > 0:
            say(DISABLED_MESSAGE)
        self._live_usage = WindowUsage(self.model.codebook_size, USAGE_WINDOW)
        self._extractor = None  # FID features, built at the first evaluation
        torch.manual_seed(train_cfg.seed + 1 + self.dist.rank)

    # ----------------------------------------------------------- TrainTask
    def modules(self) -> dict[str, torch.nn.Module]:
        mods: dict[str, torch.nn.Module] = {"tokenizer": self.model}
        if self.disc is not None:
            mods["discriminator"] = self.disc
        return mods

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts: dict[str, torch.optim.Optimizer] = {"tokenizer": self.opt}
        if self.disc_opt is not None:
            opts["discriminator"] = self.disc_opt
        return opts

    def config(self) -> dict[str, Any]:
        return {"tokenizer": self.model_cfg.to_dict(), "train": saved_fields(asdict(self.cfg))}

    def micro_batches(self, step: int, n: int) -> list[dict[str, Tensor]]:
        batches = []
        for s in micro_steps(step, n):
            x = self.batches.batch(s).to(self.dist.device)
            if self.memory_format is not None:
                x = x.contiguous(memory_format=self.memory_format)
            batches.append({"images": x})
        return batches

    def updates(self, step: int) -> list[Update]:
        ups = [Update("tokenizer", self.cfg, list(self.model.parameters()), [self.ddp_model])]
        if self._gan_on(step):
            ups.append(Update("discriminator", sync=[self.ddp_disc]))
        return ups

    def _gan_on(self, step: int) -> bool:
        return self.disc is not None and step > self.cfg.disc_start

    def loss(
        self, update: str, batch: dict[str, Tensor], step: int
    ) -> tuple[Tensor, dict[str, float]]:
        if update == "discriminator":
            return self._disc_loss(batch["target"], batch["fake"])
        cfg = self.cfg
        x = batch["images"]
        target = x * 2.0 - 1.0
        out = self.ddp_model(x)
        rec = reconstruction_loss(out.recon, target, cfg.recon_loss)
        nll = rec
        metrics: dict[str, float] = {"recon": rec.item()}
        if self.perceptual is not None:
            p = self.perceptual(out.recon, target)
            nll = nll + cfg.perceptual_weight * p
            metrics["perceptual"] = p.item()
        aux = out.quant.aux_loss
        loss = nll + aux
        if self._gan_on(step):
            assert self.disc is not None
            self.disc.requires_grad_(False)  # the generator step must not train D
            g_loss = hinge_g_loss(self.disc(out.recon))
            d_w = adaptive_weight(nll, g_loss, self.model.decoder.last_layer) * cfg.disc_weight
            loss = loss + d_w * g_loss
            self.disc.requires_grad_(True)
            metrics.update(g_loss=g_loss.item(), d_weight=d_w.item())
            batch.update(target=target, fake=out.recon.detach())  # for the D update
        metrics.update(
            loss=loss.item(),
            aux=aux.item(),
            usage=self._live_usage.update(out.quant.indices),
        )
        metrics.update({f"q_{k}": v.item() for k, v in out.quant.losses.items()})
        return loss, metrics

    def _disc_loss(self, real: Tensor, fake: Tensor) -> tuple[Tensor, dict[str, float]]:
        assert self.ddp_disc is not None
        r1 = self.cfg.r1_weight
        if r1:
            real = real.detach().requires_grad_(True)
        # One forward over real+fake (GroupNorm is per sample): one DDP reduction.
        logits = self.ddp_disc(torch.cat([real, fake]))
        logits_real, logits_fake = logits.chunk(2)
        d_loss = hinge_d_loss(logits_real, logits_fake)
        metrics = {"d_loss": d_loss.item()}
        if r1:
            penalty = r1_penalty(logits_real, real)
            d_loss = d_loss + 0.5 * r1 * penalty
            metrics["r1"] = penalty.item()
        return d_loss, metrics

    def evaluate(self, step: int) -> dict[str, float]:
        # Every rank evaluates the whole (small) validation set with the unwrapped
        # model: no collectives, so no rank can hang waiting for another.
        metrics = evaluate_tokenizer(
            self.model, self.val_data, self.cfg.eval_batch_size, self.dist.device
        )
        if self.cfg.fid != "none":
            if self._extractor is None:
                say = self.dist.is_main
                self._extractor = feature_extractor(self.cfg.fid, self.dist.device, say=say)
            was = self.model.training
            self.model.eval()
            fid = reconstruction_fid(
                self.val_data,
                self.model.reconstruct,
                self._extractor,
                self.dist,
                self.cfg.eval_batch_size,
            )
            metrics.update(fid)
            self.model.train(was)
        if self.dist.is_main and self.cfg.grid_images:
            self.save_grid(os.path.join(self.out_dir, "recon.png"))
        return metrics

    @torch.no_grad()
    def save_grid(self, path: str) -> None:
        """Originals (top row) vs reconstructions (bottom row) of the first validation images."""
        x = self.val_data.batch(slice(0, self.cfg.grid_images)).to(self.dist.device)
        was = self.model.training
        self.model.eval()
        rec = self.model.reconstruct(x)
        self.model.train(was)
        save_image_grid([x.cpu(), rec.cpu()], path)

    def close(self) -> None:
        """Stop the data workers of a streamed source."""
        self.batches.close()


@dataclass
class TrainResult:
    """What :func:`train_tokenizer` returns: the model, its final validation
    metrics, the run directory and the optimisation time in seconds."""

    model: Tokenizer
    metrics: dict[str, float]
    out_dir: str
    train_seconds: float


def train_tokenizer(
    model_cfg: TokenizerConfig,
    train_cfg: TokenizerTrainConfig,
    trainer_cfg: TrainerConfig,
    dist_info: DistInfo | None = None,
) -> TrainResult:
    """Train (or resume) a tokenizer run in ``trainer_cfg.out_dir``."""
    os.makedirs(trainer_cfg.out_dir, exist_ok=True)
    task = TokenizerTask(
        model_cfg,
        train_cfg,
        trainer_cfg.steps,
        trainer_cfg.out_dir,
        dist_info,
        verbose=trainer_cfg.progress,
    )
    trainer = Trainer(task, trainer_cfg, dist_info)
    try:
        metrics = trainer.fit()
    finally:
        task.close()
    return TrainResult(
        unwrap(task.model).eval(), metrics, trainer_cfg.out_dir, trainer.train_seconds
    )  # type: ignore[arg-type]
