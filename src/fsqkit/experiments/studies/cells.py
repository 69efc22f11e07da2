"""The cells of a study: one quantizer configuration at one codebook size.

A :class:`Cell` is everything that differs between two runs of a study grid: the
curve it belongs to (``row``, e.g. ``"fsq"`` or ``"vq_maskgit"``), the target
codebook size (the x axis, ``log2``), and the tokenizer's bottleneck (registered
quantizer name, its keyword arguments, the latent width). Everything else (the
encoder/decoder, data, steps, MaskGIT) comes from the study's
:class:`~fsqkit.experiments.studies.scale.StudyScale`.

Quantizer rows of the codebook-size study (:data:`QUANTIZER_ROWS`):

- ``fsq``: FSQ with the paper's recommended levels (:func:`fsqkit.levels_for`).
- ``vq``: plain VQ (EMA codebook, random init, no tricks).
- ``vq_maskgit``: VQ as in MaskGIT (codebook loss, commitment 0.25, entropy 0.1).
- ``vq_reseed``: VQ with k-means init and dead-code reseeding.
- ``vq_split``: VQ with k-means init and UViM's code splitting.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from fsqkit.quantizers import levels_for


@dataclass(frozen=True)
class Cell:
    """One run of a study grid.

    Attributes:
        row: the curve it belongs to (a quantizer row or a level family).
        target: target codebook size (the x axis is ``log2(target)``).
        label: human-readable name of the row (legend, table).
        quantizer: registered quantizer name (``"fsq"``, ``"vq"``).
        quantizer_kwargs: its keyword arguments (``levels`` or ``codebook_size``...).
        latent_channels: encoder output width; ``None`` for FSQ (``len(levels)``).
    """

    row: str
    target: int
    label: str
    quantizer: str
    quantizer_kwargs: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    latent_channels: int | None = None

    @property
    def name(self) -> str:
        """Folder name of the cell, e.g. ``fsq-1024``."""
        return f"{self.row}-{self.target}"

    @property
    def codes(self) -> int:
        """Exact codebook size (FSQ's level product may differ from ``target``)."""
        levels = self.quantizer_kwargs.get("levels")
        return math.prod(levels) if levels else int(self.quantizer_kwargs["codebook_size"])


QUANTIZER_ROWS: dict[str, str] = {
    "fsq": "FSQ (levels_for)",
    "vq": "VQ plain",
    "vq_maskgit": "VQ MaskGIT (commit+entropy)",
    "vq_reseed": "VQ + reseeding",
    "vq_split": "VQ + code splitting",
}

# Largest |log2(prod(levels)) - log2(target)| accepted for an FSQ cell.
MAX_LOG2_GAP = 0.5


def fsq_cell(target: int, levels: list[int], row: str = "fsq", label: str = "") -> Cell:
    """An FSQ cell with explicit ``levels``."""
    return Cell(row, target, label or f"FSQ {levels}", "fsq", {"levels": list(levels)})


def quantizer_cell(row: str, target: int, vq_dim: int, seed: int = 0) -> Cell:
    """The cell of quantizer row ``row`` (a key of :data:`QUANTIZER_ROWS`) at ``target`` codes.

    Raises:
        ValueError: unknown row, or a size the quantizer cannot have.
    """
    if row not in QUANTIZER_ROWS:
        raise ValueError(f"unknown quantizer {row!r}; expected one of {', '.join(QUANTIZER_ROWS)}")
    if isinstance(target, bool) or not isinstance(target, int) or target < 2:
        raise ValueError(f"codebook sizes must be integers >= 2, got {target!r}")
    label = QUANTIZER_ROWS[row]
    if row == "fsq":
        try:
            levels = levels_for(target)
        except ValueError as err:
            raise ValueError(f"FSQ cannot reach codebook size {target}: {err}") from None
        gap = abs(math.log2(math.prod(levels)) - math.log2(target))
        if gap > MAX_LOG2_GAP:
            raise ValueError(
                f"FSQ cannot reach codebook size {target}: the closest levels {levels} "
                f"give {math.prod(levels)} codes"
            )
        return fsq_cell(target, levels, row, label)
    kwargs: dict[str, Any] = {"codebook_size": target, "seed": seed}
    if row == "vq_maskgit":
        kwargs.update(
            learning="loss", commitment_weight=0.25, entropy_weight=0.1, entropy_temperature=0.01
        )
    elif row == "vq_reseed":
        kwargs.update(kmeans_init=True, reseed_dead=True)
    elif row == "vq_split":
        kwargs.update(kmeans_init=True, split_codes=True)
    return Cell(row, target, label, "vq", kwargs, latent_channels=vq_dim)


def parse_size(text: str) -> int:
    """``"1024"``, ``"2^10"`` or ``"2**10"`` -> ``1024``; a clear ``ValueError`` otherwise."""
    m = re.fullmatch(r"\s*(?:(\d+)|2\s*(?:\^|\*\*)\s*(\d+))\s*", str(text))
    if not m:
        raise ValueError(f"cannot read codebook size {text!r}; write e.g. 1024 or 2^10")
    return int(m.group(1)) if m.group(1) else 2 ** int(m.group(2))


def codebook_size_cells(
    quantizers: list[str], sizes: list[int], vq_dim: int, seed: int = 0
) -> list[Cell]:
    """The grid quantizers x sizes (row-major), validated before anything runs."""
    if not quantizers:
        raise ValueError("the quantizer list is empty")
    if not sizes:
        raise ValueError("the codebook size list is empty")
    if len(set(sizes)) != len(sizes) or len(set(quantizers)) != len(quantizers):
        raise ValueError(f"duplicate sizes or quantizers in {sizes} / {quantizers}")
    return [quantizer_cell(q, s, vq_dim, seed) for q in quantizers for s in sizes]


def levels_with_min(target: int, min_level: int) -> list[int]:
    """A level set whose smallest entry is ``min_level`` with a product close to
    ``target``: non-increasing entries from ``min_level … 2*min_level``, at least
    one equal to ``min_level``. Products within 10% of ``target`` count as equally
    close; then the most uniform set (smallest max/min) wins, then fewer dimensions.
    Where the paper's recommendation (:func:`fsqkit.levels_for`) has smallest level
    ``min_level`` it is used as is.

    >>> levels_with_min(1024, 5), levels_with_min(1024, 8)
    ([8, 5, 5, 5], [11, 11, 8])
    """
    if min_level < 3 or target < min_level:
        raise ValueError(
            f"need 3 <= smallest level <= codebook size (FSQ's bound is undefined for L=2), "
            f"got smallest level {min_level}, codebook size {target}"
        )
    if target >= 3 and min(levels_for(target)) == min_level:
        return levels_for(target)
    choices = list(range(2 * min_level, min_level - 1, -1))
    best: tuple[float, float, int, list[int]] | None = None
    max_dims = math.ceil(math.log(target) / math.log(min_level)) + 1

    def search(prefix: list[int], prod: int) -> None:
        nonlocal best
        if prefix and prefix[-1] == min_level:
            gap = abs(math.log(prod / target))
            key = (0.0 if gap < 0.1 else round(gap, 6), prefix[0] / min_level, len(prefix))
            if best is None or key < best[:3]:
                best = (*key, list(prefix))
        if len(prefix) >= max_dims or prod > target * 2 * min_level:
            return
        for level in choices:
            if not prefix or level <= prefix[-1]:
                search([*prefix, level], prod * level)

    search([], 1)
    assert best is not None
    return best[3]


def levels_cells(sizes: list[int], min_levels: list[int]) -> list[Cell]:
    """FSQ cells with smallest level ``m`` for each ``m`` in ``min_levels`` at each size."""
    if not sizes:
        raise ValueError("the codebook size list is empty")
    if not min_levels:
        raise ValueError("the min-level list is empty")
    cells = []
    for m in min_levels:
        for s in sizes:
            levels = levels_with_min(s, m)
            gap = abs(math.log2(math.prod(levels)) - math.log2(s))
            if gap > 1.0:
                raise ValueError(
                    f"no level set with smallest level {m} comes close to {s} codes "
                    f"(best {levels}, {math.prod(levels)} codes)"
                )
            cells.append(fsq_cell(s, levels, f"fsq_min{m}", f"FSQ min L={m}"))
    return cells
