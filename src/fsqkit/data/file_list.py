"""The file list of an image folder: built once, cached, compact.

Layouts (``folder:PATH``):

- class sub-folders (ImageNet's ``PATH/n01440764/*.JPEG``): the sorted folder
  names are the classes, their images the items (one level deep);
- a flat folder of images: no labels;
- ``PATH/train`` and ``PATH/val`` side by side, each in one of the layouts
  above: the two splits (validation classes take the training classes' indices).

Without a ``train``/``val`` pair, a seeded 10% of the files is held out for
validation (:func:`~fsqkit.data.dataset.held_out_split`).

Paths are kept as one ``numpy`` byte-string array (no Python object per file,
so forked DataLoader workers share it without copying) and the list is cached
as JSON in a run directory's ``data-cache/``, keyed by the folder's absolute
path and checked against the modification times of the folder and its class
folders (adding or removing a file changes them). Zero-byte files are left out
of the list and reported in ``skipped``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

import numpy as np

from fsqkit.data.dataset import held_out_split
from fsqkit.data.decode import IMAGE_EXTENSIONS

CACHE_DIR = "data-cache"
_FORMAT = 1


@dataclass
class FileList:
    """Image files under ``root``.

    Attributes:
        root: the folder the paths are relative to.
        paths: ``(N,)`` byte strings, paths relative to ``root``.
        labels: ``(N,)`` int64 class indices, or ``None`` (flat folder).
        class_names: the classes (sorted folder names), or ``None``.
        skipped: ``(path, reason)`` of files left out while listing (zero bytes).
    """

    root: str
    paths: np.ndarray
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.paths.shape[0])

    def path(self, i: int) -> str:
        return os.path.join(self.root, self.paths[i].decode())

    def label(self, i: int) -> int:
        return -1 if self.labels is None else int(self.labels[i])

    @property
    def num_classes(self) -> int:
        return len(self.class_names or ())

    def subset(self, index: np.ndarray) -> FileList:
        labels = None if self.labels is None else self.labels[index]
        return FileList(self.root, self.paths[index], labels, self.class_names, self.skipped)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _scan_dir(d: str, prefix: str, skipped: list[tuple[str, str]]) -> list[str]:
    """Image files directly in ``d`` (sorted, relative ``prefix/name``)."""
    found = []
    with os.scandir(d) as it:
        for e in it:
            if not _is_image(e.name) or not e.is_file():
                continue
            rel = os.path.join(prefix, e.name) if prefix else e.name
            if e.stat().st_size == 0:
                skipped.append((os.path.join(d, e.name), "zero-byte file"))
                continue
            found.append(rel)
    return sorted(found)


def _class_dirs(root: str) -> list[str]:
    with os.scandir(root) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def scan_folder(root: str, class_names: list[str] | None = None) -> FileList:
    """List ``root`` (see the module docstring). ``class_names``: index the class
    folders by these names (a validation folder next to a training folder).

    Raises ``FileNotFoundError`` for a missing folder and ``ValueError`` (naming
    the folder) when it holds no images.
    """
    if not os.path.exists(root):
        raise FileNotFoundError(f"folder data: {root!r} does not exist")
    if not os.path.isdir(root):
        raise ValueError(f"folder data: {root!r} is not a directory (use npz:PATH for arrays)")
    skipped: list[tuple[str, str]] = []
    subdirs = _class_dirs(root)
    paths: list[str] = []
    labels: list[int] = []
    names: list[str] | None = None
    if subdirs:
        names = list(class_names) if class_names is not None else []
        index = {n: i for i, n in enumerate(names)}
        for d in subdirs:
            files = _scan_dir(os.path.join(root, d), d, skipped)
            if not files:
                continue
            if d not in index:
                if class_names is not None:
                    raise ValueError(
                        f"folder data: class folder {os.path.join(root, d)!r} is not one of "
                        f"the {len(class_names)} training classes"
                    )
                index[d] = len(names)
                names.append(d)
            paths += files
            labels += [index[d]] * len(files)
        if not paths:  # sub-folders without images: maybe a flat folder after all
            names = None
    if not paths:
        paths = _scan_dir(root, "", skipped)
        labels = []
    if not paths:
        raise ValueError(
            f"folder data: no images ({', '.join(IMAGE_EXTENSIONS)}) found in {root!r} "
            f"or its immediate sub-folders"
            + (f" ({len(skipped)} zero-byte file(s) skipped)" if skipped else "")
        )
    arr = np.array([p.encode() for p in paths], dtype=np.bytes_)
    lab = np.array(labels, dtype=np.int64) if names else None
    return FileList(root, arr, lab, names or None, skipped)


def _stamp(root: str) -> dict[str, int]:
    """Modification times of ``root`` and its sub-folders (change on add/remove)."""
    stamp = {".": os.stat(root).st_mtime_ns}
    for d in _class_dirs(root):
        stamp[d] = os.stat(os.path.join(root, d)).st_mtime_ns
    return stamp


def cached_scan(root: str, cache_dir: str | None, class_names: list[str] | None = None) -> FileList:
    """:func:`scan_folder`, cached in ``cache_dir/data-cache/`` (no cache if ``None``)."""
    if cache_dir is None or not os.path.isdir(root):
        return scan_folder(root, class_names)
    root_abs = os.path.abspath(root)
    key = {"format": _FORMAT, "root": root_abs, "classes": class_names}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, CACHE_DIR, f"files-{digest}.json")
    stamp = _stamp(root)
    if os.path.isfile(path):
        try:
            with open(path) as f:
                c = json.load(f)
            if c.get("key") == key and c.get("stamp") == stamp:
                lab = c["labels"]
                return FileList(
                    root,
                    np.array([p.encode() for p in c["paths"]], dtype=np.bytes_),
                    None if lab is None else np.array(lab, dtype=np.int64),
                    c["class_names"],
                    [tuple(s) for s in c["skipped"]],
                )
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable cache: list again
    fl = scan_folder(root, class_names)
    record = {
        "key": key,
        "stamp": stamp,
        "count": len(fl),
        "skipped_count": len(fl.skipped),
        "class_names": fl.class_names,
        "skipped": fl.skipped,
        "paths": [p.decode() for p in fl.paths],
        "labels": None if fl.labels is None else fl.labels.tolist(),
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)  # atomic: ranks that list at once never read half a file
    return fl


def has_split_folders(root: str) -> bool:
    """``root/train`` and ``root/val`` both exist (explicit splits)."""
    return os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "val"))


def folder_split(
    root: str,
    split: str,
    *,
    seed: int = 0,
    cache_dir: str | None = None,
    class_names: list[str] | None = None,
) -> FileList:
    """The files of ``split`` (``"train"``, ``"val"`` or ``"all"``) of ``root``.

    ``root/train`` + ``root/val`` are used as they are; otherwise ``"val"`` is a
    seeded 10% of the files and ``"train"`` the rest (both in a seeded order).
    ``class_names``: the training classes, for an explicit validation folder.
    """
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    if os.path.isdir(root) and has_split_folders(root):
        train = cached_scan(os.path.join(root, "train"), cache_dir, class_names)
        if split == "train":
            return train
        names = class_names if class_names is not None else train.class_names
        return cached_scan(os.path.join(root, "val"), cache_dir, names)
    files = cached_scan(root, cache_dir, class_names)
    if split == "all":
        return files
    return files.subset(held_out_split(len(files), split, seed).numpy())
