"""How a run reads streamed data: the settings every training config shares.

The built-in sources (``embedded``, ``digits``, ``npz:``) live in memory and
ignore these; ``folder:`` and ``wds:`` sources use them. ``workers`` and
``max_bad_files`` change how, not what, a run reads from an image folder, so
they are not part of a run's saved identity (:data:`RUNTIME_FIELDS`): a run may
resume with other values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from fsqkit.data.augment import AUGMENT_MODES, Augment
from fsqkit.data.bad_files import DEFAULT_MAX_BAD_FILES

RUNTIME_FIELDS = ("workers", "max_bad_files")


def default_workers() -> int:
    """Decoding processes by default: one per CPU core but one, at least 1, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus - 1))


@dataclass
class ReadOptions:
    """How streamed data is read (a base of the training configs).

    Attributes:
        val_data: the validation source (default: the data's own ``val`` split:
            ``PATH/val`` next to ``PATH/train``, a held-out 10%, or the last tar shard).
        workers: DataLoader decoding processes (``None``: :func:`default_workers`;
            0: decode in the training process).
        max_bad_files: stop when more image files than this are unreadable.
    """

    val_data: str | None = None
    workers: int | None = None
    max_bad_files: int = DEFAULT_MAX_BAD_FILES

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.max_bad_files < 0:
            raise ValueError(f"max_bad_files must be >= 0, got {self.max_bad_files}")
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()

    @property
    def num_workers(self) -> int:
        return default_workers() if self.workers is None else self.workers


@dataclass
class StreamOptions(ReadOptions):
    """:class:`ReadOptions` and the training augmentation of streamed images.

    Attributes:
        augment: training augmentation of streamed images: ``"crop"`` (random
            square of the image resized to the short side, MaskGIT's VQGAN),
            ``"resized-crop"`` (Inception's random resized crop) or ``"none"``
            (the evaluation centre crop). The built-in sources are not augmented.
        flip: random horizontal flips with ``crop`` / ``resized-crop``.
    """

    augment: str = "crop"
    flip: bool = True

    def __post_init__(self) -> None:
        if self.augment not in AUGMENT_MODES:
            raise ValueError(f"augment must be one of {AUGMENT_MODES}, got {self.augment!r}")
        super().__post_init__()

    @property
    def augmentation(self) -> Augment:
        return Augment(self.augment, flip=self.flip)


def saved_fields(config: dict, runtime: tuple[str, ...] = RUNTIME_FIELDS) -> dict:
    """``config`` (an ``asdict`` of a training config) without the ``runtime`` fields."""
    return {k: v for k, v in config.items() if k not in runtime}
