"""Real depth data: NYU Depth v2's labelled ``.mat`` file and folders of
image + depth pairs.

Both return RGB images ``(N, 3, S, S)`` uint8 and depth ``(N, 1, S, S)``
float32 metres (0 = unknown) at a common side ``S``: the short side is resized
to ``S`` and the centre cropped (images: antialiased bilinear; depth: nearest,
so unknown pixels stay unknown and no depth is invented across edges). A
missing key, a shape mismatch or a corrupt file raises an error naming the file.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fsqkit.data.dataset import resize_center_crop, to_uint8_chw

PAIR_IMAGE_DIR, PAIR_DEPTH_DIR = "images", "depth"
DEFAULT_DEPTH_SCALE = 1000.0  # 16-bit PNG units per metre (millimetres)


def resize_depth(depth: Tensor, size: int) -> Tensor:
    """``(1, H, W)`` float depth -> ``(1, size, size)``: nearest resize of the short
    side to ``size``, then centre crop."""
    _, h, w = depth.shape
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(depth[None], size=(nh, nw), mode="nearest")[0]
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[:, top : top + size, left : left + size].contiguous()


def _pair(image: np.ndarray, depth: np.ndarray, size: int, what: str) -> tuple[Tensor, Tensor]:
    img = to_uint8_chw(image, what=what)
    if depth.ndim != 2 or depth.shape != tuple(img.shape[1:]):
        raise ValueError(
            f"{what}: depth map of shape {depth.shape} does not match the image "
            f"{tuple(img.shape[1:])}"
        )
    d = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None]
    if not torch.isfinite(d).all() or (d < 0).any():
        raise ValueError(f"{what}: depth contains negative or non-finite values")
    return resize_center_crop(img, size), resize_depth(d, size)


def load_nyu_mat(path: str, size: int = 64) -> tuple[Tensor, Tensor]:
    """NYU Depth v2 ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3 = HDF5): keys
    ``images`` ``(N, 3, W, H)`` uint8 and ``depths`` ``(N, W, H)`` metres (MATLAB
    stores arrays transposed). Needs ``h5py`` (``pip install fsqkit[nyu]``)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"NYU file {path!r} does not exist")
    try:
        import h5py
    except ImportError as err:
        # A ValueError, so the CLI prints it as a one-line error.
        raise ValueError(
            f"reading {path!r} needs h5py (NYU's .mat is HDF5): pip install 'fsqkit[nyu]'"
        ) from err
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path}: not a readable HDF5 / MATLAB v7.3 file ({err})") from None
    with f:
        for key in ("images", "depths"):
            if key not in f:
                raise ValueError(f"{path}: missing key {key!r} (found {sorted(f.keys())})")
        images, depths = f["images"], f["depths"]
        if images.ndim != 4 or images.shape[1] != 3 or depths.ndim != 3:
            raise ValueError(
                f"{path}: expected images (N, 3, W, H) and depths (N, W, H), got "
                f"{images.shape} and {depths.shape}"
            )
        if images.shape[0] != depths.shape[0] or images.shape[0] == 0:
            raise ValueError(f"{path}: {images.shape[0]} images but {depths.shape[0]} depth maps")
        out_i, out_d = [], []
        for i in range(images.shape[0]):
            img = np.asarray(images[i]).transpose(2, 1, 0)  # (H, W, 3)
            dep = np.asarray(depths[i]).T  # (H, W)
            a, b = _pair(img, dep, size, f"{path}[{i}]")
            out_i.append(a)
            out_d.append(b)
    return torch.stack(out_i), torch.stack(out_d)


def load_depth_pairs(
    path: str, size: int = 64, depth_scale: float = DEFAULT_DEPTH_SCALE
) -> tuple[Tensor, Tensor]:
    """A folder with ``images/NAME.*`` and ``depth/NAME.png`` (16-bit PNG,
    ``depth_scale`` units per metre, 0 = unknown), matched by file stem."""
    from PIL import Image, UnidentifiedImageError

    img_dir, dep_dir = os.path.join(path, PAIR_IMAGE_DIR), os.path.join(path, PAIR_DEPTH_DIR)
    for d in (img_dir, dep_dir):
        if not os.path.isdir(d):
            raise FileNotFoundError(f"depth pairs: folder {d!r} does not exist")
    depth_files = {os.path.splitext(f)[0]: f for f in sorted(os.listdir(dep_dir))}
    names = sorted(os.listdir(img_dir))
    if not names:
        raise ValueError(f"depth pairs: {img_dir} holds no images")
    out_i, out_d = [], []
    for name in names:
        stem = os.path.splitext(name)[0]
        if stem not in depth_files:
            raise ValueError(f"depth pairs: {os.path.join(img_dir, name)} has no depth/{stem}.png")
        ip, dp = os.path.join(img_dir, name), os.path.join(dep_dir, depth_files[stem])
        arrays = []
        for p, mode in ((ip, "RGB"), (dp, None)):
            try:
                with Image.open(p) as im:
                    arrays.append(np.asarray(im.convert(mode) if mode else im))
            except (UnidentifiedImageError, OSError) as err:
                raise ValueError(f"cannot read {p}: {err}") from None
        dep = arrays[1]
        if dep.ndim != 2 or dep.dtype not in (np.uint16, np.int32, np.uint8):
            raise ValueError(
                f"{dp}: expected a single-channel 16-bit depth PNG, got {dep.dtype} {dep.shape}"
            )
        a, b = _pair(arrays[0], dep.astype(np.float32) / depth_scale, size, ip)
        out_i.append(a)
        out_d.append(b)
    return torch.stack(out_i), torch.stack(out_d)
