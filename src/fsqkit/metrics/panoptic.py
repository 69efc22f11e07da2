"""Panoptic quality (PQ, Kirillov et al. 2019), following the COCO panoptic
evaluation (``panopticapi/evaluation.py``).

Per image, a ground-truth and a predicted segment of the same class match when
their IoU is above 0.5 (at most one match each is then guaranteed). Per class,
over the whole data set::

    PQ = sum IoU(TP) / (TP + FP/2 + FN/2) = SQ x RQ
    SQ = sum IoU(TP) / TP            RQ = TP / (TP + FP/2 + FN/2)

Void pixels (the void label in the ground truth: unlabelled, crowd) are
ignored: the pixels of a predicted segment that fall on void are removed from
the IoU's union, and an unmatched predicted segment with more than half of its
area on void is not a false positive. Void pixels in the prediction belong to
no segment. Crowd regions, when given apart (``gt_crowd``), are handled as in
COCO: never matched, and a prediction's pixels on a crowd region of its own
class count with its void pixels in the false-positive test (not in the
union). The ``all`` / ``things`` / ``stuff`` scores are plain means of the
per-class PQ, SQ and RQ over the classes with at least one TP, FP or FN.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from fsqkit.data.panoptic import PanopticCategories, check_label_pair, segment_ids

MATCH_IOU = 0.5
"""A prediction and a ground-truth segment match when their IoU is above this."""


@dataclass(frozen=True)
class ClassPQ:
    """Panoptic quality of one class (``nan`` scores when it had no TP, FP or FN)."""

    name: str
    is_thing: bool
    pq: float
    sq: float
    rq: float
    tp: int
    fp: int
    fn: int


@dataclass(frozen=True)
class PQSummary:
    """Mean PQ, SQ, RQ over ``n`` classes (``nan`` when ``n == 0``)."""

    pq: float
    sq: float
    rq: float
    n: int


@dataclass(frozen=True)
class PanopticResult:
    """PQ averaged over all classes, things and stuff, and per class."""

    all: PQSummary
    things: PQSummary
    stuff: PQSummary
    per_class: tuple[ClassPQ, ...]

    def as_dict(self) -> dict:
        """Plain dict (JSON-ready apart from ``nan``)."""
        return asdict(self)

    def summary(self) -> str:
        """One line in percent, as COCO reports it, e.g.
        ``PQ 43.2 SQ 80.1 RQ 52.3 | things PQ 50.0 (80) | stuff PQ 32.9 (53)``."""
        a, t, s = self.all, self.things, self.stuff
        return (
            f"PQ {100 * a.pq:.1f} SQ {100 * a.sq:.1f} RQ {100 * a.rq:.1f} | "
            f"things PQ {100 * t.pq:.1f} ({t.n}) | stuff PQ {100 * s.pq:.1f} ({s.n})"
        )


def _mean(classes: list[ClassPQ]) -> PQSummary:
    counted = [c for c in classes if c.tp + c.fp + c.fn > 0]
    if not counted:
        return PQSummary(math.nan, math.nan, math.nan, 0)
    n = len(counted)
    return PQSummary(
        sum(c.pq for c in counted) / n,
        sum(c.sq for c in counted) / n,
        sum(c.rq for c in counted) / n,
        n,
    )


class PanopticQuality:
    """Accumulates TP / FP / FN and the matched IoUs per class over a data set.

    Example::

        metric = PanopticQuality(categories)
        for batch in loader:
            metric.update(pred_sem, pred_inst, gt_sem, gt_inst)  # [B, H, W] each
        result = metric.compute()  # result.all.pq, result.things.pq, ...
    """

    def __init__(self, categories: PanopticCategories) -> None:
        if not isinstance(categories, PanopticCategories):
            raise TypeError(
                f"categories must be a PanopticCategories, got {type(categories).__name__}"
            )
        self.categories = categories
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        c = self.categories.num_classes
        self.tp = torch.zeros(c, dtype=torch.int64)
        self.fp = torch.zeros(c, dtype=torch.int64)
        self.fn = torch.zeros(c, dtype=torch.int64)
        self.iou_sum = torch.zeros(c, dtype=torch.float64)

    def update(
        self,
        pred_sem: Tensor,
        pred_inst: Tensor,
        gt_sem: Tensor,
        gt_inst: Tensor,
        gt_crowd: Tensor | None = None,
    ) -> None:
        """Add images: integer maps of one shape, ``[H, W]`` or ``[B, H, W]``.

        Semantic maps hold classes ``0..C-1`` or the void label; instance ids are
        any integers (only equality within a thing class matters). ``gt_crowd``
        (optional) holds the class of each crowd-region pixel and the void label
        elsewhere; crowd pixels must be void in ``gt_sem``. Without it, crowd
        regions are plain void.
        """
        for image in self._images(pred_sem, pred_inst, gt_sem, gt_inst, gt_crowd):
            self._add(self._image_counts(*image))

    def image_counts(
        self,
        pred_sem: Tensor,
        pred_inst: Tensor,
        gt_sem: Tensor,
        gt_inst: Tensor,
        gt_crowd: Tensor | None = None,
    ) -> Tensor:
        """The counts of each image of a batch apart (maps as for :meth:`update`),
        ``[B, 4, C]`` float64: rows TP, FP, FN and the matched IoUs' sum per class.
        Nothing is accumulated. A set's result is :func:`result_from_counts` of
        their sum over its images, so a set may be resampled (a bootstrap)."""
        images = self._images(pred_sem, pred_inst, gt_sem, gt_inst, gt_crowd)
        out = [torch.stack([t.double() for t in self._image_counts(*image)]) for image in images]
        c = self.categories.num_classes
        return torch.stack(out) if out else torch.zeros(0, 4, c, dtype=torch.float64)

    def _images(
        self,
        pred_sem: Tensor,
        pred_inst: Tensor,
        gt_sem: Tensor,
        gt_inst: Tensor,
        gt_crowd: Tensor | None,
    ) -> list[tuple[Tensor, ...]]:
        """Check the maps; per image ``(pred_sem, pred_inst, gt_sem, gt_inst, crowd)``
        on the CPU."""
        check_label_pair(pred_sem, pred_inst, "prediction")
        check_label_pair(gt_sem, gt_inst, "ground truth")
        if pred_sem.shape != gt_sem.shape:
            raise ValueError(
                f"prediction and ground truth differ in shape: {tuple(pred_sem.shape)} vs "
                f"{tuple(gt_sem.shape)}"
            )
        self.categories.check_semantic(pred_sem, "prediction semantic map")
        self.categories.check_semantic(gt_sem, "ground-truth semantic map")
        void = self.categories.void_label
        if gt_crowd is None:
            gt_crowd = torch.full_like(gt_sem, void)
        if not isinstance(gt_crowd, Tensor) or gt_crowd.shape != gt_sem.shape:
            shape = tuple(gt_crowd.shape) if isinstance(gt_crowd, Tensor) else type(gt_crowd)
            raise ValueError(
                f"ground-truth crowd map must have the shape of gt_sem {tuple(gt_sem.shape)}, "
                f"got {shape}"
            )
        self.categories.check_semantic(gt_crowd, "ground-truth crowd map")
        if bool(((gt_crowd != void) & (gt_sem != void)).any()):
            raise ValueError("ground-truth crowd map marks pixels that are not void in gt_sem")
        maps = [t.cpu() for t in (pred_sem, pred_inst, gt_sem, gt_inst, gt_crowd)]
        if pred_sem.ndim == 2:
            maps = [t[None] for t in maps]
        return list(zip(*maps))

    def _image_counts(
        self, pred_sem: Tensor, pred_inst: Tensor, gt_sem: Tensor, gt_inst: Tensor, crowd: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Match the segments of one image (``[H, W]`` maps); its TP, FP, FN and
        IoU sum per class."""
        c = self.categories.num_classes
        g, g_cls = segment_ids(gt_sem, gt_inst, self.categories)
        p, p_cls = segment_ids(pred_sem, pred_inst, self.categories)
        g, p = g.flatten(), p.flatten()
        n_g, n_p = len(g_cls), len(p_cls)
        g_area = torch.bincount(g[g >= 0], minlength=n_g)
        p_area = torch.bincount(p[p >= 0], minlength=n_p)
        both = (g >= 0) & (p >= 0)
        inter = torch.bincount(g[both] * n_p + p[both], minlength=n_g * n_p).view(n_g, n_p)
        crowd = crowd.flatten()
        no_crowd = crowd == self.categories.void_label
        on_void = torch.bincount(p[(g < 0) & no_crowd & (p >= 0)], minlength=n_p)
        # a prediction's pixels on a crowd region of its class: only for the FP test
        on_any_crowd = ~no_crowd & (p >= 0)
        p_on_crowd = p[on_any_crowd]
        own = crowd[on_any_crowd] == p_cls[p_on_crowd]
        on_crowd = torch.bincount(p_on_crowd[own], minlength=n_p)
        union = g_area[:, None] + p_area[None, :] - inter - on_void[None, :]
        iou = inter.double() / union.clamp(min=1).double()
        match = (iou > MATCH_IOU) & (g_cls[:, None] == p_cls[None, :])
        g_hit, p_hit = match.any(1), match.any(0)
        # an unmatched prediction mostly on void (or its class's crowd) is no FP
        p_false = ~p_hit & ((on_void + on_crowd).double() <= 0.5 * p_area.double())
        return (
            torch.bincount(g_cls[g_hit], minlength=c),
            torch.bincount(p_cls[p_false], minlength=c),
            torch.bincount(g_cls[~g_hit], minlength=c),
            torch.bincount(g_cls, weights=(iou * match).sum(1), minlength=c),
        )

    def _add(self, counts: tuple[Tensor, Tensor, Tensor, Tensor]) -> None:
        tp, fp, fn, iou_sum = counts
        self.tp += tp
        self.fp += fp
        self.fn += fn
        self.iou_sum += iou_sum

    def counts(self) -> Tensor:
        """What has been accumulated, ``[4, C]`` float64: TP, FP, FN, IoU sum per class."""
        return torch.stack([self.tp.double(), self.fp.double(), self.fn.double(), self.iou_sum])

    def merge(self, other: PanopticQuality) -> None:
        """Add the counts of another accumulator over the same categories (e.g.
        one per data shard or process)."""
        if not isinstance(other, PanopticQuality) or other.categories != self.categories:
            raise ValueError("can only merge a PanopticQuality over the same categories")
        self._add((other.tp, other.fp, other.fn, other.iou_sum))

    def compute(self) -> PanopticResult:
        """PQ / SQ / RQ per class and their means over all classes, things, stuff."""
        return result_from_counts(self.counts(), self.categories)


