"""COCO-panoptic-format data: a JSON file, a folder of label PNGs and a folder
of images.

- The JSON has ``categories`` ``[{id, name, isthing}]``, ``images``
  ``[{id, file_name[, height, width]}]`` and ``annotations``
  ``[{image_id, file_name, segments_info: [{id, category_id[, iscrowd]}]}]``.
- Each annotation's PNG (in the label folder) encodes a segment id per pixel as
  ``id = R + 256 G + 256^2 B``; ``0`` is unlabelled.

Classes are numbered ``0..C-1`` in increasing category id. Unlabelled and crowd
pixels get the void label; thing segments get instance ids ``1..K`` in
``segments_info`` order, stuff and void ``0``; a crowd map keeps the class of
each crowd region (for the metric's COCO crowd rule). Every inconsistency (a missing
file or key, a corrupt PNG, a PNG colour missing from ``segments_info`` or a
segment missing from the PNG, an unknown category, image and label sizes that
differ) raises an error naming the file.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from torch import Tensor

from fsqkit.data.dataset import resize_center_crop, to_uint8_chw
from fsqkit.data.panoptic import VOID_LABEL, PanopticCategories, PanopticDataset

PathLike = str | os.PathLike


def _key(entry: object, key: str, where: str) -> object:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    if key not in entry:
        raise ValueError(f"{where}: missing key {key!r}")
    return entry[key]


def _int_key(entry: object, key: str, where: str) -> int:
    value = _key(entry, key, where)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: {key!r} must be an integer, got {value!r}")
    return value


def _read_json(path: PathLike) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"COCO panoptic JSON {str(path)!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"COCO panoptic JSON {str(path)!r} is not valid JSON: {err}") from None
    for key in ("annotations", "categories", "images"):
        if not isinstance(_key(data, key, str(path)), list):
            raise ValueError(f"{str(path)!r}: {key!r} must be a list")
    return data


def _categories(data: dict, where: str) -> PanopticCategories:
    cats = data["categories"]
    for i, c in enumerate(cats):
        _int_key(c, "id", f"{where} categories[{i}]")
    cats = sorted(cats, key=lambda c: c["id"])
    ids = [c["id"] for c in cats]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{where}: duplicate category ids in {ids}")
    names = tuple(str(_key(c, "name", f"{where} category {c['id']}")) for c in cats)
    things = tuple(bool(_key(c, "isthing", f"{where} category {c['id']}")) for c in cats)
    return PanopticCategories(names, things, VOID_LABEL, tuple(ids))


def read_coco_categories(json_path: PathLike) -> PanopticCategories:
    """The class table of a COCO-panoptic JSON (classes in increasing category id)."""
    return _categories(_read_json(json_path), str(json_path))


def _read_rgb(path: str, what: str) -> np.ndarray:
    """``[H, W, 3]`` uint8 array of an image file; errors name the file."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path!r} does not exist")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"cannot read {what} {path!r} (corrupt?): {err}") from None


def _labels(
    png: np.ndarray, segments: object, categories: PanopticCategories, png_path: str, where: str
) -> Tensor:
    """Segment-id PNG ``[H, W, 3]`` -> ``[3, H, W]`` int64 semantic, instance and
    crowd maps; errors name the PNG ``png_path`` and the annotation ``where``."""
    if not isinstance(segments, list):
        raise ValueError(f"{where}: 'segments_info' must be a list")
    rgb = png.astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]
    class_of = {cid: k for k, cid in enumerate(categories.source_ids or ())}
    void = categories.void_label
    table: dict[int, tuple[int, int, int]] = {0: (void, 0, void)}
    n_things = 0
    for i, seg in enumerate(segments):
        seg_where = f"{where} segments_info[{i}]"
        sid, cid = _int_key(seg, "id", seg_where), _int_key(seg, "category_id", seg_where)
        if sid in table:
            raise ValueError(f"{seg_where}: segment id {sid} is 0 or appears twice")
        if cid not in class_of:
            raise ValueError(
                f"{seg_where}: unknown category_id {cid} (categories: {sorted(class_of)})"
            )
        if seg.get("iscrowd", 0):
            table[sid] = (void, 0, class_of[cid])
        elif categories.is_thing[class_of[cid]]:
            n_things += 1
            table[sid] = (class_of[cid], n_things, void)
        else:
            table[sid] = (class_of[cid], 0, void)
    present, inverse = np.unique(ids, return_inverse=True)
    missing = [int(s) for s in present if int(s) not in table]
    if missing:
        s = missing[0]
        raise ValueError(
            f"{png_path!r}: PNG colour (R, G, B) = ({s % 256}, {s // 256 % 256}, {s // 256**2}) "
            f"is segment id {s}, which is not in segments_info of {where}"
        )
    absent = sorted(set(table) - {0} - {int(s) for s in present})
    if absent:
        raise ValueError(
            f"{where}: segments {absent} are in segments_info but not in the PNG {png_path!r}"
        )
    lookup = torch.tensor([table[int(s)] for s in present], dtype=torch.int64)
    return lookup[torch.from_numpy(inverse.reshape(ids.shape))].permute(2, 0, 1)


