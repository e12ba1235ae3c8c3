"""COVID-19-like lung lesions for the phantom: subpleural, posterior/basal ground glass with consolidation cores.

Why hand-rolled: lesions must follow the typical COVID-19 CT pattern (peripheral, posterior- and lower-lobe
predominant, bilateral) and come with an exact label, so they are drawn as 3D ellipsoids with lobulated surfaces
(a smooth random field perturbs the ellipsoid norm), textured, and labelled at the half-contrast boundary.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from cosingan_monai.phantom.anatomy import Scene, Tissue, smoothstep

MIN_BURDEN, MAX_BURDEN = 0.01, 0.3  # target infected share of the lung, drawn log-uniformly
MAX_LESIONS = 24


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
    lung_hu, n_shape, n_ret, n_tex, n_med = (s.fields[k] for k in ("lung_hu", "shape", "ret", "tex", "med"))
    count = 0
    for _ in range(MAX_LESIONS):
        if count >= target:
            break
        ci = cand[rng.choice(len(cand), p=weight)]
        c = np.array([ax[0][::2][ci[0]], ax[1][::2][ci[1]], ax[2][ci[2]]])
        sc = float(np.clip(((target - count) / lung_vox / 0.05) ** (1 / 3), 0.55, 1.35))
        r_t, r_n, r_z = rng.uniform(14, 30) * sc, rng.uniform(8, 16) * sc, rng.uniform(12, 32) * sc
        lung_cx = s.an.x_m + (70.0 if c[0] >= s.an.x_m else -70.0)
        ang = math.atan2(c[1] - float(s.marks["y_mid"][ci[2]]), c[0] - lung_cx) + math.pi / 2  # along the pleura
        ext = np.array([max(r_t, r_n) * 1.5, max(r_t, r_n) * 1.5, r_z * 1.5])
        i0, i1 = grid.index_box(c - ext, c + ext)
        sl = tuple(slice(a, b) for a, b in zip(i0, i1, strict=True))
        dx = ax[0][sl[0], None, None] - c[0]
        dy = ax[1][None, sl[1], None] - c[1]
        dz = ax[2][None, None, sl[2]] - c[2]
        u = dx * math.cos(ang) + dy * math.sin(ang)
        v = -dx * math.sin(ang) + dy * math.cos(ang)
        q = np.sqrt((u / r_t) ** 2 + (v / r_n) ** 2 + (dz / r_z) ** 2) + 0.32 * n_shape[sl]
        w = smoothstep((1.15 - q) / 0.4)  # 0.5 at the labelled boundary q = 0.95: a soft, fuzzy margin
        ggo = rng.uniform(-680, -400) + 60.0 * n_tex[sl] + 45.0 * n_med[sl]
        if rng.random() < 0.3:  # crazy paving: reticular septal thickening over the ground glass
            ggo = ggo + 150.0 * smoothstep(1 - np.abs(n_ret[sl]) / 0.16)
        if rng.random() < 0.35:  # consolidation core
            core = smoothstep((0.62 - q) / 0.3)
            ggo = ggo + core * (rng.uniform(-50, 40) + 20.0 * n_tex[sl] - ggo)
        inl = lungs[sl]
        base = lung_hu[sl]
        hu_v = s.hu[sl]
        hu_v[:] = np.where(inl & (w > 0), np.maximum(hu_v, base + w * (ggo - base)), hu_v)
        m = inl & (q < 0.95)
        inf_v = infected[sl]
        count += int(np.count_nonzero(m & ~inf_v))
        inf_v |= m
    s.tissue[infected] = Tissue.LESION
    return infected