def result_from_counts(counts: Tensor, categories: PanopticCategories) -> PanopticResult:
    """PQ / SQ / RQ per class and their means over all classes, things and stuff,
    from counts ``[4, C]`` (TP, FP, FN, IoU sum per class; e.g. the sum of
    :meth:`PanopticQuality.image_counts` over a set of images)."""
    c = categories.num_classes
    if not isinstance(counts, Tensor) or counts.shape != (4, c):
        shape = tuple(counts.shape) if isinstance(counts, Tensor) else type(counts).__name__
        raise ValueError(f"panoptic counts must have shape [4, {c}], got {shape}")
    classes = []
    for k, (name, thing) in enumerate(zip(categories.names, categories.is_thing)):
        tp, fp, fn = (round(float(counts[i, k])) for i in range(3))
        iou = float(counts[3, k])
        if tp + fp + fn == 0:
            pq = sq = rq = math.nan
        else:
            denom = tp + 0.5 * fp + 0.5 * fn
            pq, rq = iou / denom, tp / denom
            sq = iou / tp if tp else 0.0
        classes.append(ClassPQ(name, thing, pq, sq, rq, tp, fp, fn))
    return PanopticResult(
        all=_mean(classes),
        things=_mean([c for c in classes if c.is_thing]),
        stuff=_mean([c for c in classes if not c.is_thing]),
        per_class=tuple(classes),
    )


def panoptic_quality(
    pred_sem: Tensor,
    pred_inst: Tensor,
    gt_sem: Tensor,
    gt_inst: Tensor,
    categories: PanopticCategories,
    gt_crowd: Tensor | None = None,
) -> PanopticResult:
    """PQ of one batch ``[B, H, W]`` (or one image ``[H, W]``) of maps."""
    metric = PanopticQuality(categories)
    metric.update(pred_sem, pred_inst, gt_sem, gt_inst, gt_crowd)
    return metric.compute()
