"""Optional perceptual loss from local VGG16 weights (never downloaded).

An LPIPS-style distance with uniform layer weights: ImageNet-normalised inputs
go through VGG16's convolutional trunk; at relu1_2, relu2_2, relu3_3, relu4_3
and relu5_3 the features are unit-normalised over channels, and the squared
differences are averaged over space and summed over layers. (LPIPS's learned
per-channel weights are not included.)

Weights: a file (``.pth``/``.pt`` via ``torch.load(weights_only=True)`` or
``.safetensors``) holding torchvision's ``vgg16().state_dict()`` or just its
``features.*`` entries.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# torchvision vgg16 "features" layout: channel count per conv, "M" = max-pool.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# Indices (in the torchvision Sequential) of the ReLUs whose outputs are compared.
_TAPS = (3, 8, 15, 22, 29)
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)

DISABLED_MESSAGE = (
    "perceptual loss: off (no local VGG16 weights given; pass --perceptual-weights "
    "PATH to a torchvision vgg16 state dict to enable it; fsqkit never downloads weights)"
)


def _vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    c = 3
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.ReLU(inplace=False)]
            c = int(v)
    return nn.Sequential(*layers)


def _load_state(path: str) -> dict[str, Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"perceptual loss: weights file {path!r} does not exist")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


class PerceptualLoss(nn.Module):
    """``loss(x, y)`` for ``(B, 3, H, W)`` images in ``[-1, 1]``; frozen VGG16."""

    def __init__(self, weights_path: str) -> None:
        super().__init__()
        state = _load_state(weights_path)
        feats = {
            k.removeprefix("features."): v
            for k, v in state.items()
            if not k.startswith("classifier.")
        }
        self.features = _vgg16_features()
        try:
            self.features.load_state_dict(feats)
        except RuntimeError as err:
            raise ValueError(
                f"perceptual loss: {weights_path!r} is not a torchvision VGG16 state dict: {err}"
            ) from None
        self.features.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.features.eval()  # always frozen
        return self

    def _taps(self, x: Tensor) -> list[Tensor]:
        x = ((x + 1.0) / 2.0 - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                out.append(F.normalize(x, dim=1, eps=1e-10))
            if i >= _TAPS[-1]:
                break
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return sum((a - b).pow(2).sum(1).mean() for a, b in zip(self._taps(x), self._taps(y)))  # type: ignore[return-value]
