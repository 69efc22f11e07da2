"""Ray intersections with the analytic primitives of the scene renderer.

Dimension legend: ``N`` (ray bundle, object) pairs, ``P`` rays per bundle.

The ``hit_*`` functions take ray origins ``o`` and directions ``d`` ``(N, P, 3)``
(directions need not be unit vectors: ``t`` is measured in units of ``d``) and
one object per bundle (parameters ``(N, ...)``), and return the ray parameter
``t`` ``(N, P)`` of the first hit with ``t > EPS`` (``inf`` for a miss).
:func:`object_normals` gives the unit normal at a hit point. The world is
y-up; the ground is the plane ``y = 0``.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-4
INF = float("inf")


def _safe(x: Tensor) -> Tensor:
    """``x`` with near-zero entries replaced by ``1e-9`` (for divisions)."""
    return torch.where(x.abs() < 1e-9, torch.full_like(x, 1e-9), x)


def _nearest_root(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """Smallest root ``> EPS`` of ``a t^2 + 2 b t + c`` (``inf`` if none)."""
    disc = b * b - a * c
    sq = disc.clamp_min(0).sqrt()
    a = a.clamp_min(1e-12)
    t0, t1 = (-b - sq) / a, (-b + sq) / a
    t = torch.where(t0 > EPS, t0, t1)
    return t.masked_fill_((disc < 0) | (t <= EPS), INF)


def hit_spheres(o: Tensor, d: Tensor, center: Tensor, radius: Tensor) -> Tensor:
    """Spheres of ``center (N, 3)`` and ``radius (N,)``."""
    oc = o - center[:, None]
    a = (d * d).sum(-1)
    b = (d * oc).sum(-1)
    c = (oc * oc).sum(-1) - radius[:, None] ** 2
    return _nearest_root(a, b, c)


def yaw_rotate(v: Tensor, yaw: Tensor) -> Tensor:
    """Rotate ``v (..., 3)`` about the y axis by ``yaw`` radians (broadcast to ``v[..., 0]``)."""
    cos, sin = yaw.cos(), yaw.sin()
    x, y, z = v.unbind(-1)
    return torch.stack([cos * x + sin * z, y, -sin * x + cos * z], -1)


def hit_boxes(o: Tensor, d: Tensor, center: Tensor, half: Tensor, yaw: Tensor) -> Tensor:
    """Boxes of ``center (N, 3)``, half extents ``half (N, 3)``, rotated by ``yaw (N,)``
    about the vertical axis (slab test in the box frame)."""
    back = -yaw[:, None]  # world = R(yaw) local + center  =>  local = R(-yaw)(world - center)
    lo = yaw_rotate(o - center[:, None], back)
    ld = _safe(yaw_rotate(d, back))
    h = half[:, None]
    t1, t2 = (-h - lo) / ld, (h - lo) / ld
    t_near = torch.minimum(t1, t2).amax(-1)
    t_far = torch.maximum(t1, t2).amin(-1)
    t = torch.where(t_near > EPS, t_near, t_far)  # origin inside: the exit
    return t.masked_fill_((t_far < t_near) | (t <= EPS), INF)


def hit_cylinders(
    o: Tensor, d: Tensor, center: Tensor, radius: Tensor, half_height: Tensor
) -> Tensor:
    """Vertical capped cylinders of ``center (N, 3)``, ``radius`` and ``half_height`` ``(N,)``."""
    oc = o - center[:, None]
    r, hh = radius[:, None], half_height[:, None]
    dx, dy, dz = d.unbind(-1)
    ox, oy, oz = oc.unbind(-1)
    t_side = _nearest_root(dx * dx + dz * dz, dx * ox + dz * oz, ox * ox + oz * oz - r * r)
    y_side = oy + t_side.nan_to_num(posinf=0.0) * dy
    t_side = t_side.masked_fill_(y_side.abs() > hh, INF)
    dy = _safe(dy)
    t = t_side
    for sign in (1.0, -1.0):
        t_cap = (sign * hh - oy) / dy
        px, pz = ox + t_cap * dx, oz + t_cap * dz
        t_cap = t_cap.masked_fill_((t_cap <= EPS) | (px * px + pz * pz > r * r), INF)
        t = torch.minimum(t, t_cap)
    return t


def hit_plane(o: Tensor, d: Tensor, axis: int, offset: Tensor) -> Tensor:
    """``t (B, P)`` of the plane ``x[axis] = offset`` (``offset (B,)``); ``inf`` when
    parallel or behind."""
    t = (offset[:, None] - o[..., axis]) / _safe(d[..., axis])
    return t.masked_fill_(t <= EPS, INF)


def object_normals(
    point: Tensor, kind: Tensor, center: Tensor, size: Tensor, yaw: Tensor
) -> Tensor:
    """Unit normals ``(..., 3)`` at surface points ``(..., 3)`` of objects of type
    ``kind (...)`` (1 sphere, 2 box, 3 cylinder) with per-point ``center``, ``size``
    ``(..., 3)`` and ``yaw (...)``."""
    rel = point - center
    sphere = rel / size[..., :1]
    local = yaw_rotate(rel, -yaw) / size
    axis = local.abs().argmax(-1, keepdim=True)
    box = yaw_rotate(torch.zeros_like(local).scatter_(-1, axis, local.gather(-1, axis).sign()), yaw)
    on_cap = local[..., 1].abs() > 1 - 1e-4
    side = rel * torch.tensor([1.0, 0.0, 1.0]) / size[..., :1]
    cap = torch.zeros_like(rel)
    cap[..., 1] = rel[..., 1].sign()
    cyl = torch.where(on_cap[..., None], cap, side)
    k = kind[..., None]
    return torch.where(k == 1, sphere, torch.where(k == 2, box, cyl))
