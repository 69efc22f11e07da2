"""Token datasets for stage II: a dataset encoded once through a tokenizer, cached.

The cache ``RUN/tokens-{split}.pt`` holds the token grids ``[N, h, w]`` (int16/32),
the labels ``[N]`` and a *key* describing what produced them (tokenizer config
and weights checksum, data spec, image size, seed). A cache whose key differs is
re-encoded, so a changed tokenizer or data set can never be silently reused.

Dimension legend: ``N`` images, ``h, w`` token grid, ``K`` codebook size.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fsqkit.data import build_dataset
from fsqkit.tokenizer import Tokenizer


@dataclass
class TokenData:
    """Token grids ``tokens [N, h, w]`` (int64) and ``labels [N]`` (or ``None``)."""

    tokens: Tensor
    labels: Tensor | None
    num_classes: int

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """SHA-256 (first 16 hex digits) of the tokenizer's config and weights."""
    h = hashlib.sha256(json.dumps(tokenizer.cfg.to_dict(), sort_keys=True).encode())
    for name, t in sorted(tokenizer.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


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
    """Encode split ``split`` of data spec ``data`` at the tokenizer's image size
    (``num_images``: crop count, ``embedded`` only)."""
    ds = build_dataset(
        data, split, image_size=tokenizer.cfg.image_size, seed=seed, num_images=num_images
    )
    device = next(tokenizer.parameters()).device
    was_training = tokenizer.training
    tokenizer.eval()
    chunks = []
    for start in range(0, len(ds), batch_size):
        chunks.append(tokenizer.encode(ds.batch(slice(start, start + batch_size)).to(device)).cpu())
    tokenizer.train(was_training)
    tokens = torch.cat(chunks).long()
    if tokens.dim() != 3:
        raise ValueError(
            f"MaskGIT needs one token per grid position, but this tokenizer's indices have "
            f"shape {list(tokens.shape[1:])} per image (several codebooks or residual stages)"
        )
    return TokenData(tokens, ds.labels, ds.num_classes)


def cached_tokens(
    tokenizer: Tokenizer,
    data: str,
    split: str,
    cache_dir: str,
    *,
    seed: int = 0,
    num_images: int | None = None,
    write: bool = True,
) -> TokenData:
    """:func:`encode_dataset`, cached in ``cache_dir/tokens-{split}.pt``.

    ``write=False`` (ranks > 0 under ``torchrun``) only reads a valid cache and
    encodes in memory otherwise.
    """
    key: dict[str, Any] = {
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "data": data,
        "split": split,
        "image_size": tokenizer.cfg.image_size,
        "seed": seed,
        "num_images": num_images,
    }
    path = os.path.join(cache_dir, f"tokens-{split}.pt")
    if os.path.isfile(path):
        cached = torch.load(path, weights_only=True)
        if cached.get("key") == json.dumps(key, sort_keys=True):
            return TokenData(
                cached["tokens"].long(), cached.get("labels"), int(cached["num_classes"])
            )
    out = encode_dataset(tokenizer, data, split, seed=seed, num_images=num_images)
    if write:
        os.makedirs(cache_dir, exist_ok=True)
        small = torch.int16 if tokenizer.codebook_size <= 2**15 else torch.int32
        payload = {
            "key": json.dumps(key, sort_keys=True),
            "tokens": out.tokens.to(small),
            "labels": out.labels,
            "num_classes": out.num_classes,
        }
        tmp = path + ".tmp"
        torch.save(payload, tmp)
        os.replace(tmp, path)  # atomic: a reader never sees a half-written cache
    return out
