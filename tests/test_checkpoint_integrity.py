"""Checksummed checkpoints: corrupt or half-written ones are detected, resume
falls back to the newest intact one, loading names the damaged file, and a
failed write leaves the previous checkpoint intact."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from fsqkit.cli import main
from fsqkit.maskgit.config import MaskGITConfig
from fsqkit.maskgit.model import MaskGITTransformer
from fsqkit.maskgit.train import load_maskgit
from fsqkit.tokenizer import Tokenizer, TokenizerConfig
from fsqkit.training import checkpoint as ckpt_mod
from fsqkit.training import load_checkpoint, save_checkpoint
from fsqkit.training.checkpoint_dirs import find_intact, prune
from fsqkit.training.errors import CheckpointCorrupt, CheckpointWriteError
from tests.single_thread import one_thread  # noqa: F401
from tests.tiny_run import assert_same_weights, train_args

TINY_MODEL = dict(image_size=16, base_channels=8, channel_mult=(1, 2), norm_groups=4)


def garble(path: str) -> None:
    """Overwrite a file with as many garbage bytes (what the issue's user did)."""
    size = os.path.getsize(path)
    with open(path, "wb") as f:
        f.write(b"\xff" * size)


def three_checkpoints(root) -> nn.Linear:
    m = nn.Linear(3, 2)
    for step in (1, 2, 3):
        with torch.no_grad():
            m.weight.fill_(step)
        save_checkpoint(str(root), step, {"net": m}, {}, keep=3)
    return m


def test_manifest_lists_every_file_with_its_checksum(tmp_path):
    path = save_checkpoint(str(tmp_path), 1, {"net": nn.Linear(2, 2)}, {"a": 1})
    with open(os.path.join(path, "manifest.json")) as f:
        files = json.load(f)["files"]
    assert sorted(files) == ["config.json", "state.pt", "weights.safetensors"]
    assert all(len(e["sha256"]) == 64 for e in files.values())


@pytest.mark.parametrize("damage", ["garble_weights", "truncate_state", "no_manifest"])
def test_damaged_checkpoint_is_named_on_load(tmp_path, damage):
    path = save_checkpoint(str(tmp_path), 1, {"net": nn.Linear(2, 2)}, {})
    if damage == "garble_weights":
        garble(os.path.join(path, "weights.safetensors"))
        named = "weights.safetensors does not match its SHA-256"
    elif damage == "truncate_state":
        with open(os.path.join(path, "state.pt"), "r+b") as f:
            f.truncate(10)
        named = "state.pt has 10 bytes"
    else:
        os.unlink(os.path.join(path, "manifest.json"))
        named = "manifest.json is missing (the checkpoint was not written completely)"
    with pytest.raises(CheckpointCorrupt, match="corrupt checkpoint") as err:
        load_checkpoint(str(tmp_path))
    assert named in str(err.value) and "\n" not in str(err.value)


def test_load_error_points_at_the_newest_intact_checkpoint(tmp_path):
    three_checkpoints(tmp_path)
    garble(str(tmp_path / "checkpoints" / "step-000003" / "weights.safetensors"))
    with pytest.raises(CheckpointCorrupt, match=r"step-000003/weights\.safetensors") as err:
        load_checkpoint(str(tmp_path))
    assert str(err.value).endswith(
        "the newest intact one is " + str(tmp_path / "checkpoints" / "step-000002")
    )


def test_legacy_checkpoint_without_manifest_loads_and_garbage_is_still_named(tmp_path):
    m = nn.Linear(2, 2)
    path = save_checkpoint(str(tmp_path), 1, {"net": m}, {})
    os.unlink(os.path.join(path, "manifest.json"))
    cfg = os.path.join(path, "config.json")
    with open(cfg) as f:
        meta = json.load(f)
    with open(cfg, "w") as f:
        json.dump({**meta, "format": "fsqkit-checkpoint-v1"}, f)
    assert torch.equal(load_checkpoint(str(tmp_path)).weights["net"]["weight"], m.weight)
    garble(os.path.join(path, "weights.safetensors"))
    with pytest.raises(CheckpointCorrupt, match=r"weights\.safetensors cannot be read"):
        load_checkpoint(str(tmp_path))


def test_tokenizer_and_maskgit_loading_name_the_corrupt_file(tmp_path, capsys):
    tok_dir = str(tmp_path / "tok")
    Tokenizer(TokenizerConfig(**TINY_MODEL)).save(tok_dir)
    garble(os.path.join(tok_dir, "checkpoints", "step-000000", "weights.safetensors"))
    with pytest.raises(CheckpointCorrupt, match=r"step-000000/weights\.safetensors does not"):
        Tokenizer.load(tok_dir)
    cfg = MaskGITConfig(codebook_size=5, grid=(2, 2), dim=8, depth=1, heads=1)
    mg_dir = str(tmp_path / "mg")
    save_checkpoint(mg_dir, 1, {"maskgit": MaskGITTransformer(cfg)}, {"maskgit": cfg.to_dict()})
    assert load_maskgit(mg_dir)[0].config == cfg
    garble(os.path.join(mg_dir, "checkpoints", "step-000001", "state.pt"))
    with pytest.raises(CheckpointCorrupt, match=r"step-000001/state\.pt does not"):
        load_maskgit(mg_dir)
    # On the command line: one line, no traceback.
    tokens = str(tmp_path / "tokens.npy")
    np.save(tokens, np.zeros((1, 8, 8), dtype=np.int32))
    rc = main(["decode", tokens, "--checkpoint", tok_dir, "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "weights.safetensors" in err, err


def test_resume_skips_a_corrupt_newest_checkpoint(tmp_path, capsys):
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    assert main(train_args(full, 8)) == 0
    assert main(train_args(part, 8, "--ckpt-every", "2", "--keep-checkpoints", "2")) == 0
    ckpts = os.path.join(part, "checkpoints")
    assert sorted(os.listdir(ckpts)) == ["latest", "step-000006", "step-000008"]
    # Pretend the run was stopped right after step 8's checkpoint was damaged.
    garble(os.path.join(ckpts, "step-000008", "weights.safetensors"))
    capsys.readouterr()
    assert main(train_args(part, 8, "--resume")) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "step-000008/weights.safetensors" in warnings[0], err
    assert load_checkpoint(part).step == 8
    assert_same_weights(full, part)  # steps 7 and 8 were redone from step 6


def test_resume_without_any_intact_checkpoint_is_one_line(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(train_args(run, 2)) == 0
    garble(os.path.join(run, "checkpoints", "step-000002", "config.json"))
    capsys.readouterr()
    assert main(train_args(run, 4, "--resume")) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("warning: skipping checkpoint") and "config.json" in err[0]
    assert len(err) == 2 and "error: no intact checkpoint to resume from" in err[1]


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    m = three_checkpoints(tmp_path)

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt_mod.torch, "save", disk_full)
    for step in (4, 3):  # a new step, and re-saving an existing one
        with pytest.raises(CheckpointWriteError) as err:
            save_checkpoint(str(tmp_path), step, {"net": m}, {})
        msg = str(err.value)
        assert "No space left on device" in msg and "step-000003 is unchanged" in msg
        assert load_checkpoint(str(tmp_path)).step == 3
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path / "checkpoints")) == [
        "latest", "step-000001", "step-000002", "step-000003"
    ]  # fmt: skip
    assert find_intact(str(tmp_path / "checkpoints"))[1] == []


def test_a_failed_write_during_training_stops_with_a_clear_error(tmp_path, monkeypatch, capsys):
    run = str(tmp_path / "run")
    real_save = ckpt_mod.torch.save
    calls = []

    def fail_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise PermissionError(13, "Permission denied")
        return real_save(*a, **k)

    monkeypatch.setattr(ckpt_mod.torch, "save", fail_second)
    assert main(train_args(run, 6, "--ckpt-every", "2")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Permission denied" in err
    assert "step-000002 is unchanged" in err
    assert load_checkpoint(run).step == 2


def test_prune_never_deletes_the_only_intact_checkpoint(tmp_path):
    three_checkpoints(tmp_path)
    root = str(tmp_path / "checkpoints")
    garble(os.path.join(root, "step-000003", "weights.safetensors"))
    garble(os.path.join(root, "step-000002", "weights.safetensors"))
    prune(root, keep=1)
    assert sorted(os.listdir(root)) == ["latest", "step-000001", "step-000003"]
    assert find_intact(root)[0] == os.path.join(root, "step-000001")
