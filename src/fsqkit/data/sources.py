"""From a data spec to what a trainer reads: in memory or streamed.

:func:`build_dataset` builds the in-memory :class:`~fsqkit.data.ImageDataset`
of a spec (see :mod:`fsqkit.data`).

:func:`open_images` returns the small built-in sources (``embedded``,
``digits``, ``npz:PATH``) as in-memory :class:`~fsqkit.data.ImageDataset` s,
exactly as :func:`~fsqkit.data.build_dataset` builds them, and the large ones
streamed: ``folder:PATH`` as :class:`~fsqkit.data.streamed.FolderImages`,
``wds:PATTERN`` as :class:`~fsqkit.data.shards.ShardImages`.

:func:`iter_image_batches` passes over any of them in order (evaluation).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import Tensor

from fsqkit.data.augment import EVAL, Augment
from fsqkit.data.bad_files import BadFiles
from fsqkit.data.dataset import ImageDataset
from fsqkit.data.digits import digits_dataset
from fsqkit.data.embedded import embedded_dataset
from fsqkit.data.file_list import folder_split, has_split_folders
from fsqkit.data.files import folder_dataset, npz_dataset

STREAMED_KINDS = ("folder", "wds")

DATA_SPECS = ("embedded", "digits", "folder:PATH", "npz:PATH", "wds:PATTERN")


def build_dataset(
    spec: str,
    split: str,
    *,
    image_size: int = 32,
    seed: int = 0,
    num_images: int | None = None,
) -> ImageDataset:
    """Build the ``split`` (``"train"`` or ``"val"``) of the data source ``spec``.

    ``num_images``: ``embedded``: number of crops; ``folder``: the first images
    of the split (``None``: all). Raises
    ``ValueError`` for an unknown spec and ``FileNotFoundError`` for a missing path.
    """
    if not isinstance(spec, str):
        raise TypeError(f"data spec must be a string, got {type(spec).__name__}")
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    kind, _, path = spec.partition(":")
    if kind == "embedded" and not path:
        return embedded_dataset(split, image_size=image_size, num_images=num_images, seed=seed)
    if kind == "digits" and not path:
        return digits_dataset(split, image_size=image_size, seed=seed)
    if kind == "wds":
        raise ValueError(
            f"{spec!r} is a streamed source (tar shards): the training commands read it, "
            "or use fsqkit.data.open_images"
        )
    if kind in ("folder", "npz"):
        if not path:
            raise ValueError(f"data spec {spec!r} needs a path, e.g. '{kind}:/data/images'")
        if kind == "folder":
            return folder_dataset(
                path, split, image_size=image_size, seed=seed, num_images=num_images
            )
        return npz_dataset(path, split, image_size=image_size, seed=seed)
    raise ValueError(f"unknown data spec {spec!r}; expected one of {', '.join(DATA_SPECS)}")


def is_streamed(spec: str) -> bool:
    """Whether ``spec`` names a streamed source (``folder:``, ``wds:``)."""
    return spec.partition(":")[0] in STREAMED_KINDS


def open_images(
    spec: str,
    split: str,
    *,
    image_size: int = 32,
    seed: int = 0,
    num_images: int | None = None,
    cache_dir: str | None = None,
    augment: Augment = EVAL,
    workers: int = 0,
    bad: BadFiles | None = None,
    val_spec: str | None = None,
) -> Any:
    """The ``split`` (``"train"``/``"val"``; ``"all"``: a whole ``wds:`` set) of
    ``spec``, in memory or streamed.

    Args:
        num_images: ``embedded``: number of crops; streamed sources: the first
            ``num_images`` items of the split (``None``: all).
        cache_dir: where a folder's file list is cached (a run directory).
        augment: training augmentation (the ``val`` split is never augmented).
        workers: decoding processes of a streamed source.
        bad: bad-file bookkeeping (its limit and messages).
        val_spec: an explicit validation source for ``split="val"``.
    """
    if split == "val" and val_spec:
        return _open_val(spec, val_spec, image_size, seed, num_images, cache_dir, workers, bad)
    kind, _, path = spec.partition(":")
    if kind not in STREAMED_KINDS:
        return build_dataset(spec, split, image_size=image_size, seed=seed, num_images=num_images)
    if not path:
        raise ValueError(f"data spec {spec!r} needs a path, e.g. '{kind}:/data/images'")
    aug = augment if split == "train" else EVAL
    if kind == "wds":
        from fsqkit.data.shards import ShardImages

        if split == "train" and val_spec:
            split = "all"  # validation comes from elsewhere: every shard trains
        return ShardImages.open(
            path, split, image_size=image_size, augment=aug, bad=bad, workers=workers,
            num_images=num_images,
        )  # fmt: skip
    from fsqkit.data.streamed import FolderImages

    files = folder_split(path, split, seed=seed, cache_dir=cache_dir)
    ds = FolderImages(files, image_size, aug, f"{spec}/{split}", bad, workers)
    return ds if num_images is None else ds.head(num_images)


def _open_val(
    spec: str,
    val_spec: str,
    image_size: int,
    seed: int,
    num_images: int | None,
    cache_dir: str | None,
    workers: int,
    bad: BadFiles | None,
) -> Any:
    kind, _, path = val_spec.partition(":")
    if kind != "folder":  # tar shards: all of them; built-ins: their val split
        return open_images(
            val_spec, "all" if kind == "wds" else "val", image_size=image_size, seed=seed,
            num_images=num_images, cache_dir=cache_dir, workers=workers, bad=bad,
        )  # fmt: skip
    from fsqkit.data.streamed import FolderImages

    names = None
    train_kind, _, train_path = spec.partition(":")
    if train_kind == "folder":
        names = folder_split(train_path, "train", seed=seed, cache_dir=cache_dir).class_names
    split = "val" if has_split_folders(path) else "all"
    files = folder_split(path, split, seed=seed, cache_dir=cache_dir, class_names=names)
    ds = FolderImages(files, image_size, EVAL, f"{val_spec}/val", bad, workers)
    return ds if num_images is None else ds.head(num_images)


def iter_image_batches(data: Any, batch_size: int) -> Iterator[Tensor]:
    """``(B, 3, H, W)`` float batches of all of ``data`` in order: streamed
    sources decode in their workers, in-memory ones are sliced."""
    if hasattr(data, "iter_batches"):
        yield from data.iter_batches(batch_size)
        return
    for start in range(0, len(data), batch_size):
        yield data.batch(slice(start, start + batch_size))
