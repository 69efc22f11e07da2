"""WebDataset tar shards (``wds:PATTERN``): brace patterns, labels, bad samples,
disjoint rank/worker streams and what resume guarantees."""

from __future__ import annotations

import os

import pytest
import torch

from fsqkit.data import open_images
from fsqkit.data.augment import Augment
from fsqkit.data.bad_files import BadFiles
from fsqkit.data.shards import ShardImages, count_samples, expand_shards
from fsqkit.training import EpochSampler, batch_source
from tests.image_folders import make_shards

SHARDS, PER_SHARD = 4, 16


@pytest.fixture(scope="module")
def pattern(tmp_path_factory) -> str:
    return make_shards(str(tmp_path_factory.mktemp("wds")), SHARDS, PER_SHARD)


def _train(pattern: str, **kw) -> ShardImages:
    return open_images(f"wds:{pattern}", "all", image_size=8, augment=Augment("crop"), **kw)


def _labels(loader, steps) -> list[list[int]]:
    return [loader.raw(s).labels.tolist() for s in steps]


def test_brace_patterns_labels_and_splits(pattern) -> None:
    shards = expand_shards(pattern)
    assert len(shards) == SHARDS and all(count_samples(s) == PER_SHARD for s in shards)
    train = open_images(f"wds:{pattern}", "train", image_size=8)
    val = open_images(f"wds:{pattern}", "val", image_size=8)
    assert train.shards == shards[:-1] and val.shards == shards[-1:]  # last shard held out
    labels = torch.cat([r.labels for r in val.iter_raw(5)])
    assert sorted(labels.tolist()) == list(range((SHARDS - 1) * PER_SHARD, SHARDS * PER_SHARD))
    assert val.batch(slice(0, 3)).shape == (3, 3, 8, 8)
    # An explicit validation set: every shard trains.
    assert (
        open_images(f"wds:{pattern}", "train", image_size=8, val_spec="embedded").shards == shards
    )


def test_missing_shard_is_named(pattern) -> None:
    broken = pattern.replace(f"{SHARDS - 1:04d}}}", f"{SHARDS + 1:04d}}}")
    with pytest.raises(
        FileNotFoundError, match=rf"2 of {SHARDS + 2} shards are missing.*part-{SHARDS:04d}\.tar"
    ):
        open_images(f"wds:{broken}", "train", image_size=8)


def test_ranks_and_workers_read_disjoint_samples(pattern) -> None:
    steps_per_epoch = SHARDS * PER_SHARD // (2 * 4)
    seen = []
    for rank in (0, 1):
        ds = _train(pattern, bad=BadFiles(say=lambda line: None))
        loader = batch_source(ds, 4, 0, _Dist(rank, 2), workers=2)
        seen.append([x for b in _labels(loader, range(1, steps_per_epoch + 1)) for x in b])
        loader.close()
    assert not set(seen[0]) & set(seen[1])  # disjoint shards per rank
    assert sorted(seen[0] + seen[1]) == list(range(SHARDS * PER_SHARD))  # one epoch: all once


def test_resume_restores_the_stream_exactly(pattern) -> None:
    ds = _train(pattern)
    sampler = EpochSampler(1, 8, 3)  # batch 8: an epoch is 8 steps (2 streams x 2 shards)
    loader = ds.loader(sampler, workers=2)
    first = [loader.raw(s) for s in range(1, 13)]
    loader.close()
    epoch = sorted(x for b in first[:8] for x in b.labels.tolist())
    assert epoch == list(range(SHARDS * PER_SHARD))
    # A resumed run starts at step 7: its streams skip a whole shard (by its
    # count) and half of the next, and go on into the next epoch.
    again = ds.loader(sampler, workers=2)
    for s in range(7, 13):
        raw = again.raw(s)
        assert torch.equal(raw.images, first[s - 1].images), s  # items and augmentation
        assert torch.equal(raw.labels, first[s - 1].labels), s
    again.close()
    # 0 and 1 workers give the same stream (other worker counts: another one).
    zero = [ds.loader(sampler, workers=0).raw(s).labels.tolist() for s in (1, 2, 3)]
    one = ds.loader(sampler, workers=1)
    assert zero == _labels(one, (1, 2, 3))
    one.close()


def test_bad_samples_and_damaged_shards_are_skipped(tmp_path) -> None:
    import webdataset as wds

    make_shards(str(tmp_path), 2, 6)
    with wds.TarWriter(str(tmp_path / "part-0002.tar")) as w:
        w.write({"__key__": "junk", "jpg": b"not a jpeg", "cls": "99"})
        w.write({"__key__": "nojpg", "txt": "no image here", "cls": "98"})
    good = (tmp_path / "part-0000.tar").read_bytes()
    (tmp_path / "part-0003.tar").write_bytes(good[: len(good) // 3])  # truncated
    lines: list[str] = []
    ds = open_images(f"wds:{tmp_path}/part-{{0000..0003}}.tar", "all", image_size=8,
                     bad=BadFiles(say=lines.append))  # fmt: skip
    labels = torch.cat([r.labels for r in ds.iter_raw(4)]).tolist()
    # Shards 0 and 1 whole, the samples before the damage of the truncated copy
    # of shard 0, none of the bad samples.
    assert sorted(set(labels)) == list(range(12)) and len(labels) < 24
    warnings = [line for line in lines if line.startswith("warning")]
    assert any("part-0002.tar:junk" in line and "cannot decode" in line for line in warnings)
    assert any("part-0002.tar:nojpg" in line and "no image entry" in line for line in warnings)
    assert any("part-0003.tar" in line for line in warnings)


def test_tokenizer_trains_on_shards_with_two_workers(pattern, tmp_path) -> None:
    from fsqkit.tokenizer import TokenizerConfig, TokenizerTrainConfig, train_tokenizer
    from fsqkit.training import TrainerConfig

    model = TokenizerConfig(quantizer_kwargs={"levels": [5, 3]}, image_size=8, base_channels=8,
                            channel_mult=(1, 2), norm_groups=4)  # fmt: skip
    train = TokenizerTrainConfig(data=f"wds:{pattern}", batch_size=8, workers=2, warmup_steps=1)
    res = train_tokenizer(model, train, TrainerConfig(str(tmp_path / "r"), 3, progress=False))
    assert res.metrics["psnr"] > 0 and os.path.isfile(tmp_path / "r" / "recon.png")


class _Dist:
    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size
