"""``wds:PATTERN``: WebDataset tar shards, streamed.

A shard is a tar file whose members are grouped into samples by their base
name (``000123.jpg`` + ``000123.cls``), as the ``webdataset`` library writes
them; the pattern is brace-expanded (``train-{000000..001023}.tar``). A sample's
image is its first ``jpg``/``jpeg``/``png``/``webp``/... member, its label the
integer in ``cls`` (no ``cls``: no label). Splits: ``wds:`` alone holds out its
last shard for validation (``--val-data`` names another set, then every shard
trains).

Training (:meth:`ShardImages.loader`): rank ``r`` of ``R``, with ``W``
DataLoader workers, reads only its own shards: in epoch ``e`` the shard list is
shuffled with ``(seed, e)``, rank ``r`` takes every ``R``-th shard from ``r``
and its worker stream ``w`` every ``W``-th of those; a stream reads its shards
in order, samples in tar order, and yields whole batches; the DataLoader takes
batch ``i`` of a rank from stream ``i % W``.

**What resume guarantees.** The batch of step ``s`` (items and augmentation) is
a pure function of ``(seed, s)`` *for the same shards, world size, batch size
and number of workers*: a resumed run skips, per stream, the samples it had
used (whole shards by their cached sample counts, without reading them; the
current shard by reading past its first samples without decoding them) and
ends bit-identical to an uninterrupted run. Resuming with another ``--workers``
or world size continues from a different, still seeded stream.

Bad samples (no image, undecodable image, a truncated tar) are reported with
the batch and skipped; a missing shard stops the run before it starts.
"""

from __future__ import annotations

import itertools
import os
import tarfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from fsqkit.data.augment import EVAL, Augment, load_crop
from fsqkit.data.bad_files import BadFiles
from fsqkit.data.decode import BadImage
from fsqkit.data.loader import RawBatch, StepBatches, account, item_seed

MAX_BAD_IN_A_ROW = 256  # bad samples before one batch fills: the stream stops the run
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm", "tif", "tiff", "gif")


def _webdataset():
    try:
        import webdataset
    except ImportError as err:  # a ValueError: the CLI prints one line
        raise ValueError(
            "wds: data needs the 'webdataset' package (pip install webdataset)"
        ) from err
    return webdataset


def expand_shards(pattern: str) -> list[str]:
    """The shard paths of a brace pattern; a missing shard raises ``FileNotFoundError``."""
    from webdataset.shardlists import expand_urls

    _webdataset()
    paths = [p.removeprefix("file:") for p in expand_urls(pattern)]
    if not paths:
        raise ValueError(f"wds data: pattern {pattern!r} names no shards")
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"wds data: {len(missing)} of {len(paths)} shards are missing, the first: {missing[0]}"
        )
    return paths


def iter_samples(path: str) -> Iterator[dict[str, Any]]:
    """The samples of one tar shard in order (``__key__`` + one entry per member
    extension). A damaged tar raises ``tarfile.TarError`` / ``OSError``."""
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    _webdataset()
    with open(path, "rb") as f:
        files = ({**m, "__url__": path} for m in tar_file_iterator(f))
        yield from group_by_keys(files)


def count_samples(path: str) -> int:
    """Samples in a shard, from its tar headers only (no member data is read)."""
    keys = 0
    last = None
    with tarfile.open(path, "r:") as tar:
        for m in tar:
            if not m.isreg() or os.path.basename(m.name).startswith("__"):
                continue
            base = m.name.split("/")[-1].split(".", 1)[0]
            key = (os.path.dirname(m.name), base)
            if key != last:
                keys += 1
                last = key
    return keys


def _label(sample: dict[str, Any]) -> int:
    raw = sample.get("cls", sample.get("cls.txt"))
    if raw is None:
        return -1
    try:
        return int(raw.decode().strip() if isinstance(raw, bytes) else raw)
    except ValueError:
        return -1


