"""The demo trains its two tokenizers side by side in worker processes: the
results must be exactly those of training them one after the other."""

from __future__ import annotations

import pytest
import torch

import fsqkit.experiments.demo as demo_mod
from fsqkit.experiments import parallel
from fsqkit.experiments.parallel import run_side_by_side
from tests.single_thread import one_thread  # noqa: F401


def _square(x: int) -> int:
    return x * x


def _fail(x: int) -> int:
    raise ValueError(f"job failed on {x}")


def test_jobs_run_and_return_by_name():
    assert run_side_by_side(_square, {"a": (3,), "b": (4,)}) == {"a": 9, "b": 16}


def test_a_failing_job_raises_its_own_error():
    with pytest.raises(ValueError, match="job failed on 2"):
        run_side_by_side(_fail, {"a": (2,)})
    with pytest.raises(ValueError, match="threads_each"):
        run_side_by_side(_square, {"a": (1,)}, threads_each=0)


def test_side_by_side_training_equals_one_after_the_other(tmp_path, monkeypatch):
    cfg = demo_mod.demo_config(
        "quick",
        steps=3,
        train_images=32,
        val_images=8,
        base_channels=8,
        batch_size=4,
        progress=False,
    )
    configs = demo_mod.tokenizer_configs(cfg)
    train_cfg = demo_mod.train_config(cfg)
    seq = demo_mod._train_tokenizers(
        demo_mod.replace(cfg, out=str(tmp_path / "seq"), side_by_side=False), configs, train_cfg
    )
    # Two threads in this process: two workers with one thread each (the same
    # thread count as the sequential runs, so the same arithmetic).
    monkeypatch.setattr(parallel, "available_cores", lambda: 2)
    torch.set_num_threads(2)
    par = demo_mod._train_tokenizers(
        demo_mod.replace(cfg, out=str(tmp_path / "par")), configs, train_cfg
    )
    torch.set_num_threads(1)
    assert set(par) == set(seq) == {"fsq", "vq"}
    for name in seq:
        assert par[name].out_dir == str(tmp_path / "par" / "runs" / name)
        assert par[name].metrics == seq[name].metrics
        a, b = seq[name].model.state_dict(), par[name].model.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_stage2_side_by_side_equals_one_after_the_other(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from fsqkit.data import build_dataset
    from fsqkit.experiments import stage2
    from fsqkit.experiments.report import Report
    from fsqkit.tokenizer import Tokenizer, TokenizerConfig

    common = {"image_size": 16, "base_channels": 8, "channel_mult": (1, 2, 2), "norm_groups": 4}
    runs = {}
    for name, q, kw in (("fsq", "fsq", {"levels": [5, 3]}), ("vq", "vq", {"codebook_size": 16})):
        torch.manual_seed(0)
        extra = {"latent_channels": 4} if q == "vq" else {}
        Tokenizer(TokenizerConfig(quantizer=q, quantizer_kwargs=kw, **common, **extra)).save(
            str(tmp_path / name)
        )
        runs[name] = str(tmp_path / name)
    val = build_dataset("embedded", "val", image_size=16, num_images=16)
    small = stage2.MaskGITBudget(
        steps=3, dim=16, depth=1, heads=2, batch_size=8, num_samples=16, decode_steps=4
    )

    def run(out: str, side_by_side: bool) -> dict:
        cfg = SimpleNamespace(
            out=str(tmp_path / out), seed=0, train_images=32, progress=False, steps=2,
            side_by_side=side_by_side,
        )  # fmt: skip
        return stage2.run_stage2(cfg, Report("t"), runs, val, small)

    seq = run("seq", False)
    monkeypatch.setattr(parallel, "available_cores", lambda: 2)
    torch.set_num_threads(2)
    par = run("par", True)
    torch.set_num_threads(1)
    timing = {"train_seconds", "eval_seconds"}
    for name in ("fsq", "vq"):
        assert {k: v for k, v in par[name].items() if k not in timing} == {
            k: v for k, v in seq[name].items() if k not in timing
        }, name


def test_uvim_demo_workers_give_the_same_table(tmp_path):
    from fsqkit.experiments.report import Report
    from fsqkit.experiments.uvim_demo import run_tasks, uvim_demo_config

    def rows(workers: int) -> list[dict]:
        cfg = uvim_demo_config(
            "quick", out=str(tmp_path / f"w{workers}"), tasks=("depth", "colorize"),
            quantizers=("fsq", "vq"), progress=False, workers=workers,
        )  # fmt: skip
        out = run_tasks(cfg, Report("t"))
        return [{k: v for k, v in r.items() if k != "train_s"} for r in out]

    one, two = rows(1), rows(2)
    assert [r["model"] for r in one] == [
        "trivial: per-pixel mean depth", "trivial: scalar mean depth", "direct (no tokens)",
        "UViM fsq", "UViM vq",
        "trivial: grayscale copy", "trivial: per-pixel mean colour", "direct (no tokens)",
        "UViM fsq", "UViM vq",
    ]  # fmt: skip
    assert one == two
    assert (tmp_path / "w2" / "predictions_colorize.png").is_file()
