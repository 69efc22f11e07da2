"""PatchGAN discriminator (pix2pix / VQGAN): a stack of stride-2 4x4 convs that
outputs one real/fake logit per overlapping patch.

Dimension legend: ``B`` batch, ``H, W`` image size. GroupNorm replaces the
original BatchNorm so that the discriminator has no running statistics (batch
independent, deterministic under resume and identical across DDP ranks).
"""

from __future__ import annotations

from torch import Tensor, nn


class PatchDiscriminator(nn.Module):
    """``(B, 3, H, W)`` in ``[-1, 1]`` -> patch logits ``(B, 1, H', W')``.

    Args:
        in_channels: image channels.
        channels: width of the first layer (doubled per layer, capped at 8x).
        num_layers: number of stride-2 layers (receptive field grows with it).
    """

    def __init__(self, in_channels: int = 3, channels: int = 32, num_layers: int = 2) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        ]
        c = channels
        for i in range(1, num_layers + 1):
            c_out = channels * min(2**i, 8)
            stride = 2 if i < num_layers else 1
            layers += [
                nn.Conv2d(c, c_out, 4, stride=stride, padding=1, bias=False),
                nn.GroupNorm(min(8, c_out), c_out),
                nn.LeakyReLU(0.2),
            ]
            c = c_out
        layers.append(nn.Conv2d(c, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
