"""Tokenizer losses: reconstruction, PatchGAN hinge loss, the R1 gradient
penalty and VQGAN's adaptive adversarial weight.

Dimension legend: ``B`` batch, ``H, W`` image size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

RECON_LOSSES = ("l1", "l2", "l1+l2")


def reconstruction_loss(recon: Tensor, target: Tensor, kind: str = "l2") -> Tensor:
    """Mean L1, L2 (MSE) or their sum between ``(B, 3, H, W)`` tensors."""
    if kind == "l1":
        return F.l1_loss(recon, target)
    if kind == "l2":
        return F.mse_loss(recon, target)
    if kind == "l1+l2":
        return F.l1_loss(recon, target) + F.mse_loss(recon, target)
    raise ValueError(f"unknown reconstruction loss {kind!r}; expected one of {RECON_LOSSES}")


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Discriminator hinge loss: ``mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))``, halved."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def r1_penalty(logits_real: Tensor, real: Tensor) -> Tensor:
    """R1 (Mescheder et al., 2018): ``mean_B ||d D(x) / d x||^2`` on real images
    ``x`` (``real`` must require grad and ``logits_real = D(real)``); the caller
    multiplies by ``gamma / 2``."""
    (grad,) = torch.autograd.grad(logits_real.sum(), real, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()


def hinge_g_loss(logits_fake: Tensor) -> Tensor:
    """Generator hinge loss: ``-mean(D(G(z)))``."""
    return -logits_fake.mean()


def adaptive_weight(
    nll_loss: Tensor, g_loss: Tensor, last_layer: Tensor, max_weight: float = 1e4
) -> Tensor:
    """VQGAN's balance between reconstruction and adversarial gradients at the
    decoder's last layer: ``||grad nll|| / (||grad g|| + 1e-4)``, clamped to
    ``[0, max_weight]`` and detached (it scales, it is not trained)."""
    nll_grads = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grads = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    w = torch.norm(nll_grads) / (torch.norm(g_grads) + 1e-4)
    return w.clamp(0.0, max_weight).detach()