def decode_sample(
    sample: dict[str, Any], size: int, aug: Augment, seed: int | None
) -> tuple[Tensor, int, tuple[str, str] | None]:
    """``(image (3, S, S) uint8, label, note)`` of a sample; raises ``BadImage``."""
    name = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
    key = next((k for k in IMAGE_KEYS if k in sample), None)
    if key is None:
        raise BadImage(
            name, f"no image entry (has {sorted(k for k in sample if not k.startswith('__'))})"
        )
    img, note = load_crop(sample[key], size, aug, seed, name=f"{name}.{key}")
    return img, _label(sample), None if note is None else (f"{name}.{key}", note)


class _Batcher:
    """Collects decoded samples into :class:`RawBatch` es of ``batch_size``."""

    def __init__(self, batch_size: int) -> None:
        self.b = batch_size
        self._reset()

    def _reset(self) -> None:
        self.images: list[Tensor] = []
        self.labels: list[int] = []
        self.ordinals: list[int] = []
        self.bad: list[tuple[str, str]] = []
        self.notes: list[tuple[str, str]] = []

    def add(self, img: Tensor, label: int, ordinal: int, note: tuple[str, str] | None) -> bool:
        self.images.append(img)
        self.labels.append(label)
        self.ordinals.append(ordinal)
        if note is not None:
            self.notes.append(note)
        return len(self.images) >= self.b

    def take(self) -> RawBatch:
        out = RawBatch(
            torch.stack(self.images),
            torch.tensor(self.labels, dtype=torch.int64),
            torch.tensor(self.ordinals, dtype=torch.int64),
            self.bad,
            self.notes,
        )
        self._reset()
        return out


def _decode_into(batcher: _Batcher, sample: dict[str, Any], size: int, aug: Augment,
                 seed: int | None, ordinal: int) -> bool:  # fmt: skip
    """Decode ``sample`` into ``batcher`` (a bad one is recorded); True when full."""
    try:
        img, label, note = decode_sample(sample, size, aug, seed)
    except BadImage as err:
        batcher.bad.append((err.path, err.reason))
        return False
    except Exception as err:  # never a traceback from inside a worker
        batcher.bad.append((str(sample.get("__url__")), f"unexpected {type(err).__name__}: {err}"))
        return False
    return batcher.add(img, label, ordinal, note)


def _safe_samples(path: str, batcher: _Batcher) -> Iterator[dict[str, Any]]:
    """:func:`iter_samples`, a damaged shard recorded as bad (and ended) instead of raised."""
    try:
        yield from iter_samples(path)
    except Exception as err:
        batcher.bad.append((path, f"cannot read tar shard ({type(err).__name__}: {err})"))


