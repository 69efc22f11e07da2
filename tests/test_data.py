"""Built-in and user data sources: determinism, splits, labels, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fsqkit.data import build_dataset
from fsqkit.data.embedded import TRAIN_PHOTOS, VAL_PHOTOS


def test_embedded_is_deterministic_and_seeded():
    a = build_dataset("embedded", "val", image_size=16, num_images=64, seed=3)
    b = build_dataset("embedded", "val", image_size=16, num_images=64, seed=3)
    c = build_dataset("embedded", "val", image_size=16, num_images=64, seed=4)
    assert a.images.shape == (64, 3, 16, 16) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    assert a.labels is None


def test_embedded_validation_photos_are_held_out():
    assert not set(TRAIN_PHOTOS) & set(VAL_PHOTOS)
    train = build_dataset("embedded", "train", image_size=16, num_images=256)
    val = build_dataset("embedded", "val", image_size=16, num_images=256)
    # No validation crop appears among the training crops.
    tr = {bytes(x.numpy().tobytes()) for x in train.images}
    assert not any(bytes(x.numpy().tobytes()) in tr for x in val.images)
    # Crops are real photo content, not constant patches.
    assert float(val.images.float().std()) > 20


def test_batch_is_float_in_unit_range():
    ds = build_dataset("embedded", "train", image_size=16, num_images=8)
    x = ds.batch(torch.tensor([0, 3]))
    assert x.dtype == torch.float32 and x.shape == (2, 3, 16, 16)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_digits_labels_and_split():
    tr = build_dataset("digits", "train", image_size=16)
    va = build_dataset("digits", "val", image_size=16)
    assert len(tr) + len(va) == 1797
    assert tr.num_classes == 10 and set(va.labels.tolist()) == set(range(10))
    assert tr.images.shape[1:] == (3, 16, 16)


def _write_png(path, color, size=(20, 12)):
    Image.fromarray(np.full((size[1], size[0], 3), color, dtype=np.uint8)).save(path)


def test_folder_with_class_subfolders(tmp_path):
    for cls, color in (("cats", 10), ("dogs", 200)):
        (tmp_path / cls).mkdir()
        for i in range(5):
            _write_png(tmp_path / cls / f"{i}.png", color)
    tr = build_dataset(f"folder:{tmp_path}", "train", image_size=8)
    va = build_dataset(f"folder:{tmp_path}", "val", image_size=8)
    assert len(tr) == 9 and len(va) == 1
    assert tr.class_names == ["cats", "dogs"] and tr.num_classes == 2
    # Labels follow the folder: cats are dark, dogs bright.
    for img, y in zip(tr.images, tr.labels):
        assert (int(img.float().mean()) < 100) == (int(y) == 0)
    assert tr.images.shape[1:] == (3, 8, 8)


def test_folder_errors_name_the_path(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="nope"):
        build_dataset(f"folder:{tmp_path / 'nope'}", "train")
    with pytest.raises(ValueError, match="no images"):
        build_dataset(f"folder:{tmp_path}", "train")
    for i in range(4):
        _write_png(tmp_path / f"good{i}.png", 5)
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    # An unreadable file is left out with a warning naming it, the rest loads.
    n = len(build_dataset(f"folder:{tmp_path}", "train")) + len(
        build_dataset(f"folder:{tmp_path}", "val")
    )
    assert n == 4
    assert "broken.png: cannot decode" in capsys.readouterr().err


def test_npz_roundtrip_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(20, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(20) % 4
    np.savez(tmp_path / "d.npz", images=imgs, labels=labels)
    tr = build_dataset(f"npz:{tmp_path / 'd.npz'}", "train", image_size=8)
    va = build_dataset(f"npz:{tmp_path / 'd.npz'}", "val", image_size=8)
    assert len(tr) == 18 and len(va) == 2 and tr.num_classes == 4
    # Pixels survive exactly (no resize needed at the same size).
    got = {x.permute(1, 2, 0).numpy().tobytes() for x in torch.cat([tr.images, va.images])}
    assert got == {im.tobytes() for im in imgs}
    np.savez(tmp_path / "bad.npz", pictures=imgs)
    with pytest.raises(ValueError, match="no 'images' array"):
        build_dataset(f"npz:{tmp_path / 'bad.npz'}", "train")
    with pytest.raises(FileNotFoundError, match=r"missing\.npz"):
        build_dataset(f"npz:{tmp_path / 'missing.npz'}", "train")


def test_unknown_spec_and_split():
    with pytest.raises(ValueError, match="unknown data spec"):
        build_dataset("imagenet", "train")
    with pytest.raises(ValueError, match="needs a path"):
        build_dataset("folder:", "train")
    with pytest.raises(ValueError, match="split"):
        build_dataset("embedded", "test")


def test_head_is_a_prefix_sharing_storage():
    ds = build_dataset("embedded", "val", image_size=16, num_images=12)
    head = ds.head(5)
    assert len(head) == 5 and torch.equal(head.images, ds.images[:5])
    assert head.images.data_ptr() == ds.images.data_ptr() and head.name.endswith("[:5]")
    assert ds.head(12) is ds and ds.head(100) is ds
    # The embedded validation crops of a smaller count are the larger set's head.
    assert torch.equal(
        build_dataset("embedded", "val", image_size=16, num_images=5).images, head.images
    )
