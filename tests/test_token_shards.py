"""Token shards: the format round-trips, ``fsqkit encode --data`` writes and
resumes them, and ``train-maskgit --tokens`` (memory-mapped) trains exactly as
from the same tokens in memory."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from fsqkit.cli import main
from fsqkit.data import build_dataset
from fsqkit.data.token_shards import TokenShards, TokenShardWriter, token_dtype
from fsqkit.maskgit.tokens import encode_split, in_memory_tokens
from fsqkit.tokenizer import Tokenizer, TokenizerConfig
from fsqkit.training import load_checkpoint
from tests.image_folders import make_image_folder, make_shards


def test_format_round_trip(tmp_path) -> None:
    assert token_dtype(1000) == np.int16 and token_dtype(2**15) == np.int16
    assert token_dtype(2**16) == np.uint16 and token_dtype(2**16 + 1) == np.int32
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 1000, size=(n, 3, 2)) for n in (5, 0, 7)]
    labels = [rng.integers(0, 10, size=len(p)) for p in parts]
    w = TokenShardWriter(str(tmp_path), {"what": "test"}, 1000)
    for k, (t, y) in enumerate(zip(parts, labels)):
        w.write(k, t, y)
    w.finish(3, num_classes=10)
    shards = TokenShards(str(tmp_path))
    assert len(shards) == 12 and shards.grid == (3, 2) and shards.num_classes == 10
    assert np.load(tmp_path / "tokens-00000.npy").dtype == np.int16  # small on disk
    idx = torch.tensor([11, 0, 4, 5, 7, 0])
    tokens, lab = shards.batch(idx)
    assert tokens.dtype == torch.int64
    assert torch.equal(tokens, torch.from_numpy(np.concatenate(parts))[idx])
    assert torch.equal(lab, torch.from_numpy(np.concatenate(labels))[idx])
    mem = in_memory_tokens(shards)
    assert torch.equal(mem.batch(idx)[0], tokens) and torch.equal(mem.batch(idx)[1], lab)
    assert len(shards.head(4)) == 4
    with pytest.raises(IndexError):
        shards.head(4).batch(torch.tensor([4]))
    # Another encoding in the same folder is refused unless overwritten.
    with pytest.raises(ValueError, match="another encoding"):
        TokenShardWriter(str(tmp_path), {"what": "other"}, 1000)
    with pytest.raises(ValueError, match="indices outside"):
        w.write(0, np.full((1, 3, 2), 1000), None)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(ValueError, match=r"no manifest\.json"):
        TokenShards(str(tmp_path))


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("tok") / "tok")
    torch.manual_seed(0)
    cfg = TokenizerConfig(quantizer_kwargs={"levels": [5, 3]}, image_size=8, base_channels=8,
                          channel_mult=(1, 2), norm_groups=4)  # fmt: skip
    Tokenizer(cfg).save(path)
    return path


def test_encode_command_writes_resumes_and_matches_in_memory(tokenizer_dir, tmp_path) -> None:
    root, out = str(tmp_path / "imgs"), str(tmp_path / "tokens")
    make_image_folder(root, per_class=20)
    args = ["encode", "--checkpoint", tokenizer_dir, "--data", f"folder:{root}", "--out", out,
            "--shard-size", "16", "--workers", "2", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    train = TokenShards(os.path.join(out, "train"))
    manifest = train.manifest
    tok = Tokenizer.load(tokenizer_dir)
    from fsqkit.maskgit.tokens import tokenizer_fingerprint

    assert manifest["encoding"]["tokenizer"] == tokenizer_fingerprint(tok)
    assert manifest["dtype"] == "int16" and manifest["class_names"] == [
        "ants",
        "bees",
        "cats",
        "dogs",
    ]
    # The same tokens (and labels) as encoding the in-memory images.
    ds = build_dataset(f"folder:{root}", "train", image_size=8)
    tokens, labels = train.batch(slice(None))
    assert torch.equal(tokens, tok.encode(ds.batch(slice(None))).long())
    assert torch.equal(labels, ds.labels)
    # Resume: a lost shard (and manifest) is encoded again, the others are kept.
    shard = os.path.join(out, "train", "tokens-00002.npy")
    kept = os.path.join(out, "train", "tokens-00000.npy")
    mtime = os.stat(kept).st_mtime_ns
    os.remove(shard)
    os.remove(os.path.join(out, "train", "manifest.json"))
    assert main(args) == 0
    assert os.path.isfile(shard) and os.stat(kept).st_mtime_ns == mtime
    assert torch.equal(TokenShards(os.path.join(out, "train")).batch(slice(None))[0], tokens)


def test_encode_tar_shards_counts_classes(tokenizer_dir, tmp_path) -> None:
    pattern = make_shards(str(tmp_path / "wds"), 3, 5)
    tok = Tokenizer.load(tokenizer_dir)
    shards = encode_split(tok, f"wds:{pattern}", "train", str(tmp_path / "t"), workers=1)
    assert len(shards) == 10 and len(shards.manifest["shards"]) == 2  # one per tar shard
    assert shards.num_classes == 10  # cls = 0 .. 9: the largest label + 1
    assert sorted(shards.batch(slice(None))[1].tolist()) == list(range(10))


def test_train_maskgit_from_shards_equals_training_in_memory(tokenizer_dir, tmp_path) -> None:
    root, out = str(tmp_path / "imgs"), str(tmp_path / "tokens")
    make_image_folder(root, per_class=12, bad=False)
    assert main(["encode", "--checkpoint", tokenizer_dir, "--data", f"folder:{root}", "--out",
                 out, "--shard-size", "10", "--workers", "0", "--no-progress"]) == 0  # fmt: skip
    runs = {}
    for name, extra in (("mmap", []), ("memory", ["--tokens-in-memory"])):
        runs[name] = str(tmp_path / name)
        assert main(["train-maskgit", "--tokens", out, *extra, "--dim", "16", "--depth", "1",
                     "--heads", "2", "--steps", "4", "--batch-size", "8", "--out", runs[name],
                     "--no-progress"]) == 0  # fmt: skip
    a = load_checkpoint(runs["mmap"])
    b = load_checkpoint(runs["memory"])
    assert a.config["maskgit"]["num_classes"] == 4  # labels from the shards
    for k, v in a.weights["maskgit"].items():
        assert torch.equal(v, b.weights["maskgit"][k]), k
    # The tokenizer recorded in the shards is the one the run names.
    assert a.config["tokenizer"]["path"] == os.path.abspath(tokenizer_dir)
    # Tokens of another tokenizer are refused.
    other = str(tmp_path / "tok2")
    torch.manual_seed(1)
    Tokenizer(Tokenizer.load(tokenizer_dir).cfg).save(other)
    code = main(["train-maskgit", "--tokens", out, "--tokenizer", other, "--steps", "1",
                 "--out", str(tmp_path / "x"), "--no-progress"])  # fmt: skip
    assert code == 2


def test_token_cache_of_a_streamed_folder_is_memory_mapped_shards(tokenizer_dir, tmp_path) -> None:
    from fsqkit.maskgit.train import MaskGITTask, MaskGITTrainConfig

    root = str(tmp_path / "imgs")
    make_image_folder(root, per_class=6)
    cfg = MaskGITTrainConfig(data=f"folder:{root}", tokenizer=tokenizer_dir, batch_size=4,
                             workers=1)  # fmt: skip
    out = str(tmp_path / "run")
    task = MaskGITTask({"dim": 16, "depth": 1, "heads": 2}, cfg, 2, out)
    assert isinstance(task.train_tokens, TokenShards)  # memory-mapped, not in memory
    assert isinstance(task.train_tokens._tokens[0], np.memmap)
    assert os.path.isfile(os.path.join(out, "tokens", "train", "manifest.json"))
    assert task.model_cfg.num_classes == 4
    # Batches come in epochs: the first steps of an epoch draw distinct grids.
    n = len(task.train_tokens)
    firsts = torch.cat([task.batches.sampler.indices(s) for s in range(1, n // 4 + 1)])
    assert len(set(firsts.tolist())) == len(firsts)
