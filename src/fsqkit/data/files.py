"""User data: ``folder:PATH`` (a folder of images, class sub-folders become
labels) and ``npz:PATH`` (arrays).

Both are resized (short side) and center-cropped to ``image_size``. Without an
explicit validation set, a deterministic shuffled 10% (at least one image) is
held out for validation. Every failure names the offending path.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

from fsqkit.data.dataset import ImageDataset, held_out_split, resize_center_crop, to_uint8_chw

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _list_images(root: str) -> tuple[list[str], list[int], list[str]]:
    """Image paths, labels and class names. Sub-folders are classes (sorted names);
    images directly in ``root`` get label 0 when there are no sub-folders."""
    subdirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))

    def images_in(d: str) -> list[str]:
        return sorted(
            os.path.join(d, f)
            for f in os.listdir(d)
            if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(d, f))
        )

    if subdirs:
        paths, labels, names = [], [], []
        for d in subdirs:
            files = images_in(os.path.join(root, d))
            if files:
                labels += [len(names)] * len(files)
                names.append(d)
                paths += files
        return paths, labels, names
    return images_in(root), [], []


def folder_dataset(path: str, split: str, *, image_size: int = 32, seed: int = 0) -> ImageDataset:
    """All images under ``path`` (one level of class sub-folders, or flat)."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.exists(path):
        raise FileNotFoundError(f"folder data: {path!r} does not exist")
    if not os.path.isdir(path):
        raise ValueError(f"folder data: {path!r} is not a directory (use npz:PATH for arrays)")
    paths, labels, names = _list_images(path)
    if not paths:
        raise ValueError(
            f"folder data: no images ({', '.join(IMAGE_EXTENSIONS)}) found in {path!r} "
            f"or its immediate sub-folders"
        )
    idx = held_out_split(len(paths), split, seed)
    imgs = []
    for i in idx.tolist():
        p = paths[i]
        try:
            with Image.open(p) as im:
                arr = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"folder data: cannot read image {p!r}: {err}") from None
        imgs.append(resize_center_crop(to_uint8_chw(arr, what=p), image_size))
    y = torch.tensor(labels, dtype=torch.int64)[idx] if labels else None
    return ImageDataset(
        torch.stack(imgs),
        y,
        num_classes=len(names),
        name=f"folder:{path}/{split}",
        class_names=names or None,
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
