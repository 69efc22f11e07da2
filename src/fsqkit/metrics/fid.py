"""FID from streamed features: running Gaussian statistics that never hold a
whole evaluation set, merged across ``torchrun`` ranks, and image sources for
``fsqkit fid`` (folders and ``.npz`` files, as pytorch-fid takes them).

:class:`FeatureStats` accumulates ``N``, ``Σx`` and ``Σxxᵀ`` in float64 batch by
batch; :meth:`FeatureStats.all_reduce` sums them over ranks, so every rank can
feed its own share of the images and all get the same statistics.
:func:`fid_from_stats` is the Fréchet distance of the two fitted Gaussians
(an FID when the features are Inception's, see :mod:`fsqkit.metrics.inception`).

Dimension legend: ``N`` images, ``F`` feature width.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fsqkit.metrics.features import FeatureExtractor
from fsqkit.metrics.frechet import frechet_distance
from fsqkit.training.distributed import DistInfo

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class FeatureStats:
    """Running mean and covariance of features ``[n, F]`` (float64)."""

    def __init__(self) -> None:
        self.n = 0
        self.sum: Tensor | None = None
        self.outer: Tensor | None = None

    def update(self, features: Tensor) -> None:
        f = features.detach().to("cpu", torch.float64)
        if f.ndim != 2:
            raise ValueError(f"features must be [N, F], got {list(f.shape)}")
        if not torch.isfinite(f).all():
            raise ValueError("features contain NaN or inf")
        if self.sum is None:
            self.sum = torch.zeros(f.shape[1], dtype=torch.float64)
            self.outer = torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64)
        self.n += f.shape[0]
        self.sum += f.sum(0)
        self.outer += f.T @ f  # type: ignore[operator]

    def all_reduce(self, info: DistInfo) -> None:
        """Sum the statistics of every rank (a collective: call it on all ranks)."""
        if not info.distributed:
            return
        import torch.distributed as dist

        if self.sum is None or self.outer is None:
            raise ValueError("no features on this rank to merge")
        packed = torch.cat(
            [torch.tensor([float(self.n)], dtype=torch.float64), self.sum, self.outer.flatten()]
        )
        packed = packed.to(info.device)
        dist.all_reduce(packed)
        packed = packed.cpu()
        f = self.sum.numel()
        self.n = round(packed[0].item())
        self.sum = packed[1 : 1 + f].clone()
        self.outer = packed[1 + f :].reshape(f, f).clone()

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean ``[F]`` and unbiased covariance ``[F, F]``."""
        if self.n < 2 or self.sum is None or self.outer is None:
            raise ValueError(f"need at least 2 images for a covariance, got {self.n}")
        mu = self.sum / self.n
        cov = (self.outer - self.n * torch.outer(mu, mu)) / (self.n - 1)
        return mu.numpy(), cov.numpy()


def fid_from_stats(a: FeatureStats | tuple, b: FeatureStats | tuple) -> float:
    """Fréchet distance between two :class:`FeatureStats` (or ``(mu, sigma)`` pairs)."""
    mu1, s1 = a.mean_cov() if isinstance(a, FeatureStats) else a
    mu2, s2 = b.mean_cov() if isinstance(b, FeatureStats) else b
    return frechet_distance(np.asarray(mu1), np.asarray(s1), np.asarray(mu2), np.asarray(s2))


def shard(n: int, info: DistInfo) -> range:
    """The indices ``0 … n-1`` this rank handles (every ``world_size``-th)."""
    return range(info.rank, n, info.world_size)


# ------------------------------------------------------------- image sources
def _image_files(folder: Path) -> list[Path]:
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise ValueError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def _read_image(path: Path) -> Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0  # [3, H, W]


def _npz_images(arr: np.ndarray, where: str) -> Tensor:
    """``(N, H, W, C)`` / ``(N, C, H, W)`` uint8 or [0, 1] float -> ``[N, 3, H, W]`` float."""
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise ValueError(f"{where}: images must have 4 dimensions, got shape {arr.shape}")
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.shape[-1] in (1, 3) and t.shape[1] not in (1, 3):
        t = t.permute(0, 3, 1, 2)
    t = t.float() / 255.0 if arr.dtype == np.uint8 else t.float()
    return t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t


