"""A procedural 3-D scene renderer: images with exact depth, semantic and
instance maps, made in seconds, with nothing to download.

Dimension legend: ``B`` scenes, ``O`` object slots (``MAX_OBJECTS``), ``H, W``
image size, ``P = H * W`` rays.

A scene is a few analytic primitives (spheres, boxes rotated about the vertical
axis, capped vertical cylinders) resting on a checkered ground plane
(``y = 0``) in front of a back wall, seen by one pinhole camera (60° field of
view, pitched down) and lit by one directional light with Lambert shading and
hard shadows. All rays of all scenes of a chunk are cast at once (torch).

Per scene the renderer returns the RGB image, the exact metric depth (the
z-depth along the camera axis, as NYU Depth v2 stores it), a semantic class map
(:data:`SEMANTIC_CLASSES`) and an instance-id map (0 for the ground and the
wall, ``1 + slot`` for an object). Scene ``i`` is a pure function of its seed;
the ``train``, ``val`` and ``test`` splits draw seeds from disjoint ranges
(:func:`split_seed_range`): ``test`` is for the final tables only, never for
training or for choosing a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from fsqkit.data.scene_geometry import (
    INF,
    hit_boxes,
    hit_cylinders,
    hit_plane,
    hit_spheres,
    object_normals,
)

SEMANTIC_CLASSES: tuple[str, ...] = ("wall", "ground", "sphere", "box", "cylinder")
"""Semantic class ids: index in this tuple. Object type ``k`` (1, 2, 3) has class ``k + 1``."""
NONE, SPHERE, BOX, CYLINDER = 0, 1, 2, 3
MAX_OBJECTS = 4
FOV_DEGREES = 60.0
AMBIENT = 0.35
SPLIT_SEED_BASE = {"train": 0, "val": 1_000_000_000, "test": 2_000_000_000}
SPLIT_SEEDS = 1_000_000_000
"""Scene seeds per split: split ``s`` owns ``[SPLIT_SEED_BASE[s], + SPLIT_SEEDS)``."""
SEEDS_PER_RUN_SEED = 10_000_000
RUN_SEEDS = SPLIT_SEEDS // SEEDS_PER_RUN_SEED
"""Run seeds ``0 .. RUN_SEEDS - 1``; each owns ``SEEDS_PER_RUN_SEED`` scenes of every split."""
RENDER_CHUNK = 128  # scenes cast at once (bounds memory: ~P * O * 40 floats per scene)


@dataclass
class SceneSpec:
    """Parameters of ``B`` scenes (float32 tensors unless noted).

    Attributes:
        cam_height: ``(B,)`` camera height above the ground (m); the camera is at
            ``(0, cam_height, 0)`` looking along ``+z``.
        pitch: ``(B,)`` downward tilt of the camera (radians).
        wall_z: ``(B,)`` distance of the back wall (plane ``z = wall_z``).
        light: ``(B, 3)`` unit vector towards the light.
        obj_type: ``(B, O)`` int64, ``NONE``/``SPHERE``/``BOX``/``CYLINDER``.
        center: ``(B, O, 3)`` object centres.
        size: ``(B, O, 3)`` sphere ``(r, r, r)``, box half extents, cylinder
            ``(r, half height, r)``.
        yaw: ``(B, O)`` rotation of boxes about the vertical axis.
        color: ``(B, O, 3)`` albedo in ``[0, 1]``.
        striped: ``(B, O)`` bool, horizontal stripes texture.
        ground_colors: ``(B, 2, 3)`` the two checker colours of the ground.
        wall_color: ``(B, 3)``.
    """

    cam_height: Tensor
    pitch: Tensor
    wall_z: Tensor
    light: Tensor
    obj_type: Tensor
    center: Tensor
    size: Tensor
    yaw: Tensor
    color: Tensor
    striped: Tensor
    ground_colors: Tensor
    wall_color: Tensor

    def __len__(self) -> int:
        return int(self.cam_height.shape[0])

    def __getitem__(self, index: slice) -> SceneSpec:
        return SceneSpec(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def stack(specs: list[SceneSpec]) -> SceneSpec:
        return SceneSpec(
            **{f.name: torch.cat([getattr(s, f.name) for s in specs]) for f in fields(SceneSpec)}
        )


@dataclass
class SceneRender:
    """Rendered scenes: ``image (B, 3, H, W)`` float in ``[0, 1]``, ``depth
    (B, 1, H, W)`` float32 metres, ``semantic (B, H, W)`` and ``instance (B, H, W)``
    int64."""

    image: Tensor
    depth: Tensor
    semantic: Tensor
    instance: Tensor


def footprint(obj_type: int, size: np.ndarray) -> float:
    """Radius of the ground disc an object covers (for non-overlapping placement)."""
    if obj_type == BOX:
        return float(math.hypot(size[0], size[2]))
    return float(size[0])


def sample_scene(seed: int) -> SceneSpec:
    """One random scene (``B = 1``), a pure function of ``seed``."""
    rng = np.random.default_rng(seed)
    o = MAX_OBJECTS
    obj_type = np.zeros(o, np.int64)
    center = np.zeros((o, 3), np.float32)
    size = np.ones((o, 3), np.float32)
    yaw = np.zeros(o, np.float32)
    placed: list[tuple[float, float, float]] = []
    for slot in range(int(rng.integers(1, o + 1))):
        kind = int(rng.integers(1, 4))
        if kind == SPHERE:
            s = np.full(3, rng.uniform(0.3, 0.8))
        elif kind == BOX:
            s = rng.uniform(0.25, 0.6, 3)
        else:
            r = rng.uniform(0.2, 0.5)
            s = np.array([r, rng.uniform(0.3, 0.9), r])
        rad = footprint(kind, s)
        for _ in range(20):  # rejection sampling of a free spot
            z = rng.uniform(3.0, 8.0)
            x = rng.uniform(-0.45, 0.45) * z
            if all(math.hypot(x - px, z - pz) > rad + pr + 0.1 for px, pz, pr in placed):
                break
        else:
            continue
        placed.append((x, z, rad))
        obj_type[slot], size[slot] = kind, s
        center[slot] = (x, s[1], z)
        yaw[slot] = rng.uniform(0, math.pi / 2) if kind == BOX else 0.0
    elev, azim = rng.uniform(0.5, 1.2), rng.uniform(-1.2, 1.2)
    light = np.array(
        [math.cos(elev) * math.sin(azim), math.sin(elev), -math.cos(elev) * math.cos(azim)]
    )
    ground = rng.uniform(0.25, 0.75, (2, 3))
    ground[1] = ground[0] * rng.uniform(0.55, 0.8)  # a darker checker of the same hue

    def t(a, dtype=torch.float32) -> Tensor:
        return torch.as_tensor(np.asarray(a), dtype=dtype)[None]

    return SceneSpec(
        cam_height=t(rng.uniform(1.2, 2.0)),
        pitch=t(math.radians(rng.uniform(8.0, 20.0))),
        wall_z=t(rng.uniform(9.0, 12.0)),
        light=t(light),
        obj_type=t(obj_type, torch.int64),
        center=t(center),
        size=t(size),
        yaw=t(yaw),
        color=t(rng.uniform(0.15, 1.0, (o, 3))),
        striped=t(rng.random(o) < 0.3, torch.bool),
        ground_colors=t(ground),
        wall_color=t(rng.uniform(0.5, 0.95, 3)),
    )


def camera_rays(spec: SceneSpec, size: int) -> tuple[Tensor, Tensor]:
    """Origins and directions ``(B, P, 3)`` of the pixel-centre rays. Directions
    have a unit component along the camera axis, so ``t`` *is* the z-depth."""
    b = len(spec)
    f = (size / 2) / math.tan(math.radians(FOV_DEGREES) / 2)
    c = (torch.arange(size, dtype=torch.float32) + 0.5 - size / 2) / f
    v, u = torch.meshgrid(c, c, indexing="ij")  # v: down, u: right
    u, v = u.reshape(1, -1), v.reshape(1, -1)  # (1, P)
    cp, sp = spec.pitch.cos()[:, None], spec.pitch.sin()[:, None]  # (B, 1)
    # right = (1, 0, 0), up = (0, cos p, sin p), forward = (0, -sin p, cos p)
    d = torch.stack(
        [u.expand(b, -1), -v * cp - sp, -v * sp + cp], -1
    )  # (B, P, 3) = u*right - v*up + forward
    o = torch.zeros(b, 1, 3)
    o[:, 0, 1] = spec.cam_height
    return o.expand_as(d), d


def object_hits(spec: SceneSpec, o: Tensor, d: Tensor) -> Tensor:
    """Ray parameter ``t (B, P, O)`` of each object slot (``inf``: miss or empty
    slot). Only the (scene, slot) pairs holding an object of a type are cast
    against that type's intersection routine."""
    t = torch.full((*d.shape[:2], spec.obj_type.shape[1]), INF)
    for kind in (SPHERE, BOX, CYLINDER):
        bi, oi = (spec.obj_type == kind).nonzero(as_tuple=True)
        if not len(bi):
            continue
        c, s = spec.center[bi, oi], spec.size[bi, oi]
        if kind == SPHERE:
            tk = hit_spheres(o[bi], d[bi], c, s[:, 0])
        elif kind == BOX:
            tk = hit_boxes(o[bi], d[bi], c, s, spec.yaw[bi, oi])
        else:
            tk = hit_cylinders(o[bi], d[bi], c, s[:, 0], s[:, 1])
        t[bi, :, oi] = tk
    return t


