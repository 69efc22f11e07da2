"""Token data for stage II: a data set encoded through a tokenizer, on disk as
token shards (:mod:`fsqkit.data.token_shards`), encoded once.

:func:`encode_to_shards` streams any source (the built-in sets, image folders,
tar shards) through the tokenizer in batches, on the tokenizer's device, one
shard per part of the data; under ``torchrun`` rank ``r`` encodes parts ``r,
r + W, ...``. Shards that exist are skipped, so an interrupted encoding resumes.
The shards' ``encoding.json`` records what produced them (tokenizer config and
weights checksum, data spec, split, image size, seed), so a changed tokenizer or
data set is never silently reused.

:func:`cached_tokens` is the automatic cache of ``train-maskgit --tokenizer ...
--data ...`` (``RUN/tokens/{split}/``): the same shards, loaded into memory for
the small built-in sources and memory-mapped for streamed ones.

Dimension legend: ``N`` images, ``h, w`` token grid, ``K`` codebook size.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fsqkit.data import build_dataset, is_streamed, open_images
from fsqkit.data.bad_files import BadFiles
from fsqkit.data.token_shards import (
    TokenShards,
    TokenShardWriter,
    finished_manifest,
    shard_names,
)
from fsqkit.tokenizer import Tokenizer
from fsqkit.training import DistInfo, barrier

PART_SIZE = 8192  # items per token shard


@dataclass
class TokenData:
    """Token grids ``tokens [N, h, w]`` (any integer dtype) and ``labels [N]`` (or
    ``None``), in memory; :meth:`batch` gives int64 like :class:`TokenShards`."""

    tokens: Tensor
    labels: Tensor | None
    num_classes: int

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def batch(self, index: Tensor | slice) -> tuple[Tensor, Tensor | None]:
        """Token grids ``(B, h, w)`` int64 and labels ``(B,)`` (or ``None``)."""
        labels = None if self.labels is None else self.labels[index].long()
        return self.tokens[index].long(), labels

    def head(self, n: int) -> TokenData:
        if n >= len(self):
            return self
        labels = None if self.labels is None else self.labels[:n]
        return TokenData(self.tokens[:n], labels, self.num_classes)


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """SHA-256 (first 16 hex digits) of the tokenizer's config and weights."""
    h = hashlib.sha256(json.dumps(tokenizer.cfg.to_dict(), sort_keys=True).encode())
    for name, t in sorted(tokenizer.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def encode_images(tokenizer: Tokenizer, x: Tensor) -> Tensor:
    """``(B, 3, H, W)`` float images -> ``(B, h, w)`` token grids (on the CPU)."""
    device = next(tokenizer.parameters()).device
    tokens = tokenizer.encode(x.to(device)).cpu()
    if tokens.dim() != 3:
        raise ValueError(
            f"MaskGIT needs one token per grid position, but this tokenizer's indices have "
            f"shape {list(tokens.shape[1:])} per image (several codebooks or residual stages)"
        )
    return tokens


@torch.no_grad()
def encode_dataset(
    tokenizer: Tokenizer,
    data: str,
    split: str,
    *,
    seed: int = 0,
    num_images: int | None = None,
    batch_size: int = 256,
) -> TokenData:
    """Encode split ``split`` of the in-memory data spec ``data`` at the
    tokenizer's image size (``num_images``: crop count, ``embedded`` only)."""
    ds = build_dataset(
        data, split, image_size=tokenizer.cfg.image_size, seed=seed, num_images=num_images
    )
    was_training = tokenizer.training
    tokenizer.eval()
    chunks = [encode_images(tokenizer, x) for x, _ in ds.iter_part(0, len(ds), batch_size)]
    tokenizer.train(was_training)
    return TokenData(torch.cat(chunks), ds.labels, ds.num_classes)


def _progress(total: int | None, enabled: bool, label: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=label, unit="img", dynamic_ncols=True, leave=False)


def _num_classes(out_dir: str, parts: int, declared: int) -> int:
    """The source's class count, else (tar shards) the largest label + 1 (0: no labels)."""
    if declared:
        return declared
    top = -1
    for k in range(parts):
        path = os.path.join(out_dir, shard_names(k)[1])
        if os.path.isfile(path):
            labels = np.load(path, mmap_mode="r")
            top = max(top, int(labels.max()) if len(labels) else -1)
    return top + 1


@torch.no_grad()
def encode_to_shards(
    tokenizer: Tokenizer,
    data: Any,
    out_dir: str,
    encoding: dict[str, Any],
    *,
    part_size: int = PART_SIZE,
    batch_size: int = 256,
    dist: DistInfo | None = None,
    overwrite: bool = False,
    progress: bool = False,
    extra: dict[str, Any] | None = None,
) -> TokenShards:
    """Encode every part of ``data`` into token shards in ``out_dir``.

    Args:
        data: a source with ``num_parts(part_size)`` and ``iter_part(k,
            part_size, batch_size)`` yielding ``(images, labels or None)``
            (:class:`~fsqkit.data.ImageDataset`, ``FolderImages``, ``ShardImages``).
        encoding: what produces the tokens (checked when resuming).
        part_size: items per shard (tar shards: one token shard per tar shard).
        dist: under ``torchrun``, rank ``r`` encodes parts ``r, r + W, ...``;
            call it on every rank (it synchronises them).
        overwrite: start over in a folder that holds another encoding.
        progress: a progress bar (rank 0).
        extra: more manifest fields (e.g. the tokenizer's path).

    Returns:
        The finished shards (memory-mapped).
    """
    d = dist or DistInfo()
    record = {**encoding, "part_size": part_size}
    if d.is_main:
        TokenShardWriter(out_dir, record, tokenizer.codebook_size, overwrite=overwrite)
    barrier(d)
    writer = TokenShardWriter(out_dir, record, tokenizer.codebook_size, create=False)
    parts = data.num_parts(part_size)
    mine = [k for k in range(d.rank, parts, d.world_size) if not writer.done(k)]
    known = len(data) if hasattr(data, "__len__") else None
    total = None if known is None else sum(min(part_size, known - k * part_size) for k in mine)
    bar = _progress(total, progress and d.is_main, f"encoding {encoding.get('split', '')}")
    was_training = tokenizer.training
    tokenizer.eval()
    try:
        for k in mine:
            tokens, labels = [], []
            for x, y in data.iter_part(k, part_size, batch_size):
                tokens.append(encode_images(tokenizer, x))
                labels.append(y)
                if bar is not None:
                    bar.update(len(x))
            grid = tokens[0].shape[1:] if tokens else _grid(tokenizer)
            t = torch.cat(tokens) if tokens else torch.empty(0, *grid, dtype=torch.int64)
            has_labels = bool(labels) and all(y is not None for y in labels)
            writer.write(k, t, torch.cat(labels) if has_labels else None)
    finally:
        tokenizer.train(was_training)
        if bar is not None:
            bar.close()
    barrier(d)
    if d.is_main:
        declared = int(getattr(data, "num_classes", 0) or 0)
        writer.finish(
            parts,
            num_classes=_num_classes(out_dir, parts, declared),
            class_names=getattr(data, "class_names", None),
            extra=extra,
        )
    barrier(d)
    return TokenShards(out_dir)


def _grid(tokenizer: Tokenizer) -> tuple[int, int]:
    g = tokenizer.cfg.token_grid
    return g, g


def encoding_record(tokenizer: Tokenizer, data: str, split: str, **fields: Any) -> dict[str, Any]:
    """What identifies an encoding: the tokenizer's fingerprint, the data and its settings."""
    return {
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "data": data,
        "split": split,
        "image_size": tokenizer.cfg.image_size,
        **fields,
    }


def encode_split(
    tokenizer: Tokenizer,
    data: str,
    split: str,
    out_dir: str,
    *,
    seed: int = 0,
    num_images: int | None = None,
    val_data: str | None = None,
    workers: int = 0,
    bad: BadFiles | None = None,
    cache_dir: str | None = None,
    **kwargs: Any,
) -> TokenShards:
    """Encode split ``split`` of data spec ``data`` (evaluation crops at the
    tokenizer's image size) into token shards in ``out_dir``; ``kwargs`` go to
    :func:`encode_to_shards`."""
    d = kwargs.get("dist") or DistInfo()
    source = open_images(
        data, split, image_size=tokenizer.cfg.image_size, seed=seed, num_images=num_images,
        cache_dir=cache_dir, workers=workers, val_spec=val_data,
        bad=bad or BadFiles(quiet=not d.is_main),
    )  # fmt: skip
    record = encoding_record(
        tokenizer, data, split, seed=seed, num_images=num_images, val_data=val_data
    )
    return encode_to_shards(tokenizer, source, out_dir, record, **kwargs)


def cached_tokens(
    tokenizer: Tokenizer,
    data: str,
    split: str,
    cache_dir: str,
    *,
    seed: int = 0,
    num_images: int | None = None,
    write: bool = True,
    dist: DistInfo | None = None,
    **kwargs: Any,
) -> TokenData | TokenShards:
    """Tokens of split ``split`` of ``data``, encoded once into
    ``cache_dir/tokens/{split}/`` (re-encoded when the tokenizer or data changed).

    Built-in data (``embedded``, ``digits``, ``npz:``) comes back in memory
    (:class:`TokenData`), streamed data memory-mapped (:class:`TokenShards`).
    ``write=False`` encodes in memory without touching the cache unless it is
    valid (built-in data only). Call it on every rank (the ranks share the work).
    """
    out_dir = os.path.join(cache_dir, "tokens", split)
    record = encoding_record(
        tokenizer, data, split, seed=seed, num_images=num_images,
        val_data=kwargs.get("val_data"), part_size=kwargs.get("part_size", PART_SIZE),
    )  # fmt: skip
    if finished_manifest(out_dir, record) is not None:
        shards = TokenShards(out_dir)
    elif not write and not is_streamed(data):
        return encode_dataset(tokenizer, data, split, seed=seed, num_images=num_images)
    else:
        shards = encode_split(
            tokenizer, data, split, out_dir, seed=seed, num_images=num_images,
            cache_dir=cache_dir, dist=dist, overwrite=True, **kwargs,
        )  # fmt: skip
    if is_streamed(data):
        return shards
    return in_memory_tokens(shards)


def in_memory_tokens(shards: TokenShards) -> TokenData:
    """All of ``shards`` as a :class:`TokenData` (tokens keep their small dtype)."""
    parts = [np.load(os.path.join(shards.path, s["tokens"])) for s in shards.manifest["shards"]]
    tokens = torch.from_numpy(np.concatenate(parts)[: len(shards)])
    labels = None
    if shards.has_labels:
        labs = [np.load(os.path.join(shards.path, s["labels"])) for s in shards.manifest["shards"]]
        labels = torch.from_numpy(np.concatenate(labs)[: len(shards)].astype(np.int64))
    return TokenData(tokens, labels, shards.num_classes)


def open_token_dir(
    path: str, *, in_memory: bool = False
) -> tuple[TokenData | TokenShards, TokenData | TokenShards, dict[str, Any]]:
    """The ``train/`` and ``val/`` token shards of an ``fsqkit encode`` output
    folder (memory-mapped, or loaded with ``in_memory``) and the train manifest."""
    splits = []
    for split in ("train", "val"):
        sub = os.path.join(path, split)
        if not os.path.isdir(sub):
            raise FileNotFoundError(
                f"token shards: {sub!r} does not exist (fsqkit encode --data SPEC --out "
                f"{path} writes train/ and val/)"
            )
        shards = TokenShards(sub)
        splits.append(in_memory_tokens(shards) if in_memory else shards)
    train = TokenShards(os.path.join(path, "train"))
    return splits[0], splits[1], train.manifest
