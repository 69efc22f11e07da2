"""``folder:PATH`` streamed: images decoded on demand, in DataLoader workers.

:class:`FolderImages` holds a :class:`~fsqkit.data.file_list.FileList` (paths
only; memory does not grow with the decoded images) and decodes one item per
``dataset[(index, seed)]`` call: resize + crop (+ augmentation when ``seed`` is
given). A file that cannot be decoded is reported with the item and replaced by
the next file of the list (deterministically, so exact resume still holds);
nothing raises inside a worker.

Training draws batches through :meth:`FolderImages.loader`; evaluation passes
over the split in order with :meth:`FolderImages.iter_batches`;
:meth:`FolderImages.batch` decodes a few items in this process (image grids).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fsqkit.data.augment import EVAL, Augment, load_crop
from fsqkit.data.bad_files import BadFiles
from fsqkit.data.decode import BadImage
from fsqkit.data.file_list import FileList
from fsqkit.data.loader import Item, RawBatch, StepLoader, account, collate, sequential_batches

MAX_REPLACEMENTS = 64  # consecutive bad files tried before an item gives up


class FolderImages(torch.utils.data.Dataset):
    """A streamed image folder split (see the module docstring).

    Args:
        files: the split's files (and labels).
        image_size: side of the square crops.
        augment: the training augmentation (evaluation always uses the centre crop).
        name: e.g. ``"folder:/data/imagenet/train"``.
        bad: bad-file bookkeeping of this process (limit, messages).
        workers: default number of decoding processes.
    """

    access = "map"

    def __init__(
        self,
        files: FileList,
        image_size: int,
        augment: Augment = EVAL,
        name: str = "",
        bad: BadFiles | None = None,
        workers: int = 0,
    ) -> None:
        self.files = files
        self.size = image_size
        self.augment = augment
        self.name = name
        self.bad = bad or BadFiles()
        self.workers = workers
        self.bad.add_all(files.skipped)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def image_size(self) -> int:
        return self.size

    @property
    def num_classes(self) -> int:
        return self.files.num_classes

    @property
    def class_names(self) -> list[str] | None:
        return self.files.class_names

    @property
    def has_labels(self) -> bool:
        return self.files.labels is not None

    def __repr__(self) -> str:
        lab = f", {self.num_classes} classes" if self.has_labels else ""
        return f"FolderImages({self.name!r}, {len(self)} files{lab}, {self.size}x{self.size})"

    # ------------------------------------------------------------- items
    def __getitem__(self, key: tuple[int, int | None] | int) -> Item:
        """Decode item ``index`` (augmented with ``seed`` unless it is ``None``)."""
        index, seed = (key, None) if isinstance(key, (int, np.integer)) else key
        n = len(self.files)
        bad: list[tuple[str, str]] = []
        for k in range(min(MAX_REPLACEMENTS, n)):
            j = (int(index) + k) % n
            path = self.files.path(j)
            try:
                img, note = load_crop(path, self.size, self.augment, seed, name=path)
            except BadImage as err:
                bad.append((err.path, err.reason))
                continue
            except Exception as err:  # never a traceback from inside a worker
                bad.append((path, f"unexpected {type(err).__name__}: {err}"))
                continue
            return Item(img, self.files.label(j), j, bad, None if note is None else (path, note))
        # Every candidate failed: a blank image with index -1, which stops the
        # run in the main process (:func:`~fsqkit.data.loader.account`).
        return Item(torch.zeros(3, self.size, self.size, dtype=torch.uint8), -1, -1, bad, None)

    def raw_batch(self, index: Any) -> RawBatch:
        """Evaluation crops of ``index`` (a tensor, list or slice), decoded here."""
        if isinstance(index, slice):
            index = range(*index.indices(len(self)))
        elif isinstance(index, Tensor):
            index = index.tolist()
        return account(collate([self[(int(i), None)] for i in index]), self.bad)

    def batch(self, index: Any) -> Tensor:
        """``(B, 3, S, S)`` float evaluation crops of ``index``, decoded in this process."""
        return self.raw_batch(index).float_images()

    def batch_labels(self, index: Any) -> Tensor | None:
        if self.files.labels is None:
            return None
        if isinstance(index, Tensor):
            index = index.numpy()
        return torch.from_numpy(np.asarray(self.files.labels[index]))

    # ----------------------------------------------------------- passes
    def loader(self, sampler: Any, workers: int | None = None) -> StepLoader:
        """Training batches for any step (``sampler``: an epoch sampler of this split)."""
        w = self.workers if workers is None else workers
        return StepLoader(self, sampler, w, self.bad, augment=self.augment.random)

    def iter_raw(self, batch_size: int, workers: int | None = None) -> Iterator[RawBatch]:
        """The whole split in order (evaluation crops), ``batch_size`` items at a time."""
        w = self.workers if workers is None else workers
        return sequential_batches(self, range(len(self)), batch_size, w, self.bad)

    def iter_batches(self, batch_size: int) -> Iterator[Tensor]:
        """``(B, 3, S, S)`` float evaluation crops of the whole split, in order."""
        for raw in self.iter_raw(batch_size):
            yield raw.float_images()

    def num_parts(self, part_size: int) -> int:
        """Parts of ``part_size`` consecutive files (the last may be shorter)."""
        return -(-len(self) // part_size)

    def iter_part(
        self, k: int, part_size: int, batch_size: int, workers: int | None = None
    ) -> Iterator[tuple[Tensor, Tensor | None]]:
        """Evaluation crops ``(B, 3, S, S)`` float and labels ``(B,)`` (or ``None``)
        of part ``k``; unreadable files are left out."""
        w = self.workers if workers is None else workers
        stop = min(len(self), (k + 1) * part_size)
        for raw in sequential_batches(self, range(k * part_size, stop), batch_size, w, self.bad):
            yield raw.float_images(), raw.labels if self.has_labels else None

    def head(self, n: int) -> FolderImages:
        """The first ``n`` files of the split (all if there are fewer)."""
        if n >= len(self):
            return self
        files = self.files.subset(np.arange(n))
        files.skipped = []
        return FolderImages(
            files, self.size, self.augment, f"{self.name}[:{n}]", self.bad, self.workers
        )
