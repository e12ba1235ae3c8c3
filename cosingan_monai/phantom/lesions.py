"""COVID-19-like lung lesions for the phantom: subpleural, posterior/basal, with the patterns real CT shows.

Why hand-rolled: lesions must follow the typical COVID-19 CT pattern (peripheral, posterior- and lower-lobe
predominant, bilateral) and come with an exact label. Each lesion is a 3D ellipsoid laid along the pleura with a
lobulated surface (a smooth random field perturbs the ellipsoid norm), labelled at the half-contrast boundary, and
drawn as one of four patterns (fractions in `PATTERNS`):

- **ground glass**: a hazy density rise whose level varies per lesion, densest at the centre; the vessels and
  bronchial walls keep running through it (they are recomposed on top of the raised parenchyma, not erased);
- **crazy paving**: ground glass plus interlobular septal thickening, a polygonal reticular network (the faces of
  a 3D Voronoi tessellation of random lobule centres, about 1 mm thick);
- **consolidation**: a soft-tissue-dense core inside a ground-glass rim, with air bronchograms (small air tubes
  branching through the core);
- **subpleural band**: a thin curvilinear opacity 2-8 mm under the pleura and parallel to it, with faint haze.

The painters write a parenchyma density (`par`, HU without vessels); the tree fractions that `trees.paint_trees`
left in `Scene.fields` (vessel_frac, wall_frac) are then composed over it by partial volume, so a vessel crossing
a lesion is as visible as in healthy lung. Per-region statistics plus noise cannot reproduce this structure, which
is what separates the phantom from the GAN-free painted control (docs/results.md "Phantom").
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from cosingan_monai.phantom.anatomy import GridAxes, Scene, Tissue, smoothstep
from cosingan_monai.phantom.trees import raster_segments

MIN_BURDEN, MAX_BURDEN = 0.01, 0.3  # target infected share of the lung, drawn log-uniformly
MAX_LESIONS = 24
#: Pattern of each lesion, drawn with these probabilities (ground glass is the commonest COVID-19 finding).
PATTERNS: dict[str, float] = {"ggo": 0.38, "crazy_paving": 0.25, "consolidation": 0.25, "band": 0.12}
VESSEL_HU, WALL_HU, AIR_HU = 40.0, 25.0, -900.0
LOBULE_MM = 7.0  # mean spacing of the secondary-lobule centres whose borders are the thickened septa
SEPTUM_MM = 0.6  # half-thickness of a thickened septum
MIN_CONTRAST_HU = 160.0  # ground glass is a visible density rise over the lung it sits in, however dense that lung


def _candidates(s: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Voxel indices (on a 2x in-plane subgrid) 2-22 mm inside the pleura and their sampling weights."""
    lungs = s.masks["lungs"][::2, ::2, :]
    dist = ndimage.distance_transform_edt(lungs, sampling=(2 * s.grid.sp, 2 * s.grid.sp, s.grid.sz))
    cand = np.argwhere((dist > 2) & (dist < 22))
    if len(cand) == 0:
        cand = np.argwhere(lungs)
    cy = s.grid.axis(1)[::2][cand[:, 1]]
    weight = np.exp(-(cy - cy.min()) / 55.0) * (1.3 - s.grid.t[cand[:, 2]])  # posterior and lower
    return cand, weight / weight.sum()


