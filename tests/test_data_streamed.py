"""Streamed image folders: the file list and its cache, bad files, augmentation,
the epoch sampler, DataLoader workers, and exact resume of a tokenizer run."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from fsqkit.cli import main
from fsqkit.data import build_dataset, open_images
from fsqkit.data.augment import EVAL, Augment, load_crop
from fsqkit.data.bad_files import BadFiles, TooManyBadFiles
from fsqkit.data.file_list import cached_scan, folder_split, scan_folder
from fsqkit.data.streamed import FolderImages
from fsqkit.training import (
    EpochSampler,
    InMemoryBatches,
    StepSampler,
    TrainerConfig,
    batch_source,
    load_checkpoint,
)
from tests.image_folders import BAD, CLASSES, ODD, make_image_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[str, int]:
    root = str(tmp_path_factory.mktemp("imagenet-like"))
    return root, make_image_folder(root, per_class=50)


def _quiet(limit: int | None = 100) -> tuple[BadFiles, list[str]]:
    lines: list[str] = []
    return BadFiles(limit, say=lines.append), lines


# ------------------------------------------------------------------ file list
def test_file_list_layouts(tmp_path) -> None:
    root = str(tmp_path / "d")
    n_good = make_image_folder(root, per_class=3)
    fl = scan_folder(root)
    assert fl.class_names == list(CLASSES)
    # Zero-byte files never enter the list; they are reported as skipped.
    assert len(fl) == n_good + len(BAD) - 1
    assert [os.path.basename(p) for p, _ in fl.skipped] == ["zero.jpg"]
    assert {fl.label(i) for i in range(len(fl))} == {0, 1, 2, 3}
    for i in range(len(fl)):  # the label is the class folder
        assert fl.path(i).split(os.sep)[-2] == CLASSES[fl.label(i)]
    # A flat folder: no labels.
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("a.png", "b.jpg"):
        (flat / name).write_bytes((tmp_path / "d" / "ants" / "0000.jpg").read_bytes())
    (flat / "notes.txt").write_text("not an image")
    f2 = scan_folder(str(flat))
    assert len(f2) == 2 and f2.labels is None and f2.class_names is None
    # train/ + val/: explicit splits, validation classes indexed like training's.
    split = tmp_path / "split"
    for sub, classes in (("train", ("x", "y", "z")), ("val", ("y", "z"))):
        for c in classes:
            (split / sub / c).mkdir(parents=True)
            (split / sub / c / "1.jpg").write_bytes((flat / "b.jpg").read_bytes())
    val = folder_split(str(split), "val")
    assert val.class_names == ["x", "y", "z"] and sorted(val.labels.tolist()) == [1, 2]
    # Clear errors that name the folder.
    with pytest.raises(FileNotFoundError, match="nope"):
        scan_folder(str(tmp_path / "nope"))
    empty = tmp_path / "empty"
    (empty / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no images .* found in .*empty"):
        scan_folder(str(empty))


def test_file_list_cache_is_reused_and_invalidated(tmp_path, monkeypatch) -> None:
    root, run = str(tmp_path / "d"), str(tmp_path / "run")
    make_image_folder(root, per_class=2, bad=False)
    first = cached_scan(root, run)
    assert os.listdir(os.path.join(run, "data-cache"))
    import fsqkit.data.file_list as file_list

    def no_scan(*a, **k):
        raise AssertionError("listed the folder again instead of reading the cache")

    monkeypatch.setattr(file_list, "scan_folder", no_scan)
    again = cached_scan(root, run)
    assert np.array_equal(again.paths, first.paths) and np.array_equal(again.labels, first.labels)
    monkeypatch.undo()
    (tmp_path / "d" / "ants" / "new.jpg").write_bytes(
        (tmp_path / "d" / "ants" / "0000.jpg").read_bytes()
    )
    assert len(cached_scan(root, run)) == len(first) + 1  # a new file: listed again


# ------------------------------------------------------------------ bad files
def test_bad_files_are_skipped_counted_and_named(folder) -> None:
    root, n_good = folder
    bad, lines = _quiet()
    ds = FolderImages(folder_split(root, "all"), 8, EVAL, "t", bad, workers=2)
    images = list(ds.iter_raw(32))
    assert sum(len(r.images) for r in images) == n_good
    assert bad.count == len(BAD)
    for cls, name, _ in BAD:  # one line per bad file, naming it
        assert (
            sum(os.path.join(cls, name) in line for line in lines if line.startswith("warning"))
            == 1
        )
    for cls, name in ODD:  # converted, with a note naming the file
        assert any(os.path.join(cls, name) in line for line in lines if line.startswith("note"))
    # The 16-bit image is scaled, not clipped to white.
    gray, _ = load_crop(os.path.join(root, "dogs", "gray16.png"), 8)
    assert 40 < float(gray.float().mean()) < 200


def test_too_many_bad_files_stop_with_one_line(folder, tmp_path, capsys) -> None:
    root, _ = folder
    bad, _ = _quiet(limit=1)
    ds = FolderImages(folder_split(root, "all"), 8, EVAL, "t", bad)
    with pytest.raises(TooManyBadFiles, match=r"more than the limit of 1 .*--max-bad-files"):
        list(ds.iter_raw(64))
    code = main([
        "train-tokenizer", "--data", f"folder:{root}", "--image-size", "8", "--base-channels", "8",
        "--channel-mult", "1,2", "--steps", "30", "--batch-size", "16", "--workers", "2",
        "--max-bad-files", "1", "--out", str(tmp_path / "run"), "--no-progress",
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("fsqkit train-tokenizer: error: stopping: 2 bad image files"), last


def test_a_folder_of_only_bad_files_stops_clearly(tmp_path) -> None:
    d = tmp_path / "bad"
    d.mkdir()
    for i in range(3):
        (d / f"{i}.jpg").write_bytes(b"junk")
    bad, _ = _quiet(limit=None)
    ds = FolderImages(scan_folder(str(d)), 8, Augment(), "t", bad)
    loader = ds.loader(EpochSampler(len(ds), 2, 0), workers=1)
    with pytest.raises(TooManyBadFiles, match="all unreadable"):
        loader.batch(1)
    loader.close()


# ----------------------------------------------------------------- augmentation
def test_augmentation_is_a_pure_function_of_the_seed(folder) -> None:
    path = os.path.join(folder[0], "cats", "0001.jpg")
    for mode in ("crop", "resized-crop"):
        aug = Augment(mode)
        a, _ = load_crop(path, 8, aug, seed=5)
        assert torch.equal(a, load_crop(path, 8, aug, seed=5)[0])
        assert any(not torch.equal(a, load_crop(path, 8, aug, seed=s)[0]) for s in range(6, 12))
    center, _ = load_crop(path, 8)
    assert torch.equal(center, load_crop(path, 8, Augment("none"), seed=5)[0])  # switchable off
    # Flips only: on a square image a "crop" is the whole image, mirrored or not.
    sq = os.path.join(folder[0], "sq.png")
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(sq)
    whole, _ = load_crop(sq, 8)
    got = {bool(torch.equal(load_crop(sq, 8, Augment("crop"), seed=s)[0], whole.flip(-1)))
           for s in range(16)}  # fmt: skip
    assert got == {True, False}
    assert all(
        torch.equal(load_crop(sq, 8, Augment("crop", flip=False), seed=s)[0], whole)
        for s in range(4)
    )
    os.remove(sq)


# ------------------------------------------------------------------- sampling
def test_epoch_sampler_walks_permutations_and_slices_ranks() -> None:
    n, b, world = 23, 4, 2
    s0, s1 = EpochSampler(n, b, 7, 0, world), EpochSampler(n, b, 7, 1, world)
    seen = torch.cat([EpochSampler(n, b, 7, 0, world).global_indices(s) for s in range(1, 7)])
    assert sorted(seen[:n].tolist()) == list(range(n))  # epoch 0: every item once
    for step in range(1, 7):
        g = s0.global_indices(step)
        assert torch.equal(torch.cat([s0.indices(step), s1.indices(step)]), g)
        assert torch.equal(g, EpochSampler(n, b, 7, 0, world).global_indices(step))  # pure
    assert not torch.equal(s0.permutation(0), s0.permutation(1))


def test_builtin_sources_keep_the_per_step_sampler() -> None:
    ds = open_images("embedded", "train", image_size=8, num_images=64)
    src = batch_source(ds, 8, 3)
    assert isinstance(src, InMemoryBatches) and type(src.sampler) is StepSampler
    assert torch.equal(src.batch(5), ds.batch(StepSampler(64, 8, 3).indices(5)))


def test_worker_batches_equal_inline_batches_at_any_step(folder) -> None:
    root, _ = folder
    ds = open_images(f"folder:{root}", "train", image_size=8, augment=Augment("resized-crop"),
                     bad=_quiet()[0])  # fmt: skip
    two = batch_source(ds, 8, 1, workers=2)
    inline = batch_source(ds, 8, 1, workers=0)
    got = [two.batch(s) for s in range(1, 6)]
    assert all(torch.equal(got[s - 1], inline.batch(s)) for s in (3, 4, 5, 1, 2))
    assert torch.equal(two.batch(2), got[1])  # a restart at an earlier step
    two.close()


# ------------------------------------------------------------ tokenizer runs
def _tokenizer_run(root: str, out: str, **trainer_kw):
    from fsqkit.tokenizer import TokenizerConfig, TokenizerTrainConfig, train_tokenizer

    model = TokenizerConfig(
        quantizer_kwargs={"levels": [5, 3]}, image_size=8, base_channels=8, channel_mult=(1, 2),
        norm_groups=4,
    )  # fmt: skip
    train = TokenizerTrainConfig(
        data=f"folder:{root}", batch_size=8, workers=2, warmup_steps=2, num_val_images=16,
        augment="resized-crop", max_bad_files=10,
    )  # fmt: skip
    trainer = TrainerConfig(out_dir=out, steps=6, log_every=1, progress=False, **trainer_kw)
    return train_tokenizer(model, train, trainer)


def test_two_workers_training_resumes_bit_identically(folder, tmp_path) -> None:
    root, _ = folder
    full = _tokenizer_run(root, str(tmp_path / "full"))
    _tokenizer_run(root, str(tmp_path / "cut"), stop_after=3)
    assert load_checkpoint(str(tmp_path / "cut")).step == 3
    resumed = _tokenizer_run(root, str(tmp_path / "cut"), resume=True)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert full.metrics == resumed.metrics
    # The file list was cached in the run directory.
    assert os.listdir(tmp_path / "full" / "data-cache")


def test_in_memory_folder_dataset_skips_bad_files(folder) -> None:
    root, n_good = folder
    tr = build_dataset(f"folder:{root}", "train", image_size=8)
    va = build_dataset(f"folder:{root}", "val", image_size=8)
    assert len(tr) + len(va) == n_good and tr.class_names == list(CLASSES)
    assert len(build_dataset(f"folder:{root}", "val", image_size=8, num_images=5)) == 5
