"""Budgets of the studies: one :class:`StudyScale` fixes everything a cell
shares with the other cells (data, architecture, steps, stage II, evaluation).

- ``tiny``: a smoke test (seconds per cell); numbers mean nothing.
- ``small``: the default; sized for a 2-core CPU: 8x8 crops, f=2 (4x4 tokens),
  the paper's sizes 2^4 … 2^12 (see docs/studies.md for the measured wall time).
- ``paper``: codebooks up to 2^16, sized for GPUs; runs unchanged under
  ``torchrun`` (each cell trains with DDP, every rank evaluates, rank 0 writes).
- ``imagenet128``: the paper's Fig. 3 setting: ImageNet at 128x128 (``--data
  folder:PATH`` to its train folder), MaskGIT's VQGAN tokenizer (128 filters,
  ``[1, 1, 2, 2, 4]``, 16x down-sampling: 8x8 tokens) and its stage II
  (24 layers, width 768, 16 heads), codebooks 2^4 … 2^16; bf16 autocast.
  Where the paper is silent (steps, batch, image counts for the metrics) see
  :data:`IMAGENET128_NOTES`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from fsqkit.experiments.stage2 import MaskGITBudget


@dataclass(frozen=True)
class StudyScale:
    """Shared settings of every cell of a study.

    Attributes:
        name: preset name.
        log2_sizes: default codebook sizes of the codebook-size study (exponents).
        data, image_size, train_images: ``build_dataset`` settings.
        val_images: held-out crops of the reconstruction metrics (PSNR, SSIM,
            perplexity; also of codebook usage when ``usage_images`` is ``None``).
        usage_images: codebook usage and codes used are counted on this many
            held-out crops (encoder only; the first ``val_images`` of them give the
            other reconstruction metrics). A code counts once seen, so usage needs
            many tokens per code: 4096 crops of 4x4 tokens are 16 tokens per code
            at 2^12 (the paper's ImageNet validation: ~3000). ``None``: ``val_images``.
        fd_images: held-out crops (the first of the same split) that reconstructions
            and samples are compared with (Fréchet distance, precision/recall) and
            whose tokens give the compression cost.
        base_channels, channel_mult, num_res_blocks: the tokenizer's encoder/decoder
            (one for all cells); ``vq_dim``: VQ's latent/code width.
        steps, batch_size, lr: stage-I optimisation.
        ckpt_every: stage-I/II checkpoint interval (an interrupted cell resumes
            from its last checkpoint).
        stage2: MaskGIT size, steps, number of samples and decoding steps.
        seed: one seed for data, init and batches of every cell.
        cpu_threads: torch threads when running on the CPU (``None``: torch's
            default); one thread is much faster on a busy, shared 2-core machine.
        precision, ema_decay, grad_accum, compile: the trainer's step settings
            for both stages (:class:`~fsqkit.training.TrainerConfig`).
        features: feature space of the Fréchet distances and precision/recall:
            ``"random-conv"`` (offline proxy), ``"inception"`` (FID) or ``"auto"``
            (Inception when installed, see :mod:`fsqkit.metrics.inception`).
    """

    name: str
    log2_sizes: tuple[int, ...]
    data: str = "embedded"
    image_size: int = 16
    train_images: int = 4096
    val_images: int = 8192
    usage_images: int | None = None
    fd_images: int = 1024
    base_channels: int = 16
    channel_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 1
    vq_dim: int = 16
    steps: int = 500
    batch_size: int = 32
    lr: float = 2e-3
    ckpt_every: int = 100
    stage2: MaskGITBudget = field(default_factory=MaskGITBudget)
    seed: int = 0
    cpu_threads: int | None = 1
    precision: str = "fp32"
    ema_decay: float = 0.0
    grad_accum: int = 1
    compile: bool = False
    features: str = "random-conv"

    def __post_init__(self) -> None:
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.cpu_threads}")
        if not self.log2_sizes:
            raise ValueError("the codebook size list is empty")
        if self.usage_images is not None and self.usage_images < self.val_images:
            raise ValueError(
                f"usage_images ({self.usage_images}) must be >= val_images ({self.val_images})"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The codebook sizes of the paper's Table 1 and Fig. 3 (exponents of 2).
PAPER_LOG2_SIZES: tuple[int, ...] = (4, 6, 8, 9, 10, 11, 12, 14, 16)

SCALES: dict[str, StudyScale] = {
    "tiny": StudyScale(
        name="tiny",
        log2_sizes=(4, 6),
        image_size=8,
        train_images=64,
        val_images=32,
        usage_images=64,
        fd_images=32,
        base_channels=8,
        channel_mult=(1, 2),
        vq_dim=8,
        steps=3,
        batch_size=8,
        ckpt_every=2,
        stage2=MaskGITBudget(
            steps=3, dim=16, depth=1, heads=2, batch_size=8, num_samples=16, decode_steps=2
        ),
    ),
    "small": StudyScale(
        name="small",
        log2_sizes=PAPER_LOG2_SIZES[:7],
        image_size=8,
        channel_mult=(1, 2),
        val_images=4096,
        usage_images=65536,  # 1M tokens: 256 per code at 2^12
        steps=800,
        ckpt_every=200,
        stage2=MaskGITBudget(
            steps=200, dim=64, depth=2, heads=4, batch_size=64, num_samples=256, decode_steps=8
        ),
    ),
    "paper": StudyScale(
        name="paper",
        log2_sizes=PAPER_LOG2_SIZES,
        image_size=64,
        train_images=32768,
        val_images=16384,
        fd_images=4096,
        base_channels=64,
        channel_mult=(1, 1, 2, 4),
        num_res_blocks=2,
        vq_dim=256,
        steps=20000,
        batch_size=64,
        lr=2e-4,
        ckpt_every=1000,
        cpu_threads=None,
        stage2=MaskGITBudget(
            steps=20000,
            dim=512,
            depth=8,
            heads=8,
            batch_size=128,
            lr=2e-4,
            num_samples=4096,
            decode_steps=12,
        ),
    ),
}


IMAGENET128_NOTES = (
    "8x8 tokens (the f=16 tokenizer of the ImageNet-256 runs at 128 px; the paper does not "
    "give the factor of Fig. 3)",
    "stage I 300k steps at batch 64 x 4 micro-batches (global 256 on one process), stage II "
    "300k steps at batch 64 x 4; lr 1e-4 both (the paper's MaskGIT values)",
    "metrics on 50k validation images: usage on all of them, FID (Inception when installed) "
    "and compression cost on 10k; 12 decoding steps, 10k samples",
)
SCALES["imagenet128"] = StudyScale(
    name="imagenet128",
    log2_sizes=PAPER_LOG2_SIZES,
    data="",  # the user's ImageNet folder: --data folder:PATH
    image_size=128,
    train_images=0,
    val_images=50_000,
    fd_images=10_000,
    base_channels=128,
    channel_mult=(1, 1, 2, 2, 4),
    num_res_blocks=2,
    vq_dim=256,
    steps=300_000,
    batch_size=64,
    lr=1e-4,
    ckpt_every=5000,
    cpu_threads=None,
    precision="bf16",
    grad_accum=4,
    features="auto",
    stage2=MaskGITBudget(
        steps=300_000,
        dim=768,
        depth=24,
        heads=16,
        dropout=0.1,
        batch_size=64,
        lr=1e-4,
        warmup_steps=5000,
        num_samples=10_000,
        decode_steps=12,
    ),
)


def get_scale(name: str, **overrides: Any) -> StudyScale:
    """The preset ``name`` with ``overrides`` (``None`` values ignored)."""
    if name not in SCALES:
        raise ValueError(f"unknown scale {name!r}; expected one of {', '.join(SCALES)}")
    scale = replace(SCALES[name], **{k: v for k, v in overrides.items() if v is not None})
    if not scale.data:
        raise ValueError(f"scale {name!r} needs --data (its ImageNet train folder: folder:PATH)")
    return scale
