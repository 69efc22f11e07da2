"""Feature extractors for sample-quality metrics.

Dimension legend: ``N`` images, ``H, W`` image size, ``F`` feature width.

Every extractor is a callable ``images [N, 3, H, W] float in [0, 1] -> features
[N, F]`` (float32, CPU). Any such callable can be passed to the metrics: the
extractor is pluggable.

Two are built in (:func:`build_feature_extractor`):

- ``"random-conv"`` (default, offline): :class:`RandomConvFeatures`, a fixed,
  seeded, untrained three-layer conv net. Images are resized to 32x32; the
  features are the spatial means of each layer's ReLU activations plus a 2x2
  average pool of the last layer (``F = 32 + 64 + 128 + 4·128 = 736``). Random
  conv features are a known, cheap proxy for perceptual statistics (edges,
  blobs, layout); numbers are comparable only with numbers from the same
  extractor, never with published FIDs.
- ``"inception:PATH"``: the standard FID network from a local TorchScript file,
  e.g. ``inception-2015-12-05.pt`` as distributed with StyleGAN2-ADA / clean-fid
  (the TF-Inception-v3 weights of the original FID). Nothing is downloaded; the
  user supplies the file. Called as ``model(x, return_features=True)`` with ``x``
  float ``[N, 3, 299, 299]`` in ``[0, 255]`` (images are resized to 299x299 with
  antialiased bicubic interpolation); gives ``F = 2048`` pool features. FID values
  follow the standard definition; clean-fid resizes with PIL, so expect small
  differences from its numbers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FeatureExtractor = Callable[[Tensor], Tensor]


def check_images(images: Tensor, what: str = "images") -> Tensor:
    """Validate ``[N, 3, H, W]`` float images in ``[0, 1]``; gray ``[N, 1, H, W]`` is
    replicated to RGB."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"{what} must have shape [N, 3, H, W] (or [N, 1, H, W]), got {list(images.shape)}"
        )
    if not images.dtype.is_floating_point:
        raise TypeError(f"{what} must be float in [0, 1], got {images.dtype}")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images


class RandomConvFeatures(nn.Module):
    """Deterministic random-conv features (see the module docstring).

    Args:
        seed: seed of the weights (Kaiming-normal, zero bias); the same seed gives
            the same extractor.
        size: images are resized to ``size x size`` first.
        batch_size: images per forward pass.
    """

    widths = (32, 64, 128)

    def __init__(self, seed: int = 0, size: int = 32, batch_size: int = 256) -> None:
        super().__init__()
        self.size, self.batch_size = size, batch_size
        g = torch.Generator().manual_seed(seed)
        chans = (3, *self.widths)
        self.convs = nn.ModuleList()
        for i, (cin, cout) in enumerate(itertools.pairwise(chans)):
            conv = nn.Conv2d(cin, cout, 3, stride=1 if i == 0 else 2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(
                    torch.randn(conv.weight.shape, generator=g) * (2.0 / (cin * 9)) ** 0.5
                )
                conv.bias.zero_()
            self.convs.append(conv)
        self.requires_grad_(False)
        self.eval()

    @property
    def num_features(self) -> int:
        return sum(self.widths) + 4 * self.widths[-1]

    @torch.no_grad()
    def _features(self, x: Tensor) -> Tensor:  # [n, 3, H, W] -> [n, F]
        x = F.interpolate(
            x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
        )
        x = (x - 0.5) / 0.5
        feats = []
        for conv in self.convs:
            x = F.relu(conv(x))
            feats.append(x.mean(dim=(2, 3)))
        feats.append(F.adaptive_avg_pool2d(x, 2).flatten(1))
        return torch.cat(feats, dim=1)

    def forward(self, images: Tensor) -> Tensor:
        images = check_images(images).float().cpu()
        return torch.cat(
            [
                self._features(images[i : i + self.batch_size])
                for i in range(0, len(images), self.batch_size)
            ]
        )


class TorchScriptInceptionFeatures:
    """Standard FID features from a local TorchScript Inception-v3 (see module docstring).
    Subclasses adapt other file layouts by overriding :meth:`_forward`.

    Args:
        path: the ``.pt`` TorchScript file (e.g. ``inception-2015-12-05.pt``).
        device: where to run it.
        batch_size: images per forward pass.
    """

    is_inception = True

    def __init__(
        self, path: str | Path, device: str | torch.device = "cpu", batch_size: int = 64
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"Inception weights not found: {path} (expected a TorchScript file such as "
                "inception-2015-12-05.pt; fsqkit never downloads it)"
            )
        try:
            self.model = torch.jit.load(str(path), map_location=device).eval()
        except (RuntimeError, ValueError) as err:
            first = (str(err).strip().splitlines() or [""])[0]
            raise ValueError(f"{path} is not a loadable TorchScript file: {first}") from None
        self.device, self.batch_size = torch.device(device), batch_size

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        """``[N, 3, H, W]`` float in ``[0, 1]`` -> ``[N, 2048]`` float32 (CPU)."""
        images = check_images(images).float()
        out = [
            self._forward(images[i : i + self.batch_size].to(self.device).clamp(0.0, 1.0))
            for i in range(0, len(images), self.batch_size)
        ]
        return torch.cat(out) if out else torch.empty(0, 2048)

    def _forward(self, x: Tensor) -> Tensor:
        """One batch ``[b, 3, H, W]`` in ``[0, 1]`` (on the device) -> ``[b, 2048]``."""
        x = F.interpolate(x, size=(299, 299), mode="bicubic", antialias=True, align_corners=False)
        x = (x.clamp(0, 1) * 255.0).round()
        return self.model(x, return_features=True).float().cpu()


def build_feature_extractor(
    spec: str = "random-conv", device: str | torch.device = "cpu"
) -> FeatureExtractor:
    """``"random-conv"`` (default, offline) or ``"inception:PATH"`` (local TorchScript file)."""
    if spec == "random-conv":
        return RandomConvFeatures()
    kind, _, path = spec.partition(":")
    if kind == "inception" and path:
        return TorchScriptInceptionFeatures(path, device=device)
    raise ValueError(
        f"unknown feature extractor {spec!r}; expected 'random-conv' or 'inception:PATH'"
    )
