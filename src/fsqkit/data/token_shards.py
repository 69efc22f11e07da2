"""Token shards: a data set's token grids on disk, read memory-mapped (format only).

A token-shard directory holds::

    encoding.json          what produces the shards (written first; a resumed
                           encoding checks it)
    tokens-00000.npy       (n, h, w) token grids: int16 when the codebook fits
    labels-00000.npy       (n,) int32 class labels (only for labelled data)
    ...
    manifest.json          written last, when every shard is there: the grid,
                           dtype, codebook size, shard counts, classes and the
                           encoding record (tokenizer fingerprint, data spec)

Each shard file is written to a temporary name and renamed, so a shard that
exists is complete: an interrupted encoding resumes by skipping the shards that
exist. :class:`TokenShards` reads a finished directory memory-mapped (or loaded
into memory) and gathers batches across shards.

Dimension legend: ``N`` items, ``h, w`` token grid, ``K`` codebook size.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import numpy as np
import torch
from torch import Tensor

FORMAT = "fsqkit-token-shards"
VERSION = 1
ENCODING = "encoding.json"
MANIFEST = "manifest.json"


def token_dtype(codebook_size: int) -> np.dtype:
    """The smallest integer type that holds indices ``0 .. K - 1``."""
    if codebook_size <= 2**15:
        return np.dtype(np.int16)
    if codebook_size <= 2**16:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


def shard_names(k: int) -> tuple[str, str]:
    return f"tokens-{k:05d}.npy", f"labels-{k:05d}.npy"


def _write_json(path: str, record: dict[str, Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2, default=str)
    os.replace(tmp, path)


def _save_npy(path: str, array: np.ndarray) -> None:
    tmp = f"{path}.{os.getpid()}.tmp.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


def read_json(path: str) -> dict[str, Any] | None:
    """A JSON record, or ``None`` if the file is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class TokenShardWriter:
    """Writes the shards of one directory (any rank may write any shard).

    Args:
        out_dir: the shard directory.
        encoding: what produces the tokens (tokenizer fingerprint, data spec, ...);
            a directory started with another record raises ``ValueError``
            unless ``overwrite`` (then its files are deleted).
        codebook_size: ``K`` (sets the token dtype).
        create: write ``encoding.json`` (rank 0; the others only check it).
    """

    def __init__(
        self,
        out_dir: str,
        encoding: dict[str, Any],
        codebook_size: int,
        *,
        overwrite: bool = False,
        create: bool = True,
    ) -> None:
        self.dir = out_dir
        self.encoding = json.loads(json.dumps(encoding, default=str))
        self.codebook_size = codebook_size
        self.dtype = token_dtype(codebook_size)
        found = read_json(os.path.join(out_dir, ENCODING))
        if found is not None and found != self.encoding:
            if not overwrite:
                differs = sorted(k for k in self.encoding if found.get(k) != self.encoding[k])
                raise ValueError(
                    f"{out_dir} holds tokens of another encoding (differs in {differs}); "
                    f"choose another output folder or overwrite it"
                )
            if create:
                shutil.rmtree(out_dir)
        if create:
            os.makedirs(out_dir, exist_ok=True)
            if read_json(os.path.join(out_dir, ENCODING)) != self.encoding:
                _write_json(os.path.join(out_dir, ENCODING), self.encoding)

    def done(self, k: int) -> bool:
        """Shard ``k`` exists (it is complete: shards are renamed into place)."""
        return os.path.isfile(os.path.join(self.dir, shard_names(k)[0]))

    def write(
        self, k: int, tokens: Tensor | np.ndarray, labels: Tensor | np.ndarray | None
    ) -> None:
        """Write shard ``k``: ``tokens (n, h, w)`` and ``labels (n,)`` or ``None``."""
        t = np.asarray(tokens.cpu() if isinstance(tokens, Tensor) else tokens)
        if t.ndim != 3:
            raise ValueError(f"token shard {k}: expected (n, h, w) tokens, got {t.shape}")
        if t.size and (int(t.min()) < 0 or int(t.max()) >= self.codebook_size):
            raise ValueError(f"token shard {k}: indices outside [0, {self.codebook_size})")
        tok_name, lab_name = shard_names(k)
        if labels is not None:
            lab = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels)
            if lab.shape != (t.shape[0],):
                raise ValueError(f"token shard {k}: {lab.shape} labels for {t.shape[0]} items")
            _save_npy(os.path.join(self.dir, lab_name), lab.astype(np.int32))
        _save_npy(os.path.join(self.dir, tok_name), t.astype(self.dtype))  # last: marks done

    def finish(
        self,
        num_shards: int,
        *,
        num_classes: int = 0,
        class_names: list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write ``manifest.json`` over shards ``0 .. num_shards - 1`` (all must exist)."""
        shards = []
        grid: tuple[int, ...] | None = None
        for k in range(num_shards):
            tok_name, lab_name = shard_names(k)
            path = os.path.join(self.dir, tok_name)
            if not os.path.isfile(path):
                raise ValueError(
                    f"token shard {path} is missing; run the encoding again to finish it"
                )
            arr = np.load(path, mmap_mode="r")
            grid = grid or tuple(arr.shape[1:])
            has_labels = os.path.isfile(os.path.join(self.dir, lab_name))
            shards.append(
                {"tokens": tok_name, "labels": lab_name if has_labels else None, "count": len(arr)}
            )
        if grid is None:
            raise ValueError(f"{self.dir}: no token shards to finish")
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "num_items": sum(s["count"] for s in shards),
            "grid": list(grid),
            "dtype": self.dtype.name,
            "codebook_size": self.codebook_size,
            "num_classes": num_classes,
            "class_names": class_names,
            "shards": shards,
            "encoding": self.encoding,
            **(extra or {}),
        }
        _write_json(os.path.join(self.dir, MANIFEST), manifest)
        return manifest


def finished_manifest(
    out_dir: str, encoding: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The manifest of a finished directory (of ``encoding`` if given), else ``None``."""
    m = read_json(os.path.join(out_dir, MANIFEST))
    if m is None or m.get("format") != FORMAT:
        return None
    if encoding is not None and m.get("encoding") != json.loads(json.dumps(encoding, default=str)):
        return None
    return m


class TokenShards:
    """A finished token-shard directory: ``len``, ``batch(index)``, ``head(n)``.

    Args:
        path: the directory (with ``manifest.json``).
        mmap: memory-map the shards (default) or load them into memory.
    """

    def __init__(self, path: str, mmap: bool = True) -> None:
        m = read_json(os.path.join(path, MANIFEST))
        if m is None:
            missing = not os.path.isdir(path)
            raise (FileNotFoundError if missing else ValueError)(
                f"token shards: {path!r} "
                + (
                    "does not exist"
                    if missing
                    else "has no manifest.json (an unfinished encoding?)"
                )
            )
        if m.get("format") != FORMAT:
            raise ValueError(f"token shards: {path!r} is not a {FORMAT} directory")
        self.path, self.manifest = path, m
        mode = "r" if mmap else None
        self._tokens: list[np.ndarray] = []
        self._labels: list[np.ndarray] | None = []
        for s in m["shards"]:
            try:
                t = np.load(os.path.join(path, s["tokens"]), mmap_mode=mode)
                lab = s["labels"] and np.load(os.path.join(path, s["labels"]), mmap_mode=mode)
            except (OSError, ValueError) as err:
                raise ValueError(
                    f"token shards: cannot read {s['tokens']} in {path!r}: {err}"
                ) from None
            if len(t) != s["count"] or list(t.shape[1:]) != m["grid"]:
                raise ValueError(
                    f"token shards: {os.path.join(path, s['tokens'])} holds {tuple(t.shape)}, "
                    f"the manifest says {s['count']} grids of {m['grid']}"
                )
            self._tokens.append(t)
            if lab is None or self._labels is None:
                self._labels = None
            else:
                self._labels.append(lab)
        counts = np.array([s["count"] for s in m["shards"]], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)])
        self._n = int(self._starts[-1])

    def __len__(self) -> int:
        return self._n

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.manifest["grid"][0]), int(self.manifest["grid"][1])

    @property
    def codebook_size(self) -> int:
        return int(self.manifest["codebook_size"])

    @property
    def num_classes(self) -> int:
        return int(self.manifest.get("num_classes") or 0)

    @property
    def has_labels(self) -> bool:
        return self._labels is not None

    def head(self, n: int) -> TokenShards:
        """A view of the first ``n`` items (all of them if there are fewer)."""
        if n >= self._n:
            return self
        view = object.__new__(TokenShards)
        view.__dict__.update(self.__dict__)
        view._n = n
        return view

    def _gather(self, arrays: list[np.ndarray], idx: np.ndarray) -> np.ndarray:
        shard = np.searchsorted(self._starts, idx, side="right") - 1
        first = arrays[0]
        out = np.empty((len(idx), *first.shape[1:]), dtype=first.dtype)
        for k in np.unique(shard):
            sel = shard == k
            out[sel] = arrays[k][idx[sel] - self._starts[k]]
        return out

    def batch(self, index: Tensor | slice | np.ndarray) -> tuple[Tensor, Tensor | None]:
        """Token grids ``(B, h, w)`` int64 and labels ``(B,)`` int64 (or ``None``)."""
        if isinstance(index, slice):
            idx = np.arange(*index.indices(self._n))
        else:
            idx = np.asarray(index.cpu() if isinstance(index, Tensor) else index, dtype=np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= self._n):
                raise IndexError(f"token shards: index out of range [0, {self._n})")
        tokens = torch.from_numpy(self._gather(self._tokens, idx).astype(np.int64))
        labels = None
        if self._labels is not None:
            labels = torch.from_numpy(self._gather(self._labels, idx).astype(np.int64))
        return tokens, labels

    def __repr__(self) -> str:
        h, w = self.grid
        return f"TokenShards({self.path!r}, {self._n} grids {h}x{w}, K={self.codebook_size})"
