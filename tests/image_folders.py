"""Small image data sets the data tests write: an ImageNet-like folder (class
sub-folders of small JPEGs) with the usual bad files, and WebDataset shards."""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

CLASSES = ("ants", "bees", "cats", "dogs")
# The bad files the folder holds: (class folder, file name, what is wrong).
BAD = (
    ("ants", "zero.jpg", "zero-byte"),
    ("bees", "garbage.jpg", "not an image"),
    ("cats", "truncated.jpg", "truncated JPEG"),
)
# Odd but readable images: converted, with a note each.
ODD = (("dogs", "cmyk.jpg"), ("dogs", "gray16.png"), ("dogs", "alpha.png"))


def _jpeg(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def image(rng: np.random.Generator, label: int, h: int = 12, w: int = 16) -> np.ndarray:
    """A ``(h, w, 3)`` uint8 image whose mean brightness tells its class."""
    a = rng.integers(0, 40, size=(h, w, 3), dtype=np.uint8)
    return (a + 50 * label).astype(np.uint8)


def make_image_folder(root: str, per_class: int = 50, bad: bool = True, seed: int = 0) -> int:
    """Write ``root/<class>/<i>.jpg`` (+ the bad and odd files); returns the
    number of good images (odd ones included)."""
    rng = np.random.default_rng(seed)
    for label, cls in enumerate(CLASSES):
        os.makedirs(os.path.join(root, cls), exist_ok=True)
        for i in range(per_class):
            with open(os.path.join(root, cls, f"{i:04d}.jpg"), "wb") as f:
                f.write(_jpeg(image(rng, label)))
    if not bad:
        return per_class * len(CLASSES)
    open(os.path.join(root, "ants", "zero.jpg"), "wb").close()
    with open(os.path.join(root, "bees", "garbage.jpg"), "wb") as f:
        f.write(b"this is not an image at all")
    whole = _jpeg(image(rng, 2, 64, 64))
    with open(os.path.join(root, "cats", "truncated.jpg"), "wb") as f:
        f.write(whole[: len(whole) // 2])
    Image.new("CMYK", (16, 12), (0, 0, 0, 0)).save(os.path.join(root, "dogs", "cmyk.jpg"))
    gray = (np.arange(12 * 16, dtype=np.uint16).reshape(12, 16) * 300).astype(np.uint16)
    Image.fromarray(gray).save(os.path.join(root, "dogs", "gray16.png"))
    Image.new("RGBA", (16, 12), (200, 100, 50, 0)).save(os.path.join(root, "dogs", "alpha.png"))
    return per_class * len(CLASSES) + len(ODD)


def make_shards(out_dir: str, shards: int = 4, per_shard: int = 16, seed: int = 0) -> str:
    """Write ``out_dir/part-{0000..N-1}.tar`` with WebDataset's writer; sample
    ``k`` (global) has ``cls = k`` so a test can tell samples apart. Returns the
    brace pattern."""
    import webdataset as wds

    rng = np.random.default_rng(seed)
    os.makedirs(out_dir, exist_ok=True)
    k = 0
    for s in range(shards):
        with wds.TarWriter(os.path.join(out_dir, f"part-{s:04d}.tar")) as w:
            for _ in range(per_shard):
                w.write({"__key__": f"{k:06d}", "jpg": _jpeg(image(rng, k % 4)), "cls": str(k)})
                k += 1
    return os.path.join(out_dir, f"part-{{0000..{shards - 1:04d}}}.tar")
