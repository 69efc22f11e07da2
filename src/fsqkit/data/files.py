"""User data in memory: ``folder:PATH`` (a folder of images, class sub-folders
become labels) and ``npz:PATH`` (arrays).

Both are resized (short side) and center-cropped to ``image_size``. Without an
explicit validation set, a deterministic shuffled 10% (at least one image) is
held out for validation. Every failure names the offending path. Training
reads folders streamed (:mod:`fsqkit.data.streamed`); this in-memory form is
for small sets and evaluation.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

from fsqkit.data.bad_files import BadFiles
from fsqkit.data.dataset import ImageDataset, held_out_split, resize_center_crop, to_uint8_chw
from fsqkit.data.decode import IMAGE_EXTENSIONS
from fsqkit.data.file_list import folder_split

__all__ = ["IMAGE_EXTENSIONS", "folder_dataset", "npz_dataset"]


def folder_dataset(
    path: str,
    split: str,
    *,
    image_size: int = 32,
    seed: int = 0,
    num_images: int | None = None,
    bad: BadFiles | None = None,
) -> ImageDataset:
    """All images of a split of ``path`` (the layouts of
    :mod:`fsqkit.data.file_list`), decoded into memory with the evaluation crop;
    ``num_images``: only the first ones. Unreadable files are left out with a
    warning each (see :class:`~fsqkit.data.bad_files.BadFiles`). For data sets
    larger than memory, train from the streamed source
    (:class:`~fsqkit.data.streamed.FolderImages`) instead."""
    from fsqkit.data.streamed import FolderImages

    name = f"folder:{path}/{split}"
    ds = FolderImages(folder_split(path, split, seed=seed), image_size, name=name, bad=bad)
    if num_images is not None:
        ds = ds.head(num_images)
    raws = list(ds.iter_raw(256, workers=0))
    if not raws:
        raise ValueError(f"folder data: none of the {len(ds)} image files of {name} can be read")
    labels = torch.cat([r.labels for r in raws]) if ds.has_labels else None
    return ImageDataset(
        torch.cat([r.images for r in raws]),
        labels,
        num_classes=ds.num_classes,
        name=name,
        class_names=ds.class_names,
    )


def _npz_images(arr: np.ndarray, *, what: str, image_size: int) -> Tensor:
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise ValueError(
            f"{what}: expected images of shape (N, H, W[, C]) or (N, C, H, W), got {arr.shape}"
        )
    if arr.shape[1] in (1, 3) and arr.shape[-1] not in (1, 3, 4):
        arr = arr.transpose(0, 2, 3, 1)  # channel-first -> channel-last
    out = []
    for i in range(arr.shape[0]):
        img = to_uint8_chw(arr[i], what=f"{what}[{i}]")
        if img.shape[1:] != (image_size, image_size):
            img = resize_center_crop(img, image_size)
        out.append(img)
    return torch.stack(out)


def npz_dataset(path: str, split: str, *, image_size: int = 32, seed: int = 0) -> ImageDataset:
    """Arrays from a ``.npz`` file with key ``images`` (``(N, H, W[, C])`` or
    ``(N, C, H, W)``, uint8 or float in ``[0, 1]``), optional ``labels`` ``(N,)``,
    and optional ``val_images`` / ``val_labels`` (else 10% of ``images`` are held out)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"npz data: file {path!r} does not exist")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"npz data: cannot read {path!r} as a .npz archive: {err}") from None
    with data:
        if "images" not in data.files:
            raise ValueError(f"npz data: {path!r} has no 'images' array (found: {data.files})")
        explicit_val = "val_images" in data.files
        key = "val_images" if (split == "val" and explicit_val) else "images"
        lkey = "val_labels" if key == "val_images" else "labels"
        images = data[key]
        labels = data[lkey] if lkey in data.files else None
    if labels is not None and labels.shape != (images.shape[0],):
        raise ValueError(
            f"npz data: {path!r} '{lkey}' must have shape ({images.shape[0]},), got {labels.shape}"
        )
    x = _npz_images(images, what=f"{path}:{key}", image_size=image_size)
    y = None if labels is None else torch.from_numpy(labels.astype(np.int64))
    if not explicit_val:
        idx = held_out_split(x.shape[0], split, seed)
        x = x[idx]
        y = None if y is None else y[idx]
    num_classes = 0 if y is None else int(y.max()) + 1
    return ImageDataset(x, y, num_classes=num_classes, name=f"npz:{path}/{split}")
