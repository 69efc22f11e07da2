"""The panoptic target, loss, decoding and PQ work together: a tiny per-pixel
network trained with ``panoptic_loss`` on synthetic scenes beats the
all-background prediction (the check a UViM panoptic model must also pass)."""

from __future__ import annotations

import torch
from torch import nn

from fsqkit.data.panoptic import PanopticCategories
from fsqkit.metrics.panoptic import panoptic_quality
from fsqkit.uvim.tasks.panoptic_logits import decode_panoptic_logits, panoptic_loss
from fsqkit.uvim.tasks.panoptic_target import encode_panoptic
from tests.single_thread import one_thread  # noqa: F401  (autouse)

GROUND, SKY, BALL, BOX = 0, 1, 2, 3
CATS = PanopticCategories(("ground", "sky", "ball", "box"), (False, False, True, True))
COLOURS = torch.tensor([[0.4, 0.8, 0.4], [0.4, 0.6, 1.0], [0.9, 0.2, 0.2], [0.2, 0.2, 0.9]])
MAX_INSTANCES = 2


def scenes(n: int, seed: int, size: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images ``[n, 3, size, size]``, semantic and instance maps ``[n, size, size]``:
    sky above ground, one ball or box square on the ground, pixel noise."""
    g = torch.Generator().manual_seed(seed)
    sem = torch.full((n, size, size), GROUND)
    inst = torch.zeros(n, size, size, dtype=torch.int64)
    for i in range(n):
        horizon = int(torch.randint(3, 7, (), generator=g))
        sem[i, :horizon] = SKY
        side = int(torch.randint(3, 6, (), generator=g))
        top = int(torch.randint(horizon, size - side + 1, (), generator=g))
        left = int(torch.randint(0, size - side + 1, (), generator=g))
        sem[i, top : top + side, left : left + side] = int(
            torch.randint(BALL, BOX + 1, (), generator=g)
        )
        inst[i, top : top + side, left : left + side] = int(torch.randint(1, 50, (), generator=g))
    images = COLOURS[sem].permute(0, 3, 1, 2) + 0.05 * torch.randn(n, 3, size, size, generator=g)
    return images, sem, inst


def test_tiny_model_beats_all_background() -> None:
    images, sem, inst = scenes(48, seed=0)
    target = encode_panoptic(sem, inst, CATS, max_instances=MAX_INSTANCES)
    c, k = CATS.num_classes, MAX_INSTANCES + 1
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, c + k, 1),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(100):
        out = net(images)
        loss, _ = panoptic_loss(out[:, :c], out[:, c:], target, CATS)
        opt.zero_grad()
        loss.backward()
        opt.step()

    val_images, val_sem, val_inst = scenes(16, seed=1)
    with torch.no_grad():
        out = net(val_images)
    pred_sem, pred_inst = decode_panoptic_logits(out[:, :c], out[:, c:], CATS)
    model = panoptic_quality(pred_sem, pred_inst, val_sem, val_inst, CATS)
    background = torch.full_like(val_sem, GROUND)
    trivial = panoptic_quality(background, background, val_sem, val_inst, CATS)
    assert trivial.things.pq == 0.0
    assert model.things.pq > 0.5 and model.stuff.pq > 0.8
    assert model.all.pq > trivial.all.pq + 0.3
