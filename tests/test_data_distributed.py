"""Streamed data under ``torchrun --nproc_per_node=2`` (gloo, CPU): each rank
decodes only its own slice of every global batch, and a tokenizer trains on a
streamed folder with a decoding worker per rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fsqkit.data import open_images
from fsqkit.training import EpochSampler
from tests.image_folders import make_image_folder

SCRIPT = r"""
import json, sys
from fsqkit.data import open_images
from fsqkit.data.augment import Augment
from fsqkit.training import batch_source, distributed_session

root, out = sys.argv[1], sys.argv[2]
with distributed_session("cpu") as info:
    ds = open_images(f"folder:{root}", "train", image_size=8, augment=Augment("crop"))
    # raw.indices: the files this rank's worker decoded for the step.
    source = batch_source(ds, 6, 11, info, workers=1)
    steps = {}
    for step in range(1, 6):
        raw = source.raw(step)
        steps[step] = raw.indices.tolist()
    source.close()
    with open(f"{out}/rank{info.rank}.json", "w") as f:
        json.dump({"steps": steps, "world": info.world_size}, f)
"""


def _torchrun(tmp_path, args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


@pytest.mark.distributed
def test_ranks_read_disjoint_slices_of_each_global_batch(tmp_path) -> None:
    root = str(tmp_path / "imgs")
    make_image_folder(root, per_class=10, bad=False)
    script = tmp_path / "read.py"
    script.write_text(SCRIPT)
    proc = _torchrun(tmp_path, [str(script), root, str(tmp_path)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    n = len(open_images(f"folder:{root}", "train", image_size=8))
    sampler = EpochSampler(n, 6, 11, 0, 2)
    for step in range(1, 6):
        a, b = (r["steps"][str(step)] for r in ranks)
        assert len(a) == len(b) == 6 and not set(a) & set(b)  # disjoint halves
        assert a + b == sampler.global_indices(step).tolist()  # of the same global batch


@pytest.mark.distributed
def test_tokenizer_trains_on_a_streamed_folder_under_torchrun(tmp_path) -> None:
    root, out = str(tmp_path / "imgs"), tmp_path / "run"
    make_image_folder(root, per_class=10)
    proc = _torchrun(tmp_path, [
        "-m", "fsqkit.cli", "train-tokenizer", "--data", f"folder:{root}", "--image-size", "8",
        "--base-channels", "8", "--channel-mult", "1,2", "--batch-size", "4", "--steps", "3",
        "--workers", "1", "--out", str(out), "--device", "cpu", "--no-progress",
    ])  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "DDP replicas identical after training: True" in proc.stdout
    # Rank 0 alone reports the bad files, once each.
    assert proc.stderr.count("zero.jpg: zero-byte file") == 1
    assert os.path.isdir(out / "data-cache")
