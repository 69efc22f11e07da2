"""Training MaskGIT on a tokenizer's tokens: the stage-II *task* for the shared
:class:`~fsqkit.training.Trainer` (one loop for both stages), plus loading.

Stage II derives its vocabulary (``K``) and sequence length (``h * w``) from the
saved tokenizer config (:func:`config_from_tokenizer`); the checkpoint records
the tokenizer's path and fingerprint, so sampling decodes with the right one
and refuses a mismatched one.

Optimiser: AdamW with the paper's betas ``(0.9, 0.96)`` and weight decay
``0.045`` (on matrices and embeddings, not on biases / norms), linear warm-up
then cosine decay. ``lr`` defaults to ``1e-3`` for the tiny CPU models here
(the paper: ``1e-4`` for a 24-layer model).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from fsqkit.data import ReadOptions, build_dataset, is_streamed
from fsqkit.data.bad_files import BadFiles
from fsqkit.data.options import RUNTIME_FIELDS, saved_fields
from fsqkit.maskgit.config import MaskGITConfig
from fsqkit.maskgit.evaluate import compression_cost, sample_fid
from fsqkit.maskgit.loss import masked_token_loss
from fsqkit.maskgit.model import MaskGITTransformer
from fsqkit.maskgit.schedule import PAPER_R_MIN
from fsqkit.maskgit.tokens import cached_tokens, open_token_dir, tokenizer_fingerprint
from fsqkit.metrics.inception import feature_extractor
from fsqkit.tokenizer import Tokenizer, TokenizerConfig
from fsqkit.training import (
    DistInfo,
    Trainer,
    TrainerConfig,
    batch_source,
    load_checkpoint,
    module_weights,
    seed_everything,
    unwrap,
    wrap_ddp,
)
from fsqkit.training.optim import OptimConfig
from fsqkit.training.step import Update, micro_steps


@dataclass
class MaskGITTrainConfig(ReadOptions, OptimConfig):
    """Optimisation and data settings of a MaskGIT run (the optimiser fields of
    :class:`~fsqkit.training.optim.OptimConfig`: AdamW, the paper's betas
    ``(0.9, 0.96)`` and weight decay 0.045, 50 warm-up steps, batch 64; the
    streamed-data fields of :class:`~fsqkit.data.ReadOptions` for encoding).

    Attributes:
        data: data spec the tokens are encoded from (``digits``, ``embedded``,
            ``folder:PATH``, ``wds:PATTERN``, ...); cached in the run directory.
        tokens: instead of ``data``: a directory of token shards written by
            ``fsqkit encode`` (``train/`` and ``val/``), read memory-mapped.
        tokens_in_memory: load ``tokens`` into memory instead (same batches).
        num_train_images, num_val_images: crop counts (``embedded``; ``None``
            = the data set's defaults); otherwise ``num_val_images`` evaluates the
            first validation items only.
        tokenizer: path of the stage-I tokenizer (run or checkpoint directory);
            with ``tokens``, the one the shards record by default.
        class_conditional: condition on labels (``None``: if the data has labels).
        r_min: lower bound of ``r`` in the masking schedule (paper: 0.2972).
        label_smoothing, label_drop: of the loss / for classifier-free guidance.
        eval_steps: decoding steps of the deterministic schedule for the
            validation compression cost (and of sampling for ``fid_samples``).
        fid_samples: also sample this many images in each evaluation and report
            their FID (``fid``: Inception-v3 when installed, else random-conv
            ``sample_fd``), precision and recall against the validation images,
            streamed and shared across ranks (0: off).
        fid: ``"auto"``, ``"inception"`` or ``"random-conv"`` features.
        seed (inherited): also seeds the masks.
    """

    data: str = "digits"
    tokens: str = ""
    tokens_in_memory: bool = False
    num_train_images: int | None = None
    num_val_images: int | None = None
    tokenizer: str = ""
    class_conditional: bool | None = None
    batch_size: int = 64
    betas: tuple[float, float] = (0.9, 0.96)
    weight_decay: float = 0.045
    warmup_steps: int = 50
    r_min: float = PAPER_R_MIN
    label_smoothing: float = 0.1
    label_drop: float = 0.1
    eval_steps: int = 8
    fid_samples: int = 0
    fid: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.r_min <= 1.0:
            raise ValueError(f"r_min must be in [0, 1], got {self.r_min}")
        for name in ("label_smoothing", "label_drop"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


def config_from_tokenizer(
    tok_cfg: TokenizerConfig, codebook_size: int, num_classes: int = 0, **arch: Any
) -> MaskGITConfig:
    """MaskGIT config whose vocabulary and grid come from the tokenizer's config."""
    grid = tok_cfg.token_grid
    return MaskGITConfig(
        codebook_size=codebook_size, grid=(grid, grid), num_classes=num_classes, **arch
    )


def check_compatible(model_cfg: MaskGITConfig, tokenizer: Tokenizer, where: str = "") -> None:
    """Raise ``ValueError`` if ``tokenizer`` does not produce ``model_cfg``'s tokens."""
    grid = tokenizer.cfg.token_grid
    if tokenizer.codebook_size != model_cfg.codebook_size or (grid, grid) != model_cfg.grid:
        raise ValueError(
            f"tokenizer/model mismatch{where}: the MaskGIT model expects codebook size "
            f"{model_cfg.codebook_size} on a {model_cfg.grid[0]}x{model_cfg.grid[1]} grid, the "
            f"tokenizer has {tokenizer.codebook_size} codes on a {grid}x{grid} grid"
        )


def adamw(model: torch.nn.Module, cfg: MaskGITTrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices/embeddings only (not biases, norms, positions)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and name != "pos_emb" else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


class MaskGITTask:
    """MaskGIT's :class:`~fsqkit.training.TrainTask`."""

    progress_keys = ("loss", "masked_acc", "lr")

    def __init__(
        self,
        arch: dict[str, Any],
        train_cfg: MaskGITTrainConfig,
        total_steps: int,
        out_dir: str,
        dist_info: DistInfo | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        self.cfg, self.total_steps, self.out_dir = train_cfg, total_steps, out_dir
        self.dist = dist_info or DistInfo()
        self.tokenizer_path = train_cfg.tokenizer
        if train_cfg.tokens:
            # Token shards from `fsqkit encode`: memory-mapped, read in epochs.
            self.train_tokens, self.val_tokens, manifest = open_token_dir(
                train_cfg.tokens, in_memory=train_cfg.tokens_in_memory
            )
            self.tokenizer_path = train_cfg.tokenizer or manifest.get("tokenizer_path", "")
            order = "epoch"
        if tokenizer is None:
            if not self.tokenizer_path:
                raise ValueError("MaskGITTrainConfig.tokenizer must name a trained tokenizer")
            tokenizer = Tokenizer.load(self.tokenizer_path)
        self.tokenizer = tokenizer.to(self.dist.device).eval()
        self.tokenizer_fp = tokenizer_fingerprint(self.tokenizer)
        if train_cfg.tokens:
            if manifest["encoding"]["tokenizer"] != self.tokenizer_fp:
                raise ValueError(
                    f"token shards {train_cfg.tokens} were encoded by another tokenizer "
                    f"(fingerprint {manifest['encoding']['tokenizer']}, this one "
                    f"{self.tokenizer_fp})"
                )
        else:
            # Encode once into RUN/tokens/ (the ranks share the work); built-in
            # data comes back in memory, streamed data memory-mapped.
            bad = BadFiles(train_cfg.max_bad_files, quiet=not self.dist.is_main)
            self.train_tokens, self.val_tokens = (
                cached_tokens(
                    tokenizer,
                    train_cfg.data,
                    split,
                    out_dir,
                    seed=train_cfg.seed,
                    num_images=n,
                    dist=self.dist,
                    val_data=train_cfg.val_data,
                    workers=train_cfg.num_workers,
                    bad=bad,
                )
                for split, n in (
                    ("train", train_cfg.num_train_images),
                    ("val", train_cfg.num_val_images),
                )
            )
            order = "epoch" if is_streamed(train_cfg.data) else "step"
        if train_cfg.num_val_images is not None:
            self.val_tokens = self.val_tokens.head(train_cfg.num_val_images)
        source = train_cfg.tokens or train_cfg.data
        conditional = train_cfg.class_conditional
        if conditional is None:
            conditional = self.train_tokens.has_labels
        if conditional and not self.train_tokens.has_labels:
            raise ValueError(f"class_conditional=True but data {source!r} has no labels")
        num_classes = self.train_tokens.num_classes if conditional else 0
        self.model_cfg = config_from_tokenizer(
            tokenizer.cfg, tokenizer.codebook_size, num_classes, **arch
        )
        seed_everything(train_cfg.seed)  # identical init on every rank
        self.model = MaskGITTransformer(self.model_cfg).to(self.dist.device)
        self.ddp_model = wrap_ddp(self.model, self.dist)
        self.opt = adamw(self.model, train_cfg)
        self.batches = batch_source(
            self.train_tokens, train_cfg.batch_size, train_cfg.seed, self.dist, order=order
        )
        self._fid: tuple | None = None  # (extractor, val images, real statistics)
        torch.manual_seed(train_cfg.seed + 1 + self.dist.rank)  # dropout streams

    # ----------------------------------------------------------- TrainTask
    def modules(self) -> dict[str, torch.nn.Module]:
        return {"maskgit": self.model}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"maskgit": self.opt}

    def config(self) -> dict[str, Any]:
        # JSON round trip: the trainer compares this with the saved (JSON) config on
        # resume, where tuples have become lists.
        return json.loads(json.dumps(self._config()))

    def _config(self) -> dict[str, Any]:
        return {
            "maskgit": self.model_cfg.to_dict(),
            "train": saved_fields(asdict(self.cfg), (*RUNTIME_FIELDS, "tokens_in_memory")),
            "tokenizer": {
                "path": os.path.abspath(self.tokenizer_path) if self.tokenizer_path else "",
                "fingerprint": self.tokenizer_fp,
                "config": self.tokenizer.cfg.to_dict(),
                "codebook_size": self.tokenizer.codebook_size,
            },
        }

    def _prepare(
        self, batch: tuple[torch.Tensor, torch.Tensor | None]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, h, w)`` tokens and labels -> ``(B, h * w)`` on the device, labels
        only for a class-conditional model."""
        tokens, labels = batch
        return tokens.flatten(1).to(self.dist.device), (
            labels if self.model_cfg.num_classes else None
        )

    def micro_batches(self, step: int, n: int) -> list[dict[str, Any]]:
        batches = []
        for s in micro_steps(step, n):
            tokens, labels = self._prepare(self.batches.batch(s))
            # Masks and label drops are a pure function of (seed, step, rank): exact resume.
            seed = (self.cfg.seed * 1_000_003 + s) * 64 + self.dist.rank
            batches.append({"tokens": tokens, "labels": labels, "seed": seed})
        return batches

    def updates(self, step: int) -> list[Update]:
        return [Update("maskgit", self.cfg, list(self.model.parameters()), [self.ddp_model])]

    def loss(
        self, update: str, batch: dict[str, Any], step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        return masked_token_loss(
            self.ddp_model,
            batch["tokens"],
            batch["labels"],
            r_min=cfg.r_min,
            label_smoothing=cfg.label_smoothing,
            label_drop=cfg.label_drop,
            generator=torch.Generator().manual_seed(batch["seed"]),
        )

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        """Validation masked-token loss/accuracy (fixed masks) and compression cost.
        Every rank evaluates the small validation set alone: no collectives."""
        model = self.model
        was = model.training
        model.eval()
        gen = torch.Generator().manual_seed(12345)
        tokens, labels = self._prepare(self.val_tokens.batch(slice(None)))
        _, metrics = masked_token_loss(
            model,
            tokens,
            labels,
            r_min=self.cfg.r_min,
            label_smoothing=0.0,
            label_drop=0.0,
            generator=gen,
        )
        steps = min(self.cfg.eval_steps, self.model_cfg.seq_len)
        cost = compression_cost(model, tokens, labels, num_steps=steps)
        out = {"val_loss": metrics["loss"], "val_masked_acc": metrics["masked_acc"], **cost}
        if self.cfg.fid_samples:
            out.update(self._sample_fid(step, steps))
        model.train(was)
        return out

    def _sample_fid(self, step: int, num_steps: int) -> dict[str, float]:
        cfg = self.cfg
        if self._fid is None:
            extractor = feature_extractor(cfg.fid, self.dist.device, say=self.dist.is_main)
            val = build_dataset(
                cfg.data,
                "val",
                image_size=self.tokenizer.cfg.image_size,
                seed=cfg.seed,
                num_images=cfg.num_val_images,
            )
            self._fid = (extractor, val, None)
        extractor, val, real = self._fid
        metrics, real = sample_fid(
            self.model, self.tokenizer, val, extractor, cfg.fid_samples,
            info=self.dist, num_steps=num_steps, seed=cfg.seed + step, real=real,
        )  # fmt: skip
        self._fid = (extractor, val, real)
        return metrics


@dataclass
class MaskGITResult:
    """What :func:`train_maskgit` returns."""

    model: MaskGITTransformer
    tokenizer: Tokenizer
    metrics: dict[str, float]
    out_dir: str
    train_seconds: float


def train_maskgit(
    arch: dict[str, Any],
    train_cfg: MaskGITTrainConfig,
    trainer_cfg: TrainerConfig,
    dist_info: DistInfo | None = None,
    tokenizer: Tokenizer | None = None,
) -> MaskGITResult:
    """Train (or resume) a MaskGIT run in ``trainer_cfg.out_dir``.

    ``arch``: :class:`MaskGITConfig` fields other than those derived from the
    tokenizer (``dim``, ``depth``, ``heads``, ``mlp_ratio``, ``dropout``).
    ``tokenizer``: an already loaded tokenizer (else ``train_cfg.tokenizer`` is loaded).
    """
    for derived in ("codebook_size", "grid", "num_classes"):
        if derived in arch:
            raise ValueError(
                f"{derived!r} is derived from the tokenizer/data; do not pass it in arch"
            )
    os.makedirs(trainer_cfg.out_dir, exist_ok=True)
    task = MaskGITTask(
        arch, train_cfg, trainer_cfg.steps, trainer_cfg.out_dir, dist_info, tokenizer
    )
    trainer = Trainer(task, trainer_cfg, dist_info)
    metrics = trainer.fit()
    model = unwrap(task.model).eval()
    return MaskGITResult(model, task.tokenizer, metrics, trainer_cfg.out_dir, trainer.train_seconds)  # type: ignore[arg-type]


def load_maskgit(
    path: str, map_location: str = "cpu", ema: bool = True
) -> tuple[MaskGITTransformer, dict[str, Any]]:
    """Load a MaskGIT model (eval mode) and its checkpoint config from a run or
    checkpoint directory (checksums verified: a damaged file raises
    ``CheckpointCorrupt``, a ``ValueError``, naming it). ``ema``: the run's EMA
    weights when it kept them, else the raw weights (``False``: always raw)."""
    ckpt = load_checkpoint(path, weights_only=True, map_location=map_location)
    if "maskgit" not in ckpt.config or "maskgit" not in ckpt.weights:
        raise ValueError(f"{ckpt.path} is not a MaskGIT checkpoint (no 'maskgit' entry)")
    model = MaskGITTransformer(MaskGITConfig.from_dict(ckpt.config["maskgit"]))
    model.load_state_dict(module_weights(ckpt.weights, "maskgit", ema))
    return model.to(map_location).eval(), ckpt.config


def load_pipeline(
    maskgit_path: str,
    tokenizer_path: str | None = None,
    map_location: str = "cpu",
    ema: bool = True,
) -> tuple[MaskGITTransformer, Tokenizer]:
    """MaskGIT model + the tokenizer it was trained on (or ``tokenizer_path``),
    checked to be compatible (``ValueError`` on a mismatch); ``ema`` as in
    :func:`load_maskgit` (the tokenizer always loads as stage II encoded with it)."""
    model, config = load_maskgit(maskgit_path, map_location, ema)
    path = tokenizer_path or config.get("tokenizer", {}).get("path", "")
    if not path:
        raise ValueError(f"{maskgit_path} records no tokenizer path; pass the tokenizer explicitly")
    tokenizer = Tokenizer.load(path, map_location=map_location)
    check_compatible(model.config, tokenizer, f" ({maskgit_path} vs {path})")
    recorded = config.get("tokenizer", {}).get("fingerprint")
    if recorded and tokenizer_fingerprint(tokenizer) != recorded:
        import warnings

        warnings.warn(
            f"tokenizer {path} has the right shape but is not the one {maskgit_path} was "
            "trained on (weights differ); samples may be meaningless",
            stacklevel=2,
        )
    return model, tokenizer