def resize_center_crop_labels(labels: Tensor, size: int) -> Tensor:
    """``[..., H, W]`` int -> ``[..., size, size]``: the geometry of
    :func:`~fsqkit.data.dataset.resize_center_crop` (short side to ``size``, center
    crop) with nearest-neighbour sampling at pixel centres, so labels stay exact."""
    h, w = labels.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    top, left = (nh - size) // 2, (nw - size) // 2
    rows = ((torch.arange(top, top + size) + 0.5) * h / nh).long().clamp(max=h - 1)
    cols = ((torch.arange(left, left + size) + 0.5) * w / nw).long().clamp(max=w - 1)
    return labels[..., rows[:, None], cols[None, :]]


def load_coco_panoptic(
    json_path: PathLike,
    label_dir: PathLike,
    image_dir: PathLike,
    *,
    image_size: int | None = None,
    max_images: int | None = None,
) -> PanopticDataset:
    """Load a COCO-panoptic-format data set.

    Args:
        json_path: the panoptic JSON (``annotations``, ``categories``, ``images``).
        label_dir: folder of the annotations' PNGs.
        image_dir: folder of the images (``images[].file_name``).
        image_size: resize the short side to this and center-crop (images
            bilinear, labels nearest); ``None`` keeps the size (then all images
            must share it).
        max_images: load only the first annotations.

    Returns:
        A :class:`PanopticDataset`: images ``[N, 3, S, S]`` uint8, semantic,
        instance and crowd maps ``[N, S, S]`` int64, the categories, the PNG names.
    """
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")
    if max_images is not None and (not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f"max_images must be a positive integer or None, got {max_images!r}")
    json_name = str(json_path)
    data = _read_json(json_path)
    categories = _categories(data, json_name)
    images = {_key(im, "id", f"{json_name} images[{i}]"): im for i, im in enumerate(data["images"])}
    annotations = data["annotations"][:max_images]
    if not annotations:
        raise ValueError(f"{json_name!r} has no annotations")
    out_images, out_labels, names = [], [], []
    for i, ann in enumerate(annotations):
        where = f"{json_name} annotations[{i}]"
        png_name = str(_key(ann, "file_name", where))
        image_id = _key(ann, "image_id", where)
        if image_id not in images:
            raise ValueError(f"{where}: image_id {image_id!r} is not in 'images'")
        info = images[image_id]
        image_path = os.path.join(
            image_dir, str(_key(info, "file_name", f"{json_name} image {image_id}"))
        )
        png_path = os.path.join(label_dir, png_name)
        png = _read_rgb(png_path, "panoptic label PNG")
        image = _read_rgb(image_path, "image")
        if png.shape != image.shape:
            raise ValueError(
                f"image {image_path!r} is {image.shape[0]}x{image.shape[1]} but its labels "
                f"{png_path!r} are {png.shape[0]}x{png.shape[1]} (height x width)"
            )
        declared = (info.get("height", image.shape[0]), info.get("width", image.shape[1]))
        if tuple(declared) != image.shape[:2]:
            raise ValueError(
                f"image {image_path!r} is {image.shape[0]}x{image.shape[1]} but {json_name!r} "
                f"declares height x width {declared[0]}x{declared[1]}"
            )
        segments = _key(ann, "segments_info", where)
        labels = _labels(png, segments, categories, png_path, f"{where} ({png_name})")
        img = to_uint8_chw(image, what=image_path)
        if image_size is not None:
            img = resize_center_crop(img, image_size)
            labels = resize_center_crop_labels(labels, image_size)
        out_images.append(img)
        out_labels.append(labels)
        names.append(png_name)
    sizes = {tuple(im.shape[1:]) for im in out_images}
    if len(sizes) > 1:
        raise ValueError(
            f"{json_name!r}: images have different sizes {sorted(sizes)}; pass image_size"
        )
    sem, inst, crowd = torch.stack(out_labels).unbind(1)
    return PanopticDataset(torch.stack(out_images), sem, inst, categories, names, crowd)
