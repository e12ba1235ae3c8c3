"""Pulmonary vessel and airway trees for the phantom: random bifurcating tubes, rasterised with partial volume.

Why hand-rolled: no library grows anatomical trees; the trees are pruned at the lung boundary, so vessels are
dense near the hila and fade towards the pleura, and the proximal bronchi run beside their arteries.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cosingan_monai.phantom.anatomy import HILUM_X, Grid, Scene, Tissue

Segment = tuple[np.ndarray, np.ndarray, float]  # p0 (mm), p1 (mm), radius (mm)
MAX_BRANCHES = 1500  # per tree; breadth-first growth, so the cap trims the finest generation evenly


def raster_segments(grid: Grid, segs: list[Segment], out: np.ndarray) -> None:
    """Max-accumulate into `out` each tube's partial-volume fraction (0..1), only within its bounding box.

    A voxel's fraction is the tube's anti-aliased in-plane occupancy averaged over sub-planes spread across the
    slice thickness, so a thick slice dilutes a thin vessel instead of showing it at full density over its whole
    z range (which made healthy lung far denser than real lung in thick-slice phantoms).
    """
    xs, ys, zs = grid.axis(0), grid.axis(1), grid.axis(2)
    sp, sz = grid.sp, grid.sz
    n_sub = int(np.clip(math.ceil(sz / sp), 1, 12))
    offsets = ((np.arange(n_sub) + 0.5) / n_sub * sz - 0.5 * sz).astype(np.float32)  # sub-planes, last axis
    for p0, p1, r in segs:
        margin = r + sp + np.array([0, 0, 0.5 * sz])
        i0, i1 = grid.index_box(np.minimum(p0, p1) - margin, np.maximum(p0, p1) + margin)
        if np.any(i1 <= i0):
            continue
        # Python floats keep the arithmetic in the axes' float32 (a float64 scalar would promote every array).
        (ax, ay, az), (dx, dy, dz) = (float(v) for v in p0), (float(v) for v in p1 - p0)
        px = xs[i0[0] : i1[0], None, None, None] - ax
        py = ys[None, i0[1] : i1[1], None, None] - ay
        pz = zs[None, None, i0[2] : i1[2], None] - az + offsets
        inv_dd = 1.0 / max(dx * dx + dy * dy + dz * dz, 1e-6)
        s = np.clip((px * dx + py * dy) * inv_dd + pz * (dz * inv_dd), 0.0, 1.0)
        dist = np.sqrt((px - s * dx) ** 2 + (py - s * dy) ** 2 + (pz - s * dz) ** 2)
        frac = np.clip((r - dist) * (1.0 / sp) + 0.5, 0.0, 1.0).mean(axis=-1)
        view = out[i0[0] : i1[0], i0[1] : i1[1], i0[2] : i1[2]]
        np.maximum(view, frac, out=view)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3-vector cross product (np.cross is ~20x slower on single vectors)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _rotate(v: np.ndarray, axis: np.ndarray, ang: float) -> np.ndarray:
    """Rodrigues rotation of v about a unit axis."""
    return v * math.cos(ang) + _cross(axis, v) * math.sin(ang) + axis * (axis @ v) * (1 - math.cos(ang))


@dataclass
class Branch:
    """One tube of a tree; `side` is a unit normal giving where its bronchus runs."""

    p0: np.ndarray
    p1: np.ndarray
    r: float
    gen: int
    side: np.ndarray


def _random_normal(rng: np.random.Generator, d: np.ndarray) -> np.ndarray:
    """A random unit vector perpendicular to d."""
    n = _cross(d, rng.standard_normal(3))
    return n / (np.linalg.norm(n) + 1e-9)


def grow_tree(
    rng: np.random.Generator,
    root: np.ndarray,
    dirs: list[np.ndarray],
    r0: float,
    length0: float,
    inside: Callable[[np.ndarray], bool],
    r_min: float,
) -> list[Branch]:
    """A random bifurcating tree from `root` along `dirs`, steered or pruned where it would leave the lungs."""

    def fits(p: np.ndarray, d: np.ndarray, length: float) -> np.ndarray | None:
        end = p + d * length
        return end if inside(end) and inside(p + 0.5 * d * length) else None

    queue = deque((root, d / np.linalg.norm(d), r0, length0, 0, d / np.linalg.norm(d)) for d in dirs)
    out: list[Branch] = []
    while queue and len(out) < MAX_BRANCHES:
        p, d, r, length, gen, parent = queue.popleft()
        if gen == 0:  # trunks start in the hilum: stretch them until they reach lung
            end = next((p + d * (length + e) for e in range(0, 65, 5) if inside(p + d * (length + e))), p + d * length)
        else:
            end = fits(p, d, length)
            for _ in range(3):  # steer: other branching directions before giving up
                if end is not None:
                    break
                d = _rotate(parent, _random_normal(rng, parent), math.radians(rng.uniform(10, 50)))
                end = fits(p, d, length)
            if end is None:
                end = fits(p, d, 0.5 * length)
            if end is None:
                continue
        n = _random_normal(rng, d)
        out.append(Branch(p, end, r, gen, n))
        if r * 0.74 < r_min:
            continue
        for sign in (1.0, -1.0):
            child = _rotate(d, n, sign * math.radians(rng.uniform(18, 42)))
            queue.append((end, child, r * rng.uniform(0.7, 0.8), length * rng.uniform(0.74, 0.88), gen + 1, d))
    return out


def paint_trees(s: Scene, rng: np.random.Generator) -> list[Segment]:
    """Paint pulmonary arteries (from the hila), veins (to the left atrium) and bronchial walls; returns lumens.

    The airway lumens are returned, not painted, so they can go on after the lesions (air bronchograms). The
    vessel and wall occupancies are left in `s.fields` ("vessel_frac", "wall_frac") for the lesion painter.
    """
    an, grid, lungs = s.an, s.grid, s.masks["lungs"]

    def inside(p: np.ndarray) -> bool:
        v = grid.voxel(p)
        return v is not None and bool(lungs[v])

    k = min(grid.slices - 1, int((an.t_carina - 0.05) * grid.slices))
    ym, y_tr, y_asc = float(s.marks["y_mid"][k]), float(s.marks["y_tr"][k]), float(s.marks["y_asc"][k])
    z_car = grid.z_of(an.t_carina)
    carina = np.array([an.x_m + 1, y_tr, z_car])
    pa = np.array([an.x_m - 17, y_asc + 4, grid.z_of(an.t_carina - 0.07)])
    yh = float(s.marks["y_heart"][k])
    r_min = max(0.35, 0.2 * grid.sp)  # thinner tubes would fill under 4% of a voxel: invisible, so not grown
    vessels: list[Segment] = []
    walls: list[Segment] = []
    lumens: list[Segment] = []
    for sx in (-1.0, 1.0):
        hil = np.array([an.x_m + sx * HILUM_X, ym - 2, grid.z_of(an.t_carina - 0.06)])
        vessels.append((pa, hil, 9.0))
        hil_b = np.array([an.x_m + sx * 30, y_tr - 6, z_car - 22])
        walls.append((carina, hil_b, 7.5))
        lumens.append((carina, hil_b, 5.5))
        art = [(sx * 0.25, 0.0, 1), (sx * 0.4, 0.6, 0.7), (sx, 0.2, 0), (sx * 0.3, -0.7, -0.9)]
        art += [(sx * 0.7, -0.2, -0.9), (sx * 0.4, 0.6, -0.8)]
        for br in grow_tree(rng, hil, [np.array(v) for v in art], 5.0, 30.0, inside, r_min):
            vessels.append((br.p0, br.p1, br.r))
            if 1 <= br.gen <= 3:
                rb = 0.75 * br.r
                off = br.side * (br.r + rb + 1.0)
                walls.append((br.p0 + off, br.p1 + off, rb + max(0.6, 0.3 * rb)))
                lumens.append((br.p0 + off, br.p1 + off, rb))
        root = np.array([an.x_m + sx * 12, yh - 0.8 * an.heart_b, grid.z_of(an.t_heart + 0.08)])  # left atrium
        ven = [(sx, -0.3, 0.6), (sx, -0.5, -0.3), (sx * 0.8, 0.2, -0.5), (sx * 0.6, -0.7, 0.1)]
        vessels += [
            (b.p0, b.p1, b.r) for b in grow_tree(rng, root, [np.array(v) for v in ven], 5.0, 30.0, inside, r_min)
        ]
    vfrac = np.zeros(grid.shape, np.float32)
    raster_segments(grid, vessels, vfrac)
    background = (s.tissue == Tissue.LUNG) | (s.tissue == Tissue.FAT)
    s.hu[:] = np.where(background & (vfrac > 0), s.hu + vfrac * (40.0 - s.hu), s.hu)
    wfrac = np.zeros(grid.shape, np.float32)
    raster_segments(grid, walls, wfrac)
    s.hu[:] = np.where(background & (wfrac > 0), np.maximum(s.hu, s.hu + wfrac * (25.0 - s.hu)), s.hu)
    # kept so the lesions can be composed under the trees (vessels run through ground glass, lesions.py)
    s.fields["vessel_frac"], s.fields["wall_frac"] = vfrac, wfrac
    return lumens


def paint_lumens(s: Scene, lumens: list[Segment]) -> None:
    """Air in the bronchial lumens, over lung, lesions and mediastinal fat (air bronchograms in consolidation)."""
    frac = np.zeros(s.grid.shape, np.float32)
    raster_segments(s.grid, lumens, frac)
    t = s.tissue
    ok = (frac > 0) & ((t == Tissue.LUNG) | (t == Tissue.LESION) | (t == Tissue.FAT) | (t == Tissue.SOFT))
    ok &= s.masks["cav"]
    s.hu[:] = np.where(ok, s.hu + frac * (-990.0 - s.hu), s.hu)
    s.tissue[ok & (frac > 0.5) & (t != Tissue.LESION) & (t != Tissue.LUNG)] = Tissue.AIRWAY