def septal_network(points: tuple[np.ndarray, np.ndarray, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Thickened interlobular septa in a box: 0..1 occupancy of the borders between random lobule cells.

    `points` are the box's x, y, z voxel-centre axes (mm). A voxel's distance to its cell border is half the
    difference of its distances to the two nearest lobule centres (exact for a Voronoi tessellation)."""
    xs, ys, zs = points
    lo = np.array([xs[0], ys[0], zs[0]]) - LOBULE_MM
    hi = np.array([xs[-1], ys[-1], zs[-1]]) + LOBULE_MM
    n = max(4, int(np.prod((hi - lo) / LOBULE_MM)))
    centres = lo + rng.random((n, 3)) * (hi - lo)
    grid = np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), axis=-1).reshape(-1, 3)
    d, _ = cKDTree(centres).query(grid, k=2)
    border = 0.5 * (d[:, 1] - d[:, 0])
    return np.clip(1.0 - border / SEPTUM_MM, 0.0, 1.0).reshape(len(xs), len(ys), len(zs)).astype(np.float32)


def _bronchograms(centre: np.ndarray, axes: np.ndarray, radius: float, rng: np.random.Generator) -> list:
    """A few small air tubes branching from the lesion centre along its long axis (air bronchograms)."""
    segs = []
    for _ in range(int(rng.integers(2, 4))):
        d = axes[0] * rng.choice([-1.0, 1.0]) + 0.35 * rng.standard_normal(3)
        d /= np.linalg.norm(d) + 1e-9
        start = centre - d * 0.3 * radius
        mid = start + d * 0.6 * radius
        r = float(rng.uniform(0.7, 1.2))
        segs.append((start, mid, r))
        for sign in (1.0, -1.0):
            e = d + sign * 0.5 * axes[1] + 0.2 * rng.standard_normal(3)
            e /= np.linalg.norm(e) + 1e-9
            segs.append((mid, mid + e * 0.45 * radius, 0.75 * r))
    return segs


def add_lesions(s: Scene, rng: np.random.Generator) -> np.ndarray:
    """Draw lesions until a random target burden is met; paints HU in place and returns the infection mask."""
    grid, lungs = s.grid, s.masks["lungs"]
    infected = np.zeros(grid.shape, bool)
    lung_vox = int(np.count_nonzero(lungs))
    if lung_vox == 0:
        return infected
    target = math.exp(rng.uniform(math.log(MIN_BURDEN), math.log(MAX_BURDEN))) * lung_vox
    cand, weight = _candidates(s)
    ax = [grid.axis(0), grid.axis(1), grid.axis(2)]
    lung_hu, n_shape, n_tex, n_med = (s.fields[k] for k in ("lung_hu", "shape", "tex", "med"))
    par = lung_hu.copy()  # parenchyma density (no vessels): lesions raise it
    touched = np.zeros(grid.shape, bool)
    air = np.zeros(grid.shape, np.float32)  # air-bronchogram occupancy, painted last
    names, probs = list(PATTERNS), np.array(list(PATTERNS.values()))
    severity = rng.uniform(-150.0, 170.0)  # per patient: some have denser lesions throughout
    count = 0
    for _ in range(MAX_LESIONS):
        if count >= target:
            break
        pattern = names[int(rng.choice(len(names), p=probs / probs.sum()))]
        ci = cand[rng.choice(len(cand), p=weight)]
        c = np.array([ax[0][::2][ci[0]], ax[1][::2][ci[1]], ax[2][ci[2]]])
        sc = float(np.clip(((target - count) / lung_vox / 0.05) ** (1 / 3), 0.55, 1.35))
        r_t, r_n, r_z = rng.uniform(14, 30) * sc, rng.uniform(8, 16) * sc, rng.uniform(12, 32) * sc
        if pattern == "band":  # long along the pleura, thin across it
            r_t, r_n, r_z = r_t * 1.3, rng.uniform(5, 9), r_z * 0.8
        lung_cx = s.an.x_m + (70.0 if c[0] >= s.an.x_m else -70.0)
        ang = math.atan2(c[1] - float(s.marks["y_mid"][ci[2]]), c[0] - lung_cx) + math.pi / 2  # along the pleura
        ext = np.array([max(r_t, r_n) * 1.5, max(r_t, r_n) * 1.5, r_z * 1.5])
        i0, i1 = grid.index_box(c - ext, c + ext)
        sl = tuple(slice(a, b) for a, b in zip(i0, i1, strict=True))
        inl = lungs[sl]
        if not inl.any():
            continue
        dx = ax[0][sl[0], None, None] - c[0]
        dy = ax[1][None, sl[1], None] - c[1]
        dz = ax[2][None, None, sl[2]] - c[2]
        u = dx * math.cos(ang) + dy * math.sin(ang)
        v = -dx * math.sin(ang) + dy * math.cos(ang)
        q = np.sqrt((u / r_t) ** 2 + (v / r_n) ** 2 + (dz / r_z) ** 2) + 0.32 * n_shape[sl]
        w = smoothstep((1.15 - q) / 0.4)  # 0.5 at the labelled boundary q = 0.95: a soft, fuzzy margin
        tex = 45.0 * n_tex[sl] + 35.0 * n_med[sl]
        base = lung_hu[sl]
        if pattern == "band":
            # distance to the pleura inside the box (the box reaches past it: ext >= 1.5 x the lesion's extent)
            depth = ndimage.distance_transform_edt(inl, sampling=(grid.sp, grid.sp, grid.sz))
            d0, half = rng.uniform(2.5, 8.0), rng.uniform(1.0, 1.8)
            band = smoothstep((half + 0.8 - np.abs(depth - d0)) / 1.6) * smoothstep((1.1 - q) / 0.3)
            level = severity + rng.uniform(-300, -60) + tex
            haze = base + 0.5 * w * (rng.uniform(-720, -620) - base)
            lesion = haze + band * (level - haze)
            m = inl & (band > 0.5)
        else:
            level = severity + (rng.uniform(-650, -290) if pattern != "consolidation" else rng.uniform(-620, -440))
            dense = level + tex + 90.0 * smoothstep((0.8 - q) / 0.8)  # denser centre
            lesion = base + w * (np.maximum(dense, base + MIN_CONTRAST_HU) - base)  # never fainter than MIN_CONTRAST
            if pattern == "crazy_paving":
                pts = (ax[0][sl[0]], ax[1][sl[1]], ax[2][sl[2]])
                septa = septal_network(pts, rng) * smoothstep((1.05 - q) / 0.3)
                lesion = lesion + septa * rng.uniform(220, 330)
            elif pattern == "consolidation":
                core = smoothstep((0.7 - q) / 0.3)
                lesion = lesion + core * (rng.uniform(-90, 40) + 20.0 * n_tex[sl] - lesion)
                axes = np.array([[math.cos(ang), math.sin(ang), 0.0], [-math.sin(ang), math.cos(ang), 0.0]])
                tubes = np.zeros(inl.shape, np.float32)
                sub = _Box(grid, i0, i1)
                raster_segments(sub, _bronchograms(c, axes, min(r_t, r_z), rng), tubes)
                air_v = air[sl]
                np.maximum(air_v, tubes * core * inl, out=air_v)
            m = inl & (q < 0.95)
        par_v = par[sl]
        np.maximum(par_v, np.where(inl, lesion, par_v), out=par_v)
        touched[sl] |= inl & ((w > 0) | m)
        inf_v = infected[sl]
        count += int(np.count_nonzero(m & ~inf_v))
        inf_v |= m
    _compose(s, par, touched, air)
    s.tissue[infected] = Tissue.LESION
    return infected


def _compose(s: Scene, par: np.ndarray, touched: np.ndarray, air: np.ndarray) -> None:
    """Put the raised parenchyma under the vessels and bronchial walls (partial volume), then the air tubes."""
    vf = s.fields.get("vessel_frac")
    wf = s.fields.get("wall_frac")
    hu = par[touched]
    if vf is not None:
        hu = hu + vf[touched] * (VESSEL_HU - hu)
    if wf is not None:
        hu = np.maximum(hu, hu + wf[touched] * (WALL_HU - hu))
    hu = hu + air[touched] * (AIR_HU - hu)
    s.hu[touched] = hu


class _Box(GridAxes):
    """A sub-grid view (the `Grid` interface `raster_segments` needs) of the voxel box [i0, i1) of a grid."""

    def __init__(self, grid, i0: np.ndarray, i1: np.ndarray) -> None:
        self.sp, self.sz, self.step = grid.sp, grid.sz, grid.step
        self.shape = tuple(int(b - a) for a, b in zip(i0, i1, strict=True))
        self.axes = [grid.axis(k)[i0[k] : i1[k]] for k in range(3)]
        self.origin = np.array([a[0] for a in self.axes], np.float64)
