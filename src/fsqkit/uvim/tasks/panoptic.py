"""UViM's panoptic segmentation task on the shared stage-I / stage-II machinery.

Dimension legend: ``B`` batch, ``H, W`` image size, ``C`` classes, ``K``
``max_instances``.

The pieces are those of :mod:`~fsqkit.uvim.tasks.panoptic_target` and
:mod:`~fsqkit.uvim.tasks.panoptic_logits`:

- target (task units): ``encode_panoptic`` of the batch's semantic and instance
  maps, ``(B, 2, H, W)`` int64 (class or void, canonical instance id);
- the oracle's input encoding: ``panoptic_onehot``, ``(B, C + K + 1, H, W)``;
- the networks output ``C + K + 1`` logit channels (class, then instance id);
  loss ``panoptic_loss`` (cross-entropy per channel, void ignored); prediction
  ``decode_panoptic_logits`` (per-instance class vote);
- metrics: per image the semantic pixel accuracy ``pixel_acc``; per set the
  panoptic quality ``pq`` with ``sq``, ``rq`` and each of the three over things
  (``pq_things``, ...) and stuff (``pq_stuff``, ...) of
  :class:`~fsqkit.metrics.panoptic.PanopticQuality`, as fractions in ``[0, 1]``.

The registered ``panoptic`` task uses the ``scenes`` classes (:func:`scene_categories`);
other class tables (e.g. a COCO-panoptic JSON's) come in as task options
(:meth:`PanopticTask.with_options`), saved in the model's config.
"""

from __future__ import annotations

import colorsys
from typing import Any

import torch
from torch import Tensor

from fsqkit.data.dense import DenseBatch
from fsqkit.data.panoptic import PanopticCategories
from fsqkit.metrics.panoptic import PanopticQuality, result_from_counts
from fsqkit.uvim.tasks.base import Baseline, DenseTask, TrainingMeans
from fsqkit.uvim.tasks.panoptic_logits import decode_panoptic_logits, panoptic_loss, panoptic_onehot
from fsqkit.uvim.tasks.panoptic_target import decode_panoptic, encode_panoptic

SCENES_STUFF = ("wall", "ground")


def scene_categories() -> PanopticCategories:
    """The ``scenes`` renderer's classes as panoptic categories: the wall
    (background) and the ground are stuff, the objects (sphere, box, cylinder)
    things; the renderer's ids are the class ids, it has no void."""
    from fsqkit.data.scenes import SEMANTIC_CLASSES

    return PanopticCategories(
        SEMANTIC_CLASSES, tuple(name not in SCENES_STUFF for name in SEMANTIC_CLASSES)
    )


def categories_to_options(categories: PanopticCategories) -> dict[str, Any]:
    """JSON-ready task options for ``categories`` (inverse of :func:`categories_from_options`)."""
    return {
        "names": list(categories.names),
        "is_thing": list(categories.is_thing),
        "source_ids": None if categories.source_ids is None else list(categories.source_ids),
    }


def categories_from_options(options: dict[str, Any]) -> PanopticCategories:
    """The :class:`PanopticCategories` of task options made by :func:`categories_to_options`."""
    ids = options.get("source_ids")
    return PanopticCategories(
        tuple(options["names"]), tuple(options["is_thing"]), source_ids=ids and tuple(ids)
    )


def class_colors(num_classes: int) -> Tensor:
    """``(C, 3)`` distinct colours in ``[0, 1]`` (hues spaced by the golden ratio)."""
    hues = [(0.61803398875 * k) % 1.0 for k in range(num_classes)]
    return torch.tensor([colorsys.hsv_to_rgb(h, 0.65, 0.95) for h in hues], dtype=torch.float32)


