"""The default codebook-size grid (``fsqkit study codebook-size``, scale small)
and the paper's claims (a) usage and (b) reconstruction on its numbers.

Slow (about 35-60 minutes on a 2-core CPU). ``FSQKIT_STUDY_DIR`` names a study
folder to continue (finished cells are skipped, so pointing it at a finished
default run checks that run's numbers in seconds); otherwise a temporary folder.
"""

from __future__ import annotations

import os

import pytest

from fsqkit.studies import QUANTIZER_ROWS, codebook_size


def _series(table, label: str, column: str) -> dict[int, float]:
    return {r["log2 K"]: r[column] for r in table.rows if r["quantizer"] == label}


@pytest.mark.slow
def test_default_grid_reproduces_usage_and_reconstruction_claims(tmp_path):
    out = os.environ.get("FSQKIT_STUDY_DIR") or str(tmp_path / "study")
    table = codebook_size(out, progress=False)
    assert all(r["status"] == "done" for r in table.rows), [r["status"] for r in table.rows]
    fsq = QUANTIZER_ROWS["fsq"]
    vq_rows = [label for key, label in QUANTIZER_ROWS.items() if key != "fsq"]

    # (a) usage: FSQ uses a large share of its codes at every size; at 2^11 and
    # above it uses more of them than every VQ variant, and plain VQ (no tricks)
    # uses less than half of its codebook there.
    fsq_usage = _series(table, fsq, "usage")
    assert min(fsq_usage.values()) > 0.5, fsq_usage
    for label in vq_rows:
        vq_usage = _series(table, label, "usage")
        for k in (11, 12):
            assert fsq_usage[k] > vq_usage[k], (label, k, fsq_usage, vq_usage)
    plain = _series(table, QUANTIZER_ROWS["vq"], "usage")
    assert plain[11] < 0.5 and plain[12] < 0.5, plain

    # (b) reconstruction: FSQ keeps improving with the codebook (PSNR rises from
    # 2^4 to 2^12, and its best is at one of the two largest sizes), while every
    # VQ variant stalls: its gain from 2^8 to 2^12 is smaller than FSQ's.
    fsq_psnr = _series(table, fsq, "PSNR dB")
    assert fsq_psnr[12] > fsq_psnr[8] > fsq_psnr[4], fsq_psnr
    assert max(fsq_psnr, key=fsq_psnr.get) >= 11, fsq_psnr
    for label in vq_rows:
        vq_psnr = _series(table, label, "PSNR dB")
        assert vq_psnr[12] - vq_psnr[8] < fsq_psnr[12] - fsq_psnr[8], (label, vq_psnr, fsq_psnr)
