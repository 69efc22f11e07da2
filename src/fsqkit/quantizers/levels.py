"""FSQ level sets: validation and the paper's recommended levels.

``levels_for(size)`` returns the levels of the paper's Table 1 / Appendix A.4.1
for the sizes listed there (with the appendix's ``[7,5,5,5]`` typo for 2^12
fixed to ``[7,5,5,5,5]``), and a documented rule for any other target size.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

# Paper, Table 1 and Appendix A.4.1 (target size -> levels).
PAPER_LEVELS: dict[int, list[int]] = {
    2**4: [5, 3],
    2**6: [8, 8],
    2**8: [8, 6, 5],
    2**9: [8, 8, 8],
    2**10: [8, 5, 5, 5],
    2**11: [8, 8, 6, 5],
    2**12: [7, 5, 5, 5, 5],  # the appendix's [7,5,5,5] is a typo (size 875)
    2**14: [8, 8, 8, 6, 5],
    2**16: [8, 8, 8, 5, 5, 5],
}

# Largest level: digits are computed in float32, exact for integers below 2**24.
MAX_LEVEL = 2**16

# Candidate per-dimension levels for the general rule (paper: use L_i >= 5).
_RULE_LEVELS = (8, 7, 6, 5)


def validate_levels(levels: Sequence[int], *, allow_two: bool = False) -> list[int]:
    """Check a level list and return it as a list of Python ints.

    Raises:
        TypeError: an entry is not an integer (floats such as ``5.0`` are rejected).
        ValueError: the list is empty, or an entry is below 2 (or equals 2 without
            ``allow_two``, which only the symmetric variant supports).
    """
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence):
        try:
            levels = list(levels)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(f"levels must be a sequence of integers, got {levels!r}") from None
    levels = list(levels)
    if len(levels) == 0:
        raise ValueError("levels must be a non-empty list of integers >= 2 (e.g. [8, 5, 5, 5])")
    out: list[int] = []
    for i, level in enumerate(levels):
        if isinstance(level, (bool, float, str, bytes)):
            raise TypeError(
                f"levels[{i}] must be an integer, got {level!r} ({type(level).__name__})"
            )
        try:
            level = operator.index(level)
        except TypeError:
            raise TypeError(
                f"levels[{i}] must be an integer, got {level!r} ({type(level).__name__})"
            ) from None
        if level > MAX_LEVEL:
            raise ValueError(
                f"levels[{i}] = {level}: levels above {MAX_LEVEL} are not supported "
                f"(digits must stay exact in float32)"
            )
        minimum = 2 if allow_two else 3
        if level < minimum:
            hint = (
                " (L = 2 needs the symmetric variant: FSQ(..., symmetric=True))"
                if level == 2
                else ""
            )
            raise ValueError(f"levels[{i}] = {level}: every level must be >= {minimum}{hint}")
        out.append(level)
    return out


def codebook_size_of(levels: Sequence[int]) -> int:
    """``prod(levels)`` as an exact Python int."""
    return math.prod(int(level) for level in levels)


def levels_for(size: int) -> list[int]:
    """Recommended FSQ levels for a target codebook size.

    For the sizes in the paper (2^4, 2^6, 2^8, 2^9, 2^10, 2^11, 2^12, 2^14, 2^16)
    this is the paper's table. For any other ``size`` the rule is: among level
    lists drawn from ``{8, 7, 6, 5}`` (so every ``L_i >= 5``, as the paper
    advises) with non-increasing entries, pick the one whose product is closest
    to ``size`` in log scale, preferring fewer dimensions, then the larger
    product. Targets below 5 cannot respect ``L_i >= 5``; they get a single
    dimension ``[size]`` (``size >= 3``).

    Raises:
        ValueError: ``size < 3`` or ``size > 2**40``.
    """
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"size must be an integer, got {size!r}")
    if size < 3:
        raise ValueError(f"codebook size must be >= 3, got {size}")
    if size > 2**40:
        raise ValueError(f"codebook size {size} is larger than the supported 2**40")
    if size in PAPER_LEVELS:
        return list(PAPER_LEVELS[size])
    if size < 5:
        return [size]
    target = math.log(size)
    best: tuple[float, int, float, list[int]] | None = None
    max_dims = max(1, math.ceil(math.log(size) / math.log(5)) + 1)

    def search(prefix: list[int], prod: int, start: int) -> None:
        nonlocal best
        if prefix:
            key = (round(abs(math.log(prod) - target), 9), len(prefix), -prod, list(prefix))
            if best is None or key < best:
                best = key
        if len(prefix) >= max_dims or prod > size * 8:
            return
        for j in range(start, len(_RULE_LEVELS)):
            level = _RULE_LEVELS[j]
            search([*prefix, level], prod * level, j)

    search([], 1, 0)
    assert best is not None
    return best[3]