class PanopticTask(DenseTask):
    """Panoptic segmentation; see the module docstring.

    Args:
        categories: the class table (which classes are things, the void label).
        max_instances: ``K``, the most thing instances per image (more: the
            smallest become void, see ``encode_panoptic``).
        background: the stuff class one trivial baseline paints everywhere
            (default: the first stuff class).
    """

    name = "panoptic"
    primary_metric = "pq"
    lower_is_better = False
    needs = ("semantic", "instance")

    def __init__(
        self, categories: PanopticCategories, max_instances: int, background: int | None = None
    ) -> None:
        if not isinstance(max_instances, int) or max_instances < 1:
            raise ValueError(f"max_instances must be a positive integer, got {max_instances!r}")
        stuff = [k for k, t in enumerate(categories.is_thing) if not t]
        if background is None:
            background = stuff[0] if stuff else 0
        if not 0 <= background < categories.num_classes:
            raise ValueError(
                f"background class {background} is not in [0, {categories.num_classes})"
            )
        self.categories = categories
        self.max_instances = max_instances
        self.background = background
        self.target_channels = categories.num_classes + max_instances + 1

    def with_options(self, options: dict[str, Any]) -> PanopticTask:
        """This task with other ``categories`` (as :func:`categories_to_options`),
        ``max_instances`` and/or ``background``."""
        unknown = set(options) - {"categories", "max_instances", "background"}
        if unknown:
            raise ValueError(f"unknown panoptic task options: {sorted(unknown)}")
        cats = options.get("categories")
        return PanopticTask(
            self.categories if cats is None else categories_from_options(cats),
            int(options.get("max_instances", self.max_instances)),
            options.get("background", None if cats is not None else self.background),
        )

    def check_batch(self, batch: DenseBatch, source: str = "the data") -> None:
        super().check_batch(batch, source)
        assert batch.semantic is not None
        self.categories.check_semantic(batch.semantic, f"the semantic maps of {source}")

    def check_categories(self, categories: PanopticCategories | None, source: str) -> None:
        """Raise ``ValueError`` if data with their own class table ``categories``
        (COCO panoptic) do not match this task's."""
        if categories is not None and categories != self.categories:
            raise ValueError(
                f"{source} has the classes {list(categories.names)[:8]}... but the task has "
                f"{list(self.categories.names)[:8]}...; set the task options from the data "
                f"(fsqkit.uvim.tasks.dense_task_options; the CLI does it)"
            )

    def target(self, batch: DenseBatch) -> Tensor:
        assert batch.semantic is not None and batch.instance is not None
        return encode_panoptic(
            batch.semantic, batch.instance, self.categories, max_instances=self.max_instances
        )

    def valid(self, batch: DenseBatch) -> Tensor:
        assert batch.semantic is not None
        return (batch.semantic != self.categories.void_label)[:, None]

    def encode(self, target: Tensor, inputs: Tensor) -> Tensor:
        """``(B, 2, H, W)`` target -> one-hot ``(B, C + K + 1, H, W)`` in ``{0, 1}``."""
        return panoptic_onehot(target, self.categories, self.max_instances)

    def _split(self, net: Tensor) -> tuple[Tensor, Tensor]:
        c = self.categories.num_classes
        return net[:, :c], net[:, c:]

    def decode(self, net: Tensor, inputs: Tensor) -> Tensor:
        """Logits ``(B, C + K + 1, H, W)`` -> ``(B, 2, H, W)`` int64 (semantic, instance)."""
        return torch.stack(decode_panoptic_logits(*self._split(net.float()), self.categories), 1)

    def loss(self, net: Tensor, target: Tensor, valid: Tensor, inputs: Tensor) -> Tensor:
        """Cross-entropy of the class plus that of the instance channel (void ignored)."""
        return panoptic_loss(*self._split(net.float()), target, self.categories)[0]

    def metrics(self, pred: Tensor, target: Tensor, valid: Tensor) -> dict[str, Tensor]:
        # also skip the instances the target's cap turned into void
        v = (valid[:, 0] & (target[:, 0] != self.categories.void_label)).float()
        hit = (pred[:, 0] == target[:, 0]).float() * v
        return {"pixel_acc": hit.flatten(1).sum(1) / v.flatten(1).sum(1).clamp_min(1)}

    def set_statistics(self, pred: Tensor, target: Tensor) -> Tensor:
        """``(B, 4, C)`` per image and class: TP, FP, FN and the matched IoUs' sum."""
        metric = PanopticQuality(self.categories)
        return metric.image_counts(pred[:, 0], pred[:, 1], target[:, 0], target[:, 1])

    def set_metrics_from(self, stats: Tensor) -> dict[str, float]:
        """Panoptic quality of the set (fractions; ``nan`` where no class counts):
        ``pq``, ``sq``, ``rq`` over all classes and each over things and stuff."""
        r = result_from_counts(stats.sum(0), self.categories)
        out = {"pq": r.all.pq, "sq": r.all.sq, "rq": r.all.rq}
        for part, summary in (("things", r.things), ("stuff", r.stuff)):
            out.update({f"{k}_{part}": getattr(summary, k) for k in ("pq", "sq", "rq")})
        return out

    def baselines(self, means: TrainingMeans) -> dict[str, Baseline]:
        """Every pixel the ``background`` stuff class; and every pixel the class
        most frequent there in the training set (things included; each thing
        class's pixels then form one segment)."""
        majority = means.encoded_map[: self.categories.num_classes].argmax(0)  # (H, W)
        return {
            "all " + self.categories.names[self.background]: lambda inputs: self._paint(
                torch.full_like(majority, self.background), inputs
            ),
            "per-pixel majority class": lambda inputs: self._paint(majority, inputs),
        }

    def _paint(self, semantic: Tensor, inputs: Tensor) -> Tensor:
        """``(H, W)`` classes on every image of ``inputs``, as a canonical
        ``(B, 2, H, W)`` prediction."""
        sem = semantic.to(inputs.device)
        one = torch.stack(
            decode_panoptic(torch.stack([sem, torch.zeros_like(sem)]), self.categories)
        )
        return one[None].expand(inputs.shape[0], -1, -1, -1).clone()

    def to_rgb(self, target: Tensor) -> Tensor:
        """A colour per class, darker for later instances of a thing; void black."""
        sem, inst = target[:, 0].long(), target[:, 1].long()
        valid = sem != self.categories.void_label
        rgb = class_colors(self.categories.num_classes).to(target.device)[sem.clamp_min(0)]
        shade = 1.0 - 0.6 * ((inst - 1).clamp_min(0) % 4).float() / 4.0  # 1, .85, .7, .55
        rgb = rgb * (shade * valid)[..., None]
        return rgb.permute(0, 3, 1, 2).contiguous()


def scenes_panoptic_task() -> PanopticTask:
    """The registered ``panoptic`` task: ``scenes`` classes, up to ``MAX_OBJECTS``
    things, one trivial baseline = all ground."""
    from fsqkit.data.scenes import MAX_OBJECTS, SEMANTIC_CLASSES

    return PanopticTask(scene_categories(), MAX_OBJECTS, SEMANTIC_CLASSES.index("ground"))