class _TrainStream(IterableDataset):
    """The endless training streams of one rank (see the module docstring)."""

    def __init__(self, owner: ShardImages, sampler: Any, start: int, workers: int) -> None:
        self.owner, self.start, self.streams = owner, start, max(1, workers)
        self.b, self.seed = sampler.batch_size, sampler.seed
        self.rank, self.world = sampler.rank, sampler.world_size

    def _epoch_shards(self, epoch: int, stream: int) -> list[str]:
        shards = self.owner.shards
        order = np.random.default_rng([self.seed, epoch, 0x5A4D]).permutation(len(shards))
        return [shards[i] for i in order][self.rank :: self.world][stream :: self.streams]

    def __iter__(self) -> Iterator[RawBatch]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        # The DataLoader starts every pass with worker 0; the batch of step
        # `start` belongs to stream (start - 1) % W.
        stream = (worker + self.start - 1) % self.streams
        used = max(0, (self.start - 1 - stream + self.streams - 1) // self.streams)
        skip = used * self.b
        ordinal = skip
        batcher = _Batcher(self.b)
        size, aug = self.owner.size, self.owner.augment
        for epoch in itertools.count():
            seen = 0
            for shard in self._epoch_shards(epoch, stream):
                if skip:
                    n = self.owner.sample_count(shard)
                    seen += n
                    if skip >= n:
                        skip -= n
                        continue
                for sample in _safe_samples(shard, batcher):
                    seen += 1
                    if skip:
                        skip -= 1
                        continue
                    seed = item_seed(self.seed, ordinal, (self.rank << 20) + stream)
                    if _decode_into(batcher, sample, size, aug, seed, ordinal):
                        yield batcher.take()
                    ordinal += 1
                    if len(batcher.bad) > MAX_BAD_IN_A_ROW:
                        yield _stop(batcher, size)
                        return
            if not seen:  # an epoch without a single sample: the shards are empty
                batcher.bad.append((self.owner.name, "no samples in this process's shards"))
                yield _stop(batcher, size)
                return


def _stop(batcher: _Batcher, size: int) -> RawBatch:
    """A batch that stops the run in the main process (index -1, see ``account``)."""
    return RawBatch(
        torch.zeros(1, 3, size, size, dtype=torch.uint8),
        torch.full((1,), -1, dtype=torch.int64),
        torch.full((1,), -1, dtype=torch.int64),
        batcher.bad,
        batcher.notes,
    )


class _PassStream(IterableDataset):
    """One in-order pass over ``shards`` (evaluation crops), sample ``i`` decoded
    by worker ``i % W``; each worker yields batches of its samples."""

    def __init__(self, owner: ShardImages, shards: list[str], batch_size: int, limit: int | None):
        self.owner, self.shards, self.b, self.limit = owner, shards, batch_size, limit

    def __iter__(self) -> Iterator[RawBatch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        batcher = _Batcher(self.b)
        ordinal = 0
        for shard in self.shards:
            if self.limit is not None and ordinal >= self.limit:
                break
            for sample in _safe_samples(shard, batcher):
                if self.limit is not None and ordinal >= self.limit:
                    break
                mine = ordinal % workers == worker
                ordinal += 1
                if mine and _decode_into(batcher, sample, self.owner.size, EVAL, None, ordinal - 1):
                    yield batcher.take()
        if batcher.images or batcher.bad:
            yield (
                batcher.take()
                if batcher.images
                else RawBatch(
                    torch.empty(0, 3, self.owner.size, self.owner.size, dtype=torch.uint8),
                    torch.empty(0, dtype=torch.int64),
                    torch.empty(0, dtype=torch.int64),
                    batcher.bad,
                    batcher.notes,
                )
            )


def _identity(x: Any) -> Any:
    return x


def _stream_loader(stream: IterableDataset, workers: int) -> DataLoader:
    kwargs: dict[str, Any] = {"prefetch_factor": 2} if workers > 0 else {}
    return DataLoader(
        stream, batch_size=None, num_workers=workers, collate_fn=_identity,
        generator=torch.Generator(), **kwargs,
    )  # fmt: skip


class ShardLoader(StepBatches):
    """Training batches of a tar-shard stream for any step (restarts at a step
    other than the next one by skipping what the streams had used)."""

    def __init__(self, owner: ShardImages, sampler: Any, workers: int) -> None:
        super().__init__(owner.bad)
        self.owner, self.sampler = owner, sampler
        per_rank = len(owner.shards) // sampler.world_size
        if per_rank < 1:
            raise ValueError(
                f"wds data: {len(owner.shards)} shard(s) cannot feed {sampler.world_size} "
                f"processes (each rank reads its own shards); write more, smaller shards"
            )
        self.workers = min(workers, per_rank)

    def _start(self, step: int) -> Iterator[RawBatch]:
        stream = _TrainStream(self.owner, self.sampler, step, self.workers)
        return iter(_stream_loader(stream, self.workers))


class ShardImages:
    """A split of a WebDataset tar-shard set (see the module docstring).

    Args:
        shards: the split's shard paths.
        image_size: side of the square crops.
        augment: the training augmentation.
        name: e.g. ``"wds:/data/train-{0..9}.tar/train"``.
        bad: bad-sample bookkeeping.
        workers: default number of decoding processes.
        limit: passes (evaluation, :meth:`batch`) stop after this many samples.
    """

    access = "stream"

    def __init__(
        self,
        shards: list[str],
        image_size: int,
        augment: Augment = EVAL,
        name: str = "",
        bad: BadFiles | None = None,
        workers: int = 0,
        limit: int | None = None,
    ) -> None:
        self.shards, self.size, self.augment, self.name = shards, image_size, augment, name
        self.bad = bad or BadFiles()
        self.workers, self.limit = workers, limit
        self._counts: dict[str, int] = {}

    @classmethod
    def open(
        cls,
        pattern: str,
        split: str,
        *,
        image_size: int,
        augment: Augment = EVAL,
        bad: BadFiles | None = None,
        workers: int = 0,
        num_images: int | None = None,
    ) -> ShardImages:
        """The ``split`` of ``pattern``: ``"all"`` shards, or ``"train"`` (all but
        the last) / ``"val"`` (the last)."""
        shards = expand_shards(pattern)
        if split in ("train", "val") and len(shards) < 2:
            raise ValueError(
                f"wds data: {pattern!r} has one shard; hold-out validation needs two or more "
                f"(or name a validation set with --val-data)"
            )
        part = {"train": shards[:-1], "val": shards[-1:], "all": shards}[split]
        return cls(part, image_size, augment, f"wds:{pattern}/{split}", bad, workers, num_images)

    def __repr__(self) -> str:
        return f"ShardImages({self.name!r}, {len(self.shards)} shards, {self.size}x{self.size})"

    @property
    def image_size(self) -> int:
        return self.size

    num_classes = 0  # unknown before a pass (token shards count them)
    class_names = None

    def sample_count(self, shard: str) -> int:
        if shard not in self._counts:
            self._counts[shard] = count_samples(shard)
        return self._counts[shard]

    def head(self, n: int) -> ShardImages:
        return ShardImages(self.shards, self.size, self.augment, f"{self.name}[:{n}]", self.bad,
                           self.workers, n if self.limit is None else min(n, self.limit))  # fmt: skip

    # ----------------------------------------------------------- passes
    def loader(self, sampler: Any, workers: int | None = None) -> ShardLoader:
        """Training batches for any step (``sampler``: batch size, seed, rank, world size)."""
        return ShardLoader(self, sampler, self.workers if workers is None else workers)

    def _pass(self, shards: list[str], batch_size: int, workers: int | None) -> Iterator[RawBatch]:
        w = self.workers if workers is None else workers
        for raw in _stream_loader(_PassStream(self, shards, batch_size, self.limit), w):
            account(raw, self.bad)
            if len(raw.images):
                yield raw

    def iter_raw(self, batch_size: int, workers: int | None = None) -> Iterator[RawBatch]:
        """Every sample of the split (evaluation crops), about ``batch_size`` at a time."""
        return self._pass(self.shards, batch_size, workers)

    def iter_batches(self, batch_size: int) -> Iterator[Tensor]:
        for raw in self.iter_raw(batch_size):
            yield raw.float_images()

    def batch(self, index: slice) -> Tensor:
        """The first samples (``index = slice(0, n)``), decoded in this process."""
        if (
            not isinstance(index, slice)
            or index.start not in (None, 0)
            or index.step not in (None, 1)
        ):
            raise TypeError("a tar-shard stream only gives its first samples: batch(slice(0, n))")
        n = index.stop
        out = list(self.head(n)._pass(self.shards, n, 0))
        return torch.cat([r.images for r in out]).float().div_(255.0)

    def num_parts(self, part_size: int) -> int:
        """One part per tar shard."""
        return len(self.shards)

    def iter_part(self, k: int, part_size: int, batch_size: int, workers: int | None = None
                  ) -> Iterator[tuple[Tensor, Tensor | None]]:  # fmt: skip
        """Evaluation crops and labels (``None`` when the shard has no ``cls``) of shard ``k``."""
        for raw in self._pass([self.shards[k]], batch_size, workers):
            yield raw.float_images(), None if bool((raw.labels < 0).any()) else raw.labels
