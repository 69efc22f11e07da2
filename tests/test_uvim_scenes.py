"""The procedural scene renderer: analytic depth, maps that agree with the
geometry, determinism and split separation."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from fsqkit.data.scenes import (
    BOX,
    CYLINDER,
    FOV_DEGREES,
    MAX_OBJECTS,
    NONE,
    RUN_SEEDS,
    SEEDS_PER_RUN_SEED,
    SEMANTIC_CLASSES,
    SPHERE,
    SPLIT_SEED_BASE,
    SPLIT_SEEDS,
    SceneSpec,
    render_scenes,
    render_split,
    sample_scene,
    scene_seeds,
    split_seed_range,
)


def one_object_scene(kind: int, center, size, pitch: float = 0.0, cam_height: float = 1.0, yaw=0.0):
    """A scene with one object in slot 0 and a far wall."""
    spec = sample_scene(0)
    o = MAX_OBJECTS
    obj_type = torch.full((1, o), NONE)
    obj_type[0, 0] = kind
    c = torch.zeros(1, o, 3)
    c[0, 0] = torch.tensor(center)
    s = torch.ones(1, o, 3)
    s[0, 0] = torch.tensor(size)
    return SceneSpec(
        cam_height=torch.tensor([cam_height]),
        pitch=torch.tensor([pitch]),
        wall_z=torch.tensor([20.0]),
        light=torch.tensor([[0.0, 1.0, 0.0]]),
        obj_type=obj_type,
        center=c,
        size=s,
        yaw=torch.full((1, o), float(yaw)),
        color=spec.color,
        striped=torch.zeros(1, o, dtype=torch.bool),
        ground_colors=spec.ground_colors,
        wall_color=spec.wall_color,
    )


def pixel_ray(i: int, j: int, size: int, pitch: float):
    """Camera-frame (u, v) of pixel (i, j) and its world direction (z-component 1 along the axis)."""
    f = (size / 2) / math.tan(math.radians(FOV_DEGREES) / 2)
    u, v = (j + 0.5 - size / 2) / f, (i + 0.5 - size / 2) / f
    d = (u, -v * math.cos(pitch) - math.sin(pitch), -v * math.sin(pitch) + math.cos(pitch))
    return d


def test_sphere_depth_is_analytic():
    # Camera at the sphere centre's height, looking straight at it: the centre ray
    # hits at z0 - r; an off-centre pixel at the root of the ray-sphere quadratic.
    z0, r, size = 6.0, 1.0, 32
    out = render_scenes(one_object_scene(SPHERE, (0.0, 1.0, z0), (r, r, r)), size)
    for i, j in [(16, 16), (15, 17), (13, 14)]:
        d = pixel_ray(i, j, size, 0.0)
        o = (0.0, 1.0, 0.0)
        oc = [o[k] - (0.0, 1.0, z0)[k] for k in range(3)]
        a = sum(x * x for x in d)
        b = sum(d[k] * oc[k] for k in range(3))
        c = sum(x * x for x in oc) - r * r
        t = (-b - math.sqrt(b * b - a * c)) / a
        assert out.depth[0, 0, i, j].item() == pytest.approx(t, rel=1e-5)
        assert out.semantic[0, i, j].item() == SEMANTIC_CLASSES.index("sphere")
        assert out.instance[0, i, j].item() == 1


def test_ground_depth_is_analytic():
    pitch, h, size = math.radians(15.0), 1.5, 32
    out = render_scenes(one_object_scene(NONE, (0, 0, 0), (1, 1, 1), pitch, h), size)
    for i in (24, 28, 31):
        d = pixel_ray(i, 5, size, pitch)
        t = h / -d[1]  # y(t) = h + t * d_y = 0; t is the z-depth (unit axis component)
        assert out.depth[0, 0, i, 5].item() == pytest.approx(t, rel=1e-5)
        assert out.semantic[0, i, 5].item() == SEMANTIC_CLASSES.index("ground")
        assert out.instance[0, i, 5].item() == 0
    # Above the horizon: the wall, at depth wall_z along the (level) camera axis... pitched:
    d = pixel_ray(0, 16, size, pitch)
    assert out.semantic[0, 0, 16].item() == SEMANTIC_CLASSES.index("wall")
    assert out.depth[0, 0, 0, 16].item() == pytest.approx(20.0 / d[2], rel=1e-5)


@pytest.mark.parametrize(
    ("kind", "center", "size", "front"),
    [
        (BOX, (0.0, 0.5, 5.0), (0.5, 0.5, 0.5), 4.5),
        (CYLINDER, (0.0, 0.7, 5.0), (0.4, 0.7, 0.4), 4.6),
    ],
)
def test_box_and_cylinder_front_faces(kind, center, size, front):
    out = render_scenes(one_object_scene(kind, center, size, 0.0, center[1]), 32)
    # The centre ray meets the front face (box: z = 4.5; cylinder: z = 5 - r).
    assert out.depth[0, 0, 16, 16].item() == pytest.approx(front + 0.0, abs=0.02)
    cls = "box" if kind == BOX else "cylinder"
    assert out.semantic[0, 16, 16].item() == SEMANTIC_CLASSES.index(cls)


def test_maps_agree_with_geometry():
    out = render_split("val", 64, 32, seed=3)
    sem, inst, depth = out.semantic, out.instance, out.depth[:, 0]
    is_obj = sem >= 2
    assert torch.equal(is_obj, inst > 0)  # instances exactly on object pixels
    assert (depth > 0).all() and torch.isfinite(depth).all()
    assert out.image.min() >= 0 and out.image.max() <= 1
    # Every instance id has one semantic class; ids stay within the object slots.
    for b in range(8):
        for k in inst[b].unique().tolist():
            if k:
                assert len(sem[b][inst[b] == k].unique()) == 1
                assert k <= MAX_OBJECTS


def test_deterministic_and_splits_disjoint():
    a, b = render_split("train", 6, 16, seed=1), render_split("train", 6, 16, seed=1)
    assert torch.equal(a.image, b.image) and torch.equal(a.depth, b.depth)
    c = render_split("train", 6, 16, seed=2)
    assert not torch.equal(a.image, c.image)
    assert not set(scene_seeds("train", 1000)) & set(scene_seeds("val", 1000))
    # A scene does not depend on the batch it is rendered in.
    assert torch.equal(render_split("train", 2, 16, seed=1).depth, a.depth[:2])


def test_test_split_is_disjoint_by_construction():
    """Every (split, run seed) owns a block of seeds that no other split's block
    touches, for every allowed run seed and count: the test scenes are never
    train or val scenes, whatever a run asks for."""
    blocks = [
        (split, seed, split_seed_range(split, seed))
        for split in SPLIT_SEED_BASE
        for seed in range(RUN_SEEDS)
    ]
    assert len(blocks) == 3 * RUN_SEEDS and RUN_SEEDS * SEEDS_PER_RUN_SEED == SPLIT_SEEDS
    spans = sorted((r.start, r.stop, split) for split, _, r in blocks)
    for (_, stop, _), (start, _, _) in itertools.pairwise(spans):
        assert stop <= start  # no two blocks overlap
    for split, _, r in blocks:  # each block inside its split's own range
        base = SPLIT_SEED_BASE[split]
        assert base <= r.start and r.stop <= base + SPLIT_SEEDS
    # the counts a run can ask for stay inside its block
    assert (
        scene_seeds("test", SEEDS_PER_RUN_SEED, RUN_SEEDS - 1)[-1]
        == (split_seed_range("test", RUN_SEEDS - 1)[-1])
    )
    for bad in (dict(seed=-1), dict(seed=RUN_SEEDS), dict(seed=1.0), dict(num=0),
                dict(num=SEEDS_PER_RUN_SEED + 1)):  # fmt: skip
        with pytest.raises(ValueError, match=r"seed|num_scenes"):
            scene_seeds("test", bad.get("num", 3), bad.get("seed", 0))
    # and the scenes differ: no test image is a train or val image
    test = render_split("test", 64, 16).image.flatten(1)
    for split in ("train", "val"):
        other = render_split(split, 64, 16).image.flatten(1)
        assert not (torch.cdist(test, other) == 0).any()


def test_dense_test_split_only_for_scenes():
    from fsqkit.data.dense import build_dense_dataset

    ds = build_dense_dataset("scenes", "test", image_size=16, num=4)
    assert ds.name == "scenes/test" and len(ds) == 4 and ds.semantic is not None
    assert torch.equal(ds.images, (render_split("test", 4, 16).image * 255).round().byte())
    for spec in ("embedded", "pairs:/nowhere"):
        with pytest.raises(ValueError, match="no 'test' split"):
            build_dense_dataset(spec, "test", num=4)
    with pytest.raises(ValueError, match="split must be one of"):
        build_dense_dataset("scenes", "holdout", num=4)


def test_bad_inputs():
    with pytest.raises(ValueError, match="split"):
        scene_seeds("holdout", 3)
    with pytest.raises(ValueError, match="size"):
        render_scenes(sample_scene(0), 1)