def image_batches(path: str | os.PathLike[str], batch_size: int = 64) -> Iterator[Tensor]:
    """Batches ``[b, 3, H, W]`` in ``[0, 1]`` of a folder (recursively) or an
    ``.npz`` holding images (key ``images`` or ``arr_0``). Images of one batch
    share a size (a folder of mixed sizes gives one batch per size group)."""
    p = Path(path)
    if p.is_dir():
        pending: dict[tuple[int, ...], list[Tensor]] = {}
        for f in _image_files(p):
            img = _read_image(f)
            group = pending.setdefault(tuple(img.shape), [])
            group.append(img)
            if len(group) == batch_size:
                yield torch.stack(group)
                group.clear()
        for group in pending.values():
            if group:
                yield torch.stack(group)
        return
    with np.load(p) as z:
        key = next((k for k in ("images", "arr_0") if k in z.files), None)
        if key is None:
            raise ValueError(f"{p} has neither images ('images' / 'arr_0') nor 'mu' and 'sigma'")
        images = _npz_images(z[key], str(p))
    yield from images.split(batch_size)


def source_stats(
    path: str | os.PathLike[str], extractor: FeatureExtractor, batch_size: int = 64
) -> FeatureStats | tuple[np.ndarray, np.ndarray]:
    """Statistics of a folder or ``.npz`` of images, or the ``(mu, sigma)`` an
    ``.npz`` already holds (pytorch-fid's ``--save-stats`` format)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist (expected an image folder or an .npz file)")
    if p.is_file():
        if p.suffix != ".npz":
            raise ValueError(f"{p} is neither a folder nor an .npz file")
        try:
            with np.load(p) as z:
                if "mu" in z.files and "sigma" in z.files:
                    return np.asarray(z["mu"], np.float64), np.asarray(z["sigma"], np.float64)
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read {p}: {err}") from None
    stats = FeatureStats()
    for batch in image_batches(p, batch_size):
        stats.update(extractor(batch))
    return stats


def save_stats(stats: FeatureStats | tuple, path: str | os.PathLike[str]) -> None:
    """Write ``mu`` and ``sigma`` to an ``.npz`` (pytorch-fid's stats format)."""
    mu, sigma = stats.mean_cov() if isinstance(stats, FeatureStats) else stats
    np.savez(path, mu=mu, sigma=sigma)


def gather_rows(t: Tensor, info: DistInfo) -> Tensor:
    """Concatenate every rank's ``[n_r, F]`` rows (rank order) on every rank."""
    if not info.distributed:
        return t
    import torch.distributed as dist

    n = torch.tensor([t.shape[0]], device=info.device)
    counts = [torch.zeros_like(n) for _ in range(info.world_size)]
    dist.all_gather(counts, n)
    most = int(max(c.item() for c in counts))
    padded = torch.zeros(most, *t.shape[1:], dtype=t.dtype, device=info.device)
    padded[: t.shape[0]] = t.to(info.device)
    parts = [torch.empty_like(padded) for _ in range(info.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(c.item())].cpu() for p, c in zip(parts, counts)])


@torch.no_grad()
def reconstruction_fid(
    data,
    reconstruct,
    extractor: FeatureExtractor,
    info: DistInfo | None = None,
    batch_size: int = 64,
    pr_images: int = 10_000,
) -> dict[str, float]:
    """FID of a codec's reconstructions against its inputs over all of ``data``
    (each rank encodes its share; statistics are summed over ranks), and the
    k-NN precision/recall of the reconstructions on the first ``pr_images``.

    Args:
        data: ``len`` and ``.batch(index)`` giving ``[b, 3, H, W]`` in ``[0, 1]``.
        reconstruct: ``images -> reconstructions`` (both in ``[0, 1]``).

    Returns:
        ``{"rfid" (Inception features) or "recon_fd" (others), "recon_precision",
        "recon_recall"}``.
    """
    from fsqkit.metrics.inception import is_inception
    from fsqkit.metrics.precision_recall import precision_recall

    info = info or DistInfo()
    mine = torch.tensor(list(shard(len(data), info)), dtype=torch.long)
    real, fake = FeatureStats(), FeatureStats()
    keep_real, keep_fake = [], []
    for idx in mine.split(batch_size):
        x = data.batch(idx).to(info.device)
        fr, ff = extractor(x), extractor(reconstruct(x))
        real.update(fr)
        fake.update(ff)
        first = idx < pr_images
        keep_real.append(fr[first.cpu()])
        keep_fake.append(ff[first.cpu()])
    real.all_reduce(info)
    fake.all_reduce(info)
    key = "rfid" if is_inception(extractor) else "recon_fd"
    fr_all = gather_rows(torch.cat(keep_real), info)
    ff_all = gather_rows(torch.cat(keep_fake), info)
    precision, recall = precision_recall(fr_all, ff_all)
    return {key: fid_from_stats(real, fake), "recon_precision": precision, "recon_recall": recall}
