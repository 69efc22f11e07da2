"""Every data source and dataset type of fsqkit (no task semantics).

Images for the tokenizer and stage-II models: ``build_dataset(spec, split,
image_size=..., seed=...)`` with ``spec`` one of:

- ``"embedded"``: crops of the photographs bundled with scikit-image (train) and
  scikit-learn (val); no download.
- ``"digits"``: scikit-learn's handwritten digits (labels 0-9), upscaled.
- ``"folder:PATH"``: a folder of images; class sub-folders become labels.
- ``"npz:PATH"``: arrays (key ``images``, optional ``labels`` / ``val_images``).

Every source returns an :class:`ImageDataset` (uint8 ``(N, 3, H, W)`` + labels).

Data larger than memory: :func:`open_images` keeps the built-ins in memory and
streams ``folder:PATH`` (:class:`~fsqkit.data.streamed.FolderImages`: a cached
file list, decoding and augmentation in DataLoader workers, bad files skipped
and counted) and ``wds:PATTERN`` (WebDataset tar shards,
:class:`~fsqkit.data.shards.ShardImages`). Stage II's encoded tokens are stored
as ``.npy`` token shards (:mod:`fsqkit.data.token_shards`). docs/data.md.

Images with per-pixel targets (depth, semantic and instance maps) for dense
prediction: :func:`fsqkit.data.dense.build_dense_dataset` (``scenes``, the
procedural renderer of :mod:`fsqkit.data.scenes`; ``embedded``; NYU Depth v2;
image + depth pairs; COCO panoptic) returns a :class:`DenseDataset` whose
batches are :class:`DenseBatch` es.
"""

from __future__ import annotations

from fsqkit.data.dataset import ImageDataset
from fsqkit.data.dense import DENSE_DATA_SPECS, DenseBatch, DenseDataset, build_dense_dataset
from fsqkit.data.digits import digits_dataset
from fsqkit.data.embedded import embedded_dataset
from fsqkit.data.files import folder_dataset, npz_dataset
from fsqkit.data.options import ReadOptions, StreamOptions, default_workers
from fsqkit.data.sources import (
    DATA_SPECS,
    build_dataset,
    is_streamed,
    iter_image_batches,
    open_images,
)

__all__ = [
    "DATA_SPECS",
    "DENSE_DATA_SPECS",
    "DenseBatch",
    "DenseDataset",
    "ImageDataset",
    "ReadOptions",
    "StreamOptions",
    "build_dataset",
    "build_dense_dataset",
    "default_workers",
    "digits_dataset",
    "embedded_dataset",
    "folder_dataset",
    "is_streamed",
    "iter_image_batches",
    "npz_dataset",
    "open_images",
]
