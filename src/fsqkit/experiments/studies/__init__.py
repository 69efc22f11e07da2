"""Studies: grids of runs that test the paper's claims, each written to one
folder with a table (Markdown + JSON) and a figure.

- :func:`codebook_size`: FSQ vs VQ (plain, MaskGIT, reseeding, code splitting)
  at codebook sizes ``2^4 …`` (the paper's Fig. 3).
- :func:`levels`: FSQ level sets with smallest level 3, 4, 5, 8.
- :func:`run_usage_study`: codebook usage on clustered synthetic data (seconds).

See docs/studies.md.
"""

from fsqkit.experiments.studies.api import codebook_size, levels
from fsqkit.experiments.studies.cells import QUANTIZER_ROWS, Cell
from fsqkit.experiments.studies.scale import SCALES, StudyScale, get_scale
from fsqkit.experiments.studies.usage import run_usage_study

__all__ = [
    "QUANTIZER_ROWS",
    "SCALES",
    "Cell",
    "StudyScale",
    "codebook_size",
    "get_scale",
    "levels",
    "run_usage_study",
]
