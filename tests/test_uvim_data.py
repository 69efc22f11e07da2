"""Dense data sources: NYU's labelled .mat (HDF5) and image + depth PNG pairs,
on small files written here; clear errors naming the file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fsqkit.data.dense import build_dense_dataset
from fsqkit.data.depth_files import load_depth_pairs, load_nyu_mat

h5py = pytest.importorskip("h5py")


def write_nyu(path, n=10, h=24, w=32, images_key="images"):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    depths = rng.uniform(0.5, 9.0, (n, h, w)).astype(np.float32)
    depths[:, 0, 0] = 0.0  # a missing measurement
    with h5py.File(path, "w") as f:  # MATLAB v7.3 layout: arrays transposed
        f.create_dataset(images_key, data=images.transpose(0, 3, 2, 1))
        f.create_dataset("depths", data=depths.transpose(0, 2, 1))
    return images, depths


def test_nyu_mat_roundtrip(tmp_path):
    path = tmp_path / "nyu.mat"
    images, depths = write_nyu(path)
    x, d = load_nyu_mat(str(path), size=24)  # short side already 24: centre crop of the width
    assert x.shape == (10, 3, 24, 24) and d.shape == (10, 1, 24, 24)
    assert torch.equal(x[3], torch.from_numpy(images[3, :, 4:28].transpose(2, 0, 1).copy()))
    assert torch.equal(d[3, 0], torch.from_numpy(depths[3, :, 4:28]))
    train = build_dense_dataset(f"nyu:{path}", "train", image_size=12)
    val = build_dense_dataset(f"nyu:{path}", "val", image_size=12)
    assert len(train) == 9 and len(val) == 1 and train.depth.shape == (9, 1, 12, 12)


def test_nyu_errors_name_the_file(tmp_path):
    bad_key = tmp_path / "nokey.mat"
    write_nyu(bad_key, images_key="rgb")
    with pytest.raises(ValueError, match=r"nokey\.mat.*missing key 'images'"):
        load_nyu_mat(str(bad_key))
    corrupt = tmp_path / "corrupt.mat"
    corrupt.write_bytes(b"MATLAB 5.0 MAT-file, not HDF5")
    with pytest.raises(ValueError, match=r"corrupt\.mat"):
        load_nyu_mat(str(corrupt))
    mismatch = tmp_path / "mismatch.mat"
    with h5py.File(mismatch, "w") as f:
        f.create_dataset("images", data=np.zeros((2, 3, 8, 6), np.uint8))
        f.create_dataset("depths", data=np.zeros((3, 8, 6), np.float32))
    with pytest.raises(ValueError, match=r"mismatch\.mat: 2 images but 3 depth maps"):
        load_nyu_mat(str(mismatch))
    with pytest.raises(FileNotFoundError, match=r"missing\.mat"):
        load_nyu_mat(str(tmp_path / "missing.mat"))


def write_pairs(root, n=4, h=16, w=20):
    (root / "images").mkdir(parents=True)
    (root / "depth").mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            root / "images" / f"{i}.png"
        )
        mm = rng.integers(0, 10000, (h, w)).astype(np.uint16)
        Image.fromarray(mm).save(root / "depth" / f"{i}.png")
    return mm


def test_depth_pairs(tmp_path):
    mm = write_pairs(tmp_path / "p")
    x, d = load_depth_pairs(str(tmp_path / "p"), size=16)
    assert x.shape == (4, 3, 16, 16) and d.shape == (4, 1, 16, 16)
    assert torch.allclose(d[3, 0], torch.from_numpy(mm[:, 2:18].astype(np.float32) / 1000.0))
    ds = build_dense_dataset(f"pairs:{tmp_path / 'p'}", "train", image_size=8)
    assert len(ds) == 3 and ds.depth.max() < 10.0


def test_depth_pairs_errors(tmp_path):
    write_pairs(tmp_path / "p")
    (tmp_path / "p" / "depth" / "2.png").unlink()
    with pytest.raises(ValueError, match=r"2\.png has no depth/2\.png"):
        load_depth_pairs(str(tmp_path / "p"))
    write_pairs(tmp_path / "q")
    (tmp_path / "q" / "depth" / "1.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read .*q/depth/1\.png"):
        load_depth_pairs(str(tmp_path / "q"))
    write_pairs(tmp_path / "r")
    Image.fromarray(np.zeros((5, 5), np.uint16)).save(tmp_path / "r" / "depth" / "0.png")
    with pytest.raises(ValueError, match=r"r/images/0\.png: depth map of shape"):
        load_depth_pairs(str(tmp_path / "r"))
    with pytest.raises(FileNotFoundError, match="images"):
        load_depth_pairs(str(tmp_path / "none"))
    with pytest.raises(ValueError, match="unknown data spec"):
        build_dense_dataset("mnist", "train")


def test_nyu_without_h5py_says_how_to_install(tmp_path, monkeypatch):
    path = tmp_path / "nyu.mat"
    write_nyu(path, n=2)
    monkeypatch.setitem(__import__("sys").modules, "h5py", None)  # import h5py -> ImportError
    with pytest.raises(ValueError, match=r"nyu\.mat.*needs h5py.*fsqkit\[nyu\]"):
        load_nyu_mat(str(path))
