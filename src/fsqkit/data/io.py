"""Reading and writing image files and image grids (PNG)."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

from fsqkit.data.dataset import resize_center_crop, to_uint8_chw


def expand_image_paths(inputs: list[str]) -> list[str]:
    """Image files, and every image file of the given folders (sorted); errors name
    a missing input or an empty folder."""
    from fsqkit.data.decode import IMAGE_EXTENSIONS

    files: list[str] = []
    for path in inputs:
        if os.path.isdir(path):
            found = sorted(
                os.path.join(path, f)
                for f in os.listdir(path)
                if f.lower().endswith(IMAGE_EXTENSIONS)
            )
            if not found:
                raise ValueError(f"no images found in folder {path!r}")
            files += found
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise FileNotFoundError(f"input {path!r} does not exist")
    return files


def load_image(path: str, image_size: int | None = None) -> Tensor:
    """An image file -> ``(3, H, W)`` float in ``[0, 1]`` (optionally resized and
    center-cropped to ``image_size``). CMYK, 16-bit and alpha images are
    converted as the streamed sources convert them. Errors name the file."""
    from fsqkit.data.decode import BadImage, open_rgb

    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file {path!r} does not exist")
    try:
        im, _ = open_rgb(path)
    except BadImage as err:
        raise ValueError(f"cannot read image {path!r}: {err.reason}") from None
    img = to_uint8_chw(np.asarray(im), what=path)
    if image_size is not None and img.shape[1:] != (image_size, image_size):
        img = resize_center_crop(img, image_size)
    return img.float() / 255.0


def to_uint8_hwc(img: Tensor) -> np.ndarray:
    """``(3, H, W)`` float in ``[0, 1]`` -> ``(H, W, 3)`` uint8 array."""
    return (img.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def save_image(img: Tensor, path: str) -> None:
    """Save a ``(3, H, W)`` float image in ``[0, 1]`` as PNG."""
    from PIL import Image

    Image.fromarray(to_uint8_hwc(img)).save(path)


def image_grid(rows: list[Tensor], pad: int = 2, scale: int = 1) -> Tensor:
    """Stack equally long rows of ``(N, 3, H, W)`` images into one ``(3, H', W')``
    image with ``pad`` white pixels between cells, upscaled ``scale`` x (nearest)."""
    n, _, h, w = rows[0].shape
    grid = torch.ones(3, len(rows) * (h + pad) + pad, n * (w + pad) + pad)
    for r, row in enumerate(rows):
        if row.shape != rows[0].shape:
            raise ValueError(
                f"grid rows must share a shape, got {tuple(row.shape)} vs {tuple(rows[0].shape)}"
            )
        for c in range(n):
            top, left = pad + r * (h + pad), pad + c * (w + pad)
            grid[:, top : top + h, left : left + w] = row[c].clamp(0, 1)
    if scale > 1:
        grid = grid.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    return grid


def save_image_grid(rows: list[Tensor], path: str, pad: int = 2, scale: int = 2) -> None:
    """Save :func:`image_grid` of ``rows`` as a PNG (atomically: temp + replace)."""
    tmp = path + ".tmp.png"
    save_image(image_grid(rows, pad, scale), tmp)
    os.replace(tmp, path)