def _render_chunk(spec: SceneSpec, size: int) -> SceneRender:
    b, p = len(spec), size * size
    o, d = camera_rays(spec, size)
    t_min, slot = object_hits(spec, o, d).min(-1)  # (B, P)
    t_ground = hit_plane(o, d, 1, torch.zeros(b))
    t_wall = hit_plane(o, d, 2, spec.wall_z)
    # Semantic id per ray: wall (0), ground (1) or the object's class.
    obj_class = (spec.obj_type + 1).gather(1, slot)  # (B, P)
    depth = torch.minimum(torch.minimum(t_min, t_ground), t_wall)
    is_obj = t_min <= torch.minimum(t_ground, t_wall)
    is_ground = ~is_obj & (t_ground <= t_wall)
    semantic = torch.where(is_obj, obj_class, is_ground.long())
    instance = torch.where(is_obj, slot + 1, torch.zeros_like(slot))

    point = o + depth[..., None] * d  # (B, P, 3)

    def per_ray(x: Tensor) -> Tensor:  # (B, O, ...) -> the hit slot's value (B, P, ...)
        idx = slot.reshape(b, p, *([1] * (x.ndim - 2))).expand(b, p, *x.shape[2:])
        return x.gather(1, idx)

    normal = object_normals(
        point, per_ray(spec.obj_type), per_ray(spec.center), per_ray(spec.size), per_ray(spec.yaw)
    )
    normal = torch.where(is_obj[..., None], normal, torch.zeros_like(normal))
    normal[..., 1] += is_ground.float()
    normal[..., 2] -= (~is_obj & ~is_ground).float()

    # Albedo: object colour (optionally striped), checkered ground, plain wall.
    color = per_ray(spec.color)
    striped = spec.striped.gather(1, slot) & is_obj
    stripe = (torch.floor(point[..., 1] * 6.0) % 2 == 0).float()
    color = torch.where(striped[..., None], color * (0.55 + 0.45 * stripe[..., None]), color)
    checker = ((torch.floor(point[..., 0]) + torch.floor(point[..., 2])) % 2).long()
    ground_c = spec.ground_colors.gather(1, checker[..., None].expand(b, p, 3))
    wall_c = spec.wall_color[:, None, :].expand(b, p, 3)
    albedo = torch.where(
        is_obj[..., None], color, torch.where(is_ground[..., None], ground_c, wall_c)
    )

    # Lambert shading with hard shadows cast by the objects (directional light).
    light = spec.light[:, None, :]
    lambert = (normal * light).sum(-1).clamp_min(0.0)
    t_shadow = object_hits(spec, point + 1e-3 * normal, light.expand_as(point).contiguous())
    lit = (t_shadow.amin(-1) == INF).float()
    rgb = albedo * (AMBIENT + (1 - AMBIENT) * lambert * lit)[..., None]

    def grid(x: Tensor) -> Tensor:  # (B, P, ...) -> (B, ..., H, W)
        return x.reshape(b, size, size, -1).permute(0, 3, 1, 2)

    return SceneRender(
        image=grid(rgb.clamp(0, 1)).contiguous(),
        depth=grid(depth).contiguous(),
        semantic=semantic.reshape(b, size, size),
        instance=instance.reshape(b, size, size),
    )


