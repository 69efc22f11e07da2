"""The model's side of the panoptic target: one-hot input, per-channel
cross-entropy with void ignored, decoding logits with the per-instance vote."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fsqkit.data.panoptic import PanopticCategories
from fsqkit.uvim.tasks.panoptic_logits import decode_panoptic_logits, panoptic_loss, panoptic_onehot

V = -1
GROUND, SKY, BALL, BOX = 0, 1, 2, 3
CATS = PanopticCategories(("ground", "sky", "ball", "box"), (False, False, True, True))
# semantic [[ground, ball], [void, box]], instance [[0, 1], [0, 2]]
TARGET = torch.tensor([[[[GROUND, BALL], [V, BOX]], [[0, 1], [0, 2]]]])


def logits_of(labels: torch.Tensor, n: int, scale: float = 1.0) -> torch.Tensor:
    """``[B, H, W]`` labels -> one-hot logits ``[B, n, H, W]`` times ``scale``."""
    return F.one_hot(labels.clamp(min=0), n).permute(0, 3, 1, 2).float() * scale


def test_onehot_hand_computed() -> None:
    x = panoptic_onehot(TARGET, CATS, max_instances=2)
    assert x.shape == (1, 4 + 3, 2, 2) and x.dtype == torch.float32
    assert x[0, :, 0, 0].tolist() == [1, 0, 0, 0, 1, 0, 0]  # ground, instance 0
    assert x[0, :, 0, 1].tolist() == [0, 0, 1, 0, 0, 1, 0]  # ball, instance 1
    assert x[0, :, 1, 0].tolist() == [0] * 7  # void
    assert x[0, :, 1, 1].tolist() == [0, 0, 0, 1, 0, 0, 1]  # box, instance 2


def test_loss_of_uniform_logits_is_log_c_plus_log_k() -> None:
    total, parts = panoptic_loss(torch.zeros(1, 4, 2, 2), torch.zeros(1, 3, 2, 2), TARGET, CATS)
    assert parts["loss_semantic"].item() == pytest.approx(math.log(4))
    assert parts["loss_instance"].item() == pytest.approx(math.log(3))
    assert total.item() == pytest.approx(math.log(12))


def test_loss_ignores_void_pixels() -> None:
    cls = logits_of(TARGET[:, 0], 4, 20.0)
    ins = logits_of(TARGET[:, 1], 3, 20.0)
    total, _ = panoptic_loss(cls, ins, TARGET, CATS)
    assert total.item() < 1e-6
    cls[0, :, 1, 0] = torch.tensor([0.0, 50.0, 0.0, 0.0])  # anything on the void pixel
    ins[0, :, 1, 0] = torch.tensor([0.0, 0.0, 50.0])
    assert panoptic_loss(cls, ins, TARGET, CATS)[0].item() == pytest.approx(total.item())
    void = torch.stack([torch.full((1, 2, 2), V), torch.zeros(1, 2, 2, dtype=torch.int64)], 1)
    assert panoptic_loss(cls, ins, void, CATS)[0].item() == 0.0


def test_loss_gradient_flows() -> None:
    cls = torch.zeros(1, 4, 2, 2, requires_grad=True)
    ins = torch.zeros(1, 3, 2, 2, requires_grad=True)
    panoptic_loss(cls, ins, TARGET, CATS)[0].backward()
    # d CE / d logit = (softmax - onehot) / 3 valid pixels: ground pixel, ground logit
    assert cls.grad[0, GROUND, 0, 0].item() == pytest.approx((0.25 - 1) / 3)
    assert cls.grad[0, :, 1, 0].abs().sum().item() == 0.0  # void: no gradient


def test_vote_gives_each_instance_one_class() -> None:
    # one row: instance 1 on pixels 0-2, instance 0 on pixel 3
    ins = logits_of(torch.tensor([[[1, 1, 1, 0]]]), 3)
    cls = torch.zeros(1, 4, 1, 4)
    cls[0, BALL, 0, :2] = 2.0  # pixels 0, 1 say ball (sum 4)
    cls[0, BOX, 0, 2] = 3.0  # pixel 2 says box (sum 3)
    cls[0, SKY, 0, 3] = 1.0  # instance 0 keeps its own class
    sem, inst = decode_panoptic_logits(cls, ins, CATS)
    assert sem.tolist() == [[[BALL, BALL, BALL, SKY]]]
    assert inst.tolist() == [[[1, 1, 1, 0]]]
    sem, inst = decode_panoptic_logits(cls, ins, CATS, vote=False)
    assert sem.tolist() == [[[BALL, BALL, BOX, SKY]]]  # split: a ball and a box
    assert inst.tolist() == [[[1, 1, 2, 0]]]


def test_an_instance_voting_for_stuff_joins_the_stuff_segment() -> None:
    ins = logits_of(torch.tensor([[[2, 2, 0]]]), 3)
    cls = logits_of(torch.tensor([[[GROUND, GROUND, GROUND]]]), 4)
    sem, inst = decode_panoptic_logits(cls, ins, CATS)
    assert sem.tolist() == [[[GROUND] * 3]] and inst.tolist() == [[[0, 0, 0]]]


def test_decode_without_vote_renumbers_thing_segments() -> None:
    cls = torch.tensor([[[0, 2, 2], [2, 1, 3]]])
    ins = torch.tensor([[[4, 3, 3], [0, 2, 3]]])  # predicted ids need not be canonical
    sem, inst = decode_panoptic_logits(logits_of(cls, 4), logits_of(ins, 5), CATS, vote=False)
    assert sem.tolist() == cls.tolist()
    # ball 3 first at (0,1) -> 1; ball 0 (an instance label 0 is a segment too) -> 2; box 3 -> 3
    assert inst.tolist() == [[[0, 1, 1], [2, 0, 3]]]


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match=r"class logits must have shape \[B, 4, H, W\]"):
        decode_panoptic_logits(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), CATS)
    with pytest.raises(ValueError, match="instance logits"):
        decode_panoptic_logits(torch.zeros(1, 4, 2, 2), torch.zeros(1, 3, 2, 3), CATS)
    with pytest.raises(ValueError, match=r"instance id 2, but only ids 0..1 \(max_instances=1\)"):
        panoptic_onehot(TARGET, CATS, max_instances=1)
    with pytest.raises(ValueError, match="instance id 2"):
        panoptic_loss(torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2, 2), TARGET, CATS)
    with pytest.raises(ValueError, match="does not match the logits"):
        panoptic_loss(torch.zeros(1, 4, 3, 3), torch.zeros(1, 3, 3, 3), TARGET, CATS)
    with pytest.raises(ValueError, match="needs a batch"):
        panoptic_onehot(TARGET[0], CATS, max_instances=2)
