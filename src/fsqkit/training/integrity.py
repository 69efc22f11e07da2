"""Checksums of a checkpoint's files: ``manifest.json`` lists every file with its
size and SHA-256. It is written last, inside the temporary directory, before
the directory is renamed into place; a checkpoint without it is incomplete.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable

MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def sha256_file(path: str) -> str:
    """Hex SHA-256 of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(ckpt_dir: str, names: Iterable[str]) -> None:
    """Write ``ckpt_dir/manifest.json`` with the size and SHA-256 of ``names``
    (files inside ``ckpt_dir``), flushed to disk."""
    files = {}
    for name in names:
        path = os.path.join(ckpt_dir, name)
        files[name] = {"bytes": os.path.getsize(path), "sha256": sha256_file(path)}
    with open(os.path.join(ckpt_dir, MANIFEST), "w") as f:
        json.dump({"files": files}, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def manifest_problem(ckpt_dir: str) -> str | None:
    """``None`` if every file listed in the manifest matches its checksum, else
    what is wrong, naming the file (``"<dir>/weights.safetensors: ..."``)."""
    path = os.path.join(ckpt_dir, MANIFEST)
    if not os.path.isfile(path):
        return f"{path} is missing (the checkpoint was not written completely)"
    try:
        with open(path) as f:
            files = json.load(f)["files"]
        entries = [(name, int(e["bytes"]), str(e["sha256"])) for name, e in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return f"{path} is unreadable ({type(err).__name__}: {err})"
    for name, size, digest in entries:
        file = os.path.join(ckpt_dir, name)
        if not os.path.isfile(file):
            return f"{file} is missing"
        actual = os.path.getsize(file)
        if actual != size:
            return f"{file} has {actual} bytes, its manifest says {size}"
        if sha256_file(file) != digest:
            return f"{file} does not match its SHA-256 checksum"
    return None