def render_scenes(spec: SceneSpec, size: int = 32) -> SceneRender:
    """Render every scene of ``spec`` at ``size x size`` pixels."""
    if not isinstance(size, int) or size < 2:
        raise ValueError(f"scene image size must be an integer >= 2, got {size!r}")
    parts = [
        _render_chunk(spec[i : i + RENDER_CHUNK], size) for i in range(0, len(spec), RENDER_CHUNK)
    ]
    return SceneRender(
        *(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(SceneRender))
    )


def split_seed_range(split: str, seed: int = 0) -> range:
    """The scene seeds run seed ``seed`` may draw for ``split``: a block of
    ``SEEDS_PER_RUN_SEED`` inside the split's own ``SPLIT_SEEDS``, so the splits
    (and the run seeds) never share a scene, whatever the counts."""
    if split not in SPLIT_SEED_BASE:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEED_BASE)}, got {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < RUN_SEEDS:
        raise ValueError(f"scene run seed must be an integer in [0, {RUN_SEEDS}), got {seed!r}")
    start = SPLIT_SEED_BASE[split] + seed * SEEDS_PER_RUN_SEED
    return range(start, start + SEEDS_PER_RUN_SEED)


def scene_seeds(split: str, num_scenes: int, seed: int = 0) -> list[int]:
    """Seeds of the ``split``'s first ``num_scenes`` scenes (the start of
    :func:`split_seed_range`)."""
    seeds = split_seed_range(split, seed)
    if not 1 <= num_scenes <= len(seeds):
        raise ValueError(f"num_scenes must be in [1, {len(seeds)}], got {num_scenes}")
    return list(seeds[:num_scenes])


def render_split(split: str, num_scenes: int, size: int = 32, seed: int = 0) -> SceneRender:
    """Render the ``num_scenes`` scenes of ``split`` (deterministic for ``seed``)."""
    spec = SceneSpec.stack([sample_scene(s) for s in scene_seeds(split, num_scenes, seed)])
    return render_scenes(spec, size)
