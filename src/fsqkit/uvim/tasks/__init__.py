"""Dense prediction tasks, one file each, in a registry.

- :mod:`~fsqkit.uvim.tasks.base`: :class:`DenseTask`, what every task defines.
- :mod:`~fsqkit.uvim.tasks.depth`, :mod:`~fsqkit.uvim.tasks.colorize`,
  :mod:`~fsqkit.uvim.tasks.panoptic`: the registered tasks.

A new task subclasses :class:`DenseTask` and calls :func:`register_task`
(see docs/extending.md).
"""

from __future__ import annotations

from typing import Any

from fsqkit.data.coco_panoptic import read_coco_categories
from fsqkit.data.dense import DenseBatch, coco_panoptic_paths
from fsqkit.uvim.tasks.base import DenseTask
from fsqkit.uvim.tasks.colorize import ColorizeTask, grayscale
from fsqkit.uvim.tasks.depth import DepthTask
from fsqkit.uvim.tasks.panoptic import PanopticTask, categories_to_options, scenes_panoptic_task

_TASKS: dict[str, DenseTask] = {}


def register_task(task: DenseTask) -> DenseTask:
    """Add ``task`` to the registry under ``task.name``."""
    if not task.name or task.name in _TASKS:
        raise ValueError(f"task name {task.name!r} is empty or already registered")
    _TASKS[task.name] = task
    return task


def available_tasks() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str, options: dict[str, Any] | None = None) -> DenseTask:
    """The registered task ``name`` (configured by ``options``, see
    :meth:`DenseTask.with_options`); ``ValueError`` naming the known ones otherwise."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(available_tasks())}")
    return _TASKS[name].with_options(options) if options else _TASKS[name]


def dense_task_options(spec: str) -> dict[str, Any]:
    """Task options a data source implies: for ``coco-panoptic:...`` its JSON's
    class table (``{"categories": ...}``, read from the JSON only); else ``{}``."""
    if spec.partition(":")[0] != "coco-panoptic":
        return {}
    path = coco_panoptic_paths(spec)[0]
    return {"categories": categories_to_options(read_coco_categories(path))}


register_task(DepthTask())
register_task(ColorizeTask())
register_task(scenes_panoptic_task())

__all__ = [
    "ColorizeTask",
    "DenseBatch",
    "DenseTask",
    "DepthTask",
    "PanopticTask",
    "available_tasks",
    "dense_task_options",
    "get_task",
    "grayscale",
    "register_task",
]
