"""DataLoader plumbing of the streamed sources: the batch of any training step,
decoded in worker processes, and sequential passes for evaluation.

A map-style source (:class:`~fsqkit.data.streamed.FolderImages`) is indexed by
*keys* ``(index, seed)``: the item and the seed of its augmentation (``None``:
the evaluation crop). :class:`StepLoader` asks a sampler (anything with
``indices(step)``, ``batch_size``, ``seed``, ``rank``) for the indices of each
step and derives every item's seed from ``(seed, step, position in the global
batch)``: the batch of step ``s`` is a pure function of ``(seed, s)``, however
many workers decode it and wherever the run resumed. Workers run ahead by
``prefetch`` batches each; asking for a step other than the next one restarts
them at that step.

Items come back as :data:`Item` tuples; their bad files and conversion notes
are handed to a :class:`~fsqkit.data.bad_files.BadFiles` in the main process.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from fsqkit.data.bad_files import BadFiles, TooManyBadFiles


class Item(NamedTuple):
    """One decoded item: ``image (3, S, S)`` uint8, ``label`` (-1: none), the
    ``index`` of the file actually used (a bad file is replaced by the next),
    ``bad`` ``(path, reason)`` pairs met on the way, ``note`` ``(path, text)`` or ``None``."""

    image: Tensor
    label: int
    index: int
    bad: list[tuple[str, str]]
    note: tuple[str, str] | None


@dataclass
class RawBatch:
    """Collated items: ``images (B, 3, S, S)`` uint8, ``labels (B,)`` int64 (-1:
    none), ``indices (B,)`` of the files used, their bad files and notes."""

    images: Tensor
    labels: Tensor
    indices: Tensor
    bad: list[tuple[str, str]]
    notes: list[tuple[str, str]]

    def float_images(self) -> Tensor:
        """``(B, 3, S, S)`` float in ``[0, 1]``."""
        return self.images.float().div_(255.0)


def collate(items: Sequence[Item]) -> RawBatch:
    return RawBatch(
        torch.stack([it.image for it in items]),
        torch.tensor([it.label for it in items], dtype=torch.int64),
        torch.tensor([it.index for it in items], dtype=torch.int64),
        [b for it in items for b in it.bad],
        [it.note for it in items if it.note is not None],
    )


def item_seed(seed: int, step: int, slot: int) -> int:
    """The augmentation seed of position ``slot`` of the global batch of ``step``."""
    return ((seed * 1_000_003 + step) * 1_048_573 + slot) % 2**63


def account(raw: RawBatch, bad: BadFiles) -> RawBatch:
    """Hand a batch's bad files and notes to ``bad`` (may raise ``TooManyBadFiles``)."""
    bad.add_all(raw.bad)
    for path, text in raw.notes:
        bad.note(path, text)
    if bool((raw.indices < 0).any()):
        first = raw.bad[0][0] if raw.bad else "?"
        raise TooManyBadFiles(
            f"stopping: {len(raw.bad)} consecutive image files from {first} on are all "
            f"unreadable (see the warnings above)"
        )
    return raw


class _StepKeys:
    """The keys of steps ``start, start + 1, ...`` (an endless batch sampler)."""

    def __init__(self, sampler: Any, start: int, augment: bool) -> None:
        self.sampler, self.start, self.augment = sampler, start, augment

    def __iter__(self) -> Iterator[list[tuple[int, int | None]]]:
        s = self.sampler
        base = s.rank * s.batch_size
        step = self.start
        while True:
            idx = s.indices(step).tolist()
            if self.augment:
                yield [(i, item_seed(s.seed, step, base + j)) for j, i in enumerate(idx)]
            else:
                yield [(i, None) for i in idx]
            step += 1


def _dataloader(dataset: Any, batches: Any, workers: int, prefetch: int) -> DataLoader:
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs["prefetch_factor"] = prefetch
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=collate,
        # Its own generator: creating an iterator must not draw from the global
        # RNG, whose stream the trainer checkpoints.
        generator=torch.Generator(),
        **kwargs,
    )


class StepBatches:
    """The batch of any step from worker processes started at a step: the next
    step is read from the running workers, any other step restarts them there.
    Subclasses say how to start (:meth:`_start`)."""

    def __init__(self, bad: BadFiles) -> None:
        self.bad = bad
        self._it: Iterator[RawBatch] | None = None
        self._next = -1
        self.last: RawBatch | None = None

    def _start(self, step: int) -> Iterator[RawBatch]:
        raise NotImplementedError

    def raw(self, step: int) -> RawBatch:
        """The collated batch of ``step`` (labels and file indices included)."""
        if self._it is None or step != self._next:
            self.close()
            self._it = self._start(step)
        try:
            raw = next(self._it)
        except (RuntimeError, ConnectionError, EOFError) as err:
            # A worker killed from outside (out of memory, a signal): our workers
            # never raise, so this is the DataLoader losing one.
            if isinstance(err, RuntimeError) and "DataLoader worker" not in str(err):
                raise
            self.close()
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ValueError(
                f"a data loading worker died at step {step} ({first}); out of memory? "
                f"try fewer --workers"
            ) from None
        self._next = step + 1
        self.last = account(raw, self.bad)
        return raw

    def batch(self, step: int) -> Tensor:
        """``(B, 3, S, S)`` float images in ``[0, 1]`` of ``step``."""
        return self.raw(step).float_images()

    def close(self) -> None:
        """Stop the worker processes (a later :meth:`batch` starts them again)."""
        it, self._it = self._it, None
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


class StepLoader(StepBatches):
    """Training batches of a map-style source for any step (see the module docstring).

    Args:
        dataset: a map-style source indexed by ``(index, seed)`` keys.
        sampler: ``indices(step)`` of this rank, and ``batch_size``, ``seed``, ``rank``.
        workers: decoding processes (0: decode in this process).
        bad: bad-file bookkeeping (its limit stops the run).
        augment: seed each item's augmentation (``False``: evaluation crops).
        prefetch: batches each worker decodes ahead.
    """

    def __init__(
        self,
        dataset: Any,
        sampler: Any,
        workers: int,
        bad: BadFiles,
        *,
        augment: bool = True,
        prefetch: int = 2,
    ) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        super().__init__(bad)
        self.dataset, self.sampler, self.workers = dataset, sampler, workers
        self.augment, self.prefetch = augment, prefetch

    def _start(self, step: int) -> Iterator[RawBatch]:
        keys = _StepKeys(self.sampler, step, self.augment)
        return iter(_dataloader(self.dataset, keys, self.workers, self.prefetch))


def sequential_batches(
    dataset: Any,
    indices: Sequence[int],
    batch_size: int,
    workers: int,
    bad: BadFiles,
    prefetch: int = 2,
) -> Iterator[RawBatch]:
    """Evaluation crops of ``indices`` in order, ``batch_size`` at a time; bad
    files are left out (a batch may be shorter), not replaced."""
    keys = [(i, None) for i in indices]
    batches = [keys[s : s + batch_size] for s in range(0, len(keys), batch_size)]
    if not batches:
        return
    loader = _dataloader(dataset, batches, min(workers, len(batches)), prefetch)
    for keys_b, raw in zip(batches, loader):
        account(raw, bad)
        keep = raw.indices == torch.tensor([k[0] for k in keys_b], dtype=torch.int64)
        if not bool(keep.all()):
            raw = RawBatch(
                raw.images[keep], raw.labels[keep], raw.indices[keep], raw.bad, raw.notes
            )
        if len(raw.indices):
            yield raw
