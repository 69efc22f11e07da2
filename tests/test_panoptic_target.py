"""UViM's canonical 2-channel panoptic target: hand-computed encodings, the
invariance to input ids, the overflow rule and the decode round trip."""

from __future__ import annotations

import pytest
import torch

from fsqkit.data.panoptic import PanopticCategories
from fsqkit.uvim.tasks.panoptic_target import decode_panoptic, encode_panoptic

V = -1  # void
CATS = PanopticCategories(("ground", "sky", "ball", "box"), (False, False, True, True))

SEM = torch.tensor(
    [
        [1, 1, 1, 1],
        [0, 3, 3, 2],
        [2, 2, 0, 2],
        [V, 0, 0, 0],
    ]
)
INST = torch.tensor(
    [
        [5, 6, 7, 8],  # sky: ids ignored
        [0, 9, 9, 4],  # box 9, ball 4
        [7, 7, 0, 4],  # ball 7
        [3, 0, 0, 0],  # void
    ]
)
# first pixels in raster order: box 9 at (1,1) -> 1, ball 4 at (1,3) -> 2, ball 7 at (2,0) -> 3
EXPECTED_INST = torch.tensor(
    [
        [0, 0, 0, 0],
        [0, 1, 1, 2],
        [3, 3, 0, 2],
        [0, 0, 0, 0],
    ]
)


def test_encode_hand_computed() -> None:
    target = encode_panoptic(SEM, INST, CATS, max_instances=5)
    assert target.shape == (2, 4, 4) and target.dtype == torch.int64
    assert torch.equal(target[0], SEM)
    assert torch.equal(target[1], EXPECTED_INST)


def test_all_void_image() -> None:
    void = torch.full((2, 3), V)
    target = encode_panoptic(void, torch.ones(2, 3, dtype=torch.int64), CATS, max_instances=1)
    assert torch.equal(target[0], void) and not target[1].any()


def test_same_id_in_two_thing_classes_is_two_instances() -> None:
    sem = torch.tensor([[2, 2, 3, 3]])
    inst = torch.tensor([[1, 1, 1, 1]])
    assert encode_panoptic(sem, inst, CATS, max_instances=4)[1].tolist() == [[1, 1, 2, 2]]


def test_canonical_order_ignores_the_input_ids() -> None:
    g = torch.Generator().manual_seed(0)
    sem = torch.randint(-1, 4, (3, 9, 9), generator=g)
    inst = torch.randint(0, 6, (3, 9, 9), generator=g)
    target = encode_panoptic(sem, inst, CATS, max_instances=100)
    perm = torch.randperm(6, generator=g) * 10 + 3  # new, distinct ids
    assert torch.equal(encode_panoptic(sem, perm[inst], CATS, max_instances=100), target)


def test_decode_inverts_encode_and_keeps_the_segments() -> None:
    g = torch.Generator().manual_seed(1)
    sem = torch.randint(-1, 4, (2, 8, 8), generator=g)
    inst = torch.randint(0, 4, (2, 8, 8), generator=g)
    target = encode_panoptic(sem, inst, CATS, max_instances=64)
    assert target.shape == (2, 2, 8, 8)
    dec_sem, dec_inst = decode_panoptic(target, CATS)
    assert torch.equal(dec_sem, target[:, 0]) and torch.equal(dec_inst, target[:, 1])
    # the same partition into thing segments as the input
    thing = CATS.thing_mask[sem.clamp(min=0)] & (sem >= 0)
    for b in range(2):
        src = {(int(s), int(i)) for s, i in zip(sem[b][thing[b]], inst[b][thing[b]])}
        pairs = {
            (int(s), int(i), int(d))
            for s, i, d in zip(sem[b][thing[b]], inst[b][thing[b]], dec_inst[b][thing[b]])
        }
        assert len(pairs) == len(src)  # each source segment maps to one new id ...
        assert len({d for _, _, d in pairs}) == len(src)  # ... and ids are distinct


def test_overflow_keeps_the_largest_instances() -> None:
    sem = torch.tensor([[2, 2, 0, 2], [3, 0, 2, 2], [0, 0, 2, 2]])
    inst = torch.tensor([[1, 1, 0, 2], [5, 0, 3, 3], [0, 0, 3, 3]])
    # areas: ball1 = 2 (first at 0), ball2 = 1 (at 3), box5 = 1 (at 4), ball3 = 4 (at 6)
    sem_out, inst_out = encode_panoptic(sem, inst, CATS, max_instances=3)
    # ball2 and box5 tie at area 1: the earlier first pixel (ball2) stays, box5 -> void
    assert sem_out.tolist() == [[2, 2, 0, 2], [V, 0, 2, 2], [0, 0, 2, 2]]
    assert inst_out.tolist() == [[1, 1, 0, 2], [0, 0, 3, 3], [0, 0, 3, 3]]
    with pytest.raises(ValueError, match="4 thing instances, more than max_instances=3"):
        encode_panoptic(sem, inst, CATS, max_instances=3, overflow="error")


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="label 4 out of range"):
        encode_panoptic(
            torch.full((2, 2), 4), torch.zeros(2, 2, dtype=torch.int64), CATS, max_instances=2
        )
    with pytest.raises(ValueError, match="differ in shape"):
        encode_panoptic(SEM, INST[:2], CATS, max_instances=2)
    with pytest.raises(ValueError, match="max_instances must be a positive integer"):
        encode_panoptic(SEM, INST, CATS, max_instances=0)
    with pytest.raises(ValueError, match="overflow must be one of"):
        encode_panoptic(SEM, INST, CATS, max_instances=2, overflow="merge")
    with pytest.raises(ValueError, match=r"\[2, H, W\] or \[B, 2, H, W\]"):
        decode_panoptic(torch.zeros(3, 4, 4, dtype=torch.int64), CATS)
    with pytest.raises(ValueError, match="negative id -1"):
        decode_panoptic(torch.stack([SEM, INST - 1]), CATS)
