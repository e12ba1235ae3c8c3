"""Synthetic chest CT phantom with COVID-19-CT-Seg labels: the project's embedded default data.

Why: the pipeline, tests and demo need a chest CT with lung/infection labels that ships with the code (the real
data sets have unknown or restrictive licences). The anatomy is a parametric model in millimetres (body layers,
ribs, spine, mediastinum, heart, great vessels, diaphragm, lungs with vessel and airway trees) with COVID-like
subpleural ground-glass/consolidation lesions, then partial-volume blur and correlated scanner noise. It is
hand-rolled because no library ships a chest CT phantom with lesions; every random choice comes from one
`np.random.default_rng(seed)`, so a seed always gives the same case.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

FOV_MM = 350.0  # in-plane field of view, like a typical adult chest CT reconstruction
Z_EXTENT_MM = 240.0  # cranio-caudal extent covered by the volume, whatever the number of slices
LEFT_LUNG, RIGHT_LUNG, INFECTION = 1, 2, 3
IMAGE_DIR, LABEL_DIR = "COVID-19-CT-Seg_20cases", "Lung_and_Infection_Mask"
LUNG_DIR, INFECTION_DIR = "Lung_Mask", "Infection_Mask"


class Tissue(IntEnum):
    """Tissue classes of `PhantomCase.tissue` (before blur and noise), so tests can check HU per tissue."""

    AIR = 0
    FAT = 1
    SOFT = 2  # skin, muscle, pleura, oesophagus, spinal canal
    BONE_CORTEX = 3
    BONE_MARROW = 4
    HEART = 5  # myocardium and blood (unenhanced)
    VESSEL = 6  # aorta, SVC, pulmonary trunk, neck vessels
    LUNG = 7
    LESION = 8
    AIRWAY = 9  # tracheal and bronchial lumen
    ABDOMEN = 10  # liver, spleen, stomach below the diaphragm
    TABLE = 11


@dataclass
class PhantomCase:
    """One synthetic chest CT: HU image and label map in RAS (x, y, z), their affine, and how it was made."""

    image: np.ndarray  # float32 HU, (x, y, z)
    label: np.ndarray  # uint8: 0 background, 1 left lung, 2 right lung, 3 infection
    affine: np.ndarray  # 4x4 RAS, diagonal spacing
    healthy: bool
    seed: int
    tissue: np.ndarray | None = field(default=None, repr=False)  # uint8 `Tissue` map before blur/noise

    @property
    def infection_fraction(self) -> float:
        """Infected share of the lung volume (0 for a healthy case)."""
        lung = np.count_nonzero(self.label)
        return float(np.count_nonzero(self.label == INFECTION) / lung) if lung else 0.0


# ----------------------------------------------------------------------------------------------------------------
# grid and random fields


@dataclass(frozen=True)
class _Grid:
    """Voxel-centre coordinates in mm (x to patient right, y anterior, z superior) and the relative height t."""

    size: int
    slices: int

    @property
    def sp(self) -> float:
        return FOV_MM / self.size

    @property
    def sz(self) -> float:
        return Z_EXTENT_MM / self.slices

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, self.slices)

    def axis(self, k: int) -> np.ndarray:
        n, s = self.shape[k], (self.sp, self.sp, self.sz)[k]
        return ((np.arange(n) - (n - 1) / 2) * s).astype(np.float32)

    @property
    def t(self) -> np.ndarray:
        return ((np.arange(self.slices) + 0.5) / self.slices).astype(np.float32)

    def index_box(self, lo_mm: np.ndarray, hi_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Voxel index range [i0, i1) covering the mm box [lo_mm, hi_mm], clipped to the volume."""
        origin = np.array([self.axis(k)[0] for k in range(3)])
        step = np.array([self.sp, self.sp, self.sz])
        shape = np.array(self.shape)
        i0 = np.clip(np.floor((lo_mm - origin) / step).astype(int), 0, shape)
        i1 = np.clip(np.ceil((hi_mm - origin) / step).astype(int) + 1, 0, shape)
        return i0, i1

    def affine(self) -> np.ndarray:
        aff = np.diag([self.sp, self.sp, self.sz, 1.0])
        aff[:3, 3] = [self.axis(0)[0], self.axis(1)[0], self.axis(2)[0]]
        return aff


def _smooth_field(rng: np.random.Generator, grid: _Grid, cell_mm: float) -> np.ndarray:
    """Unit-variance random field with feature size ~cell_mm: coarse Gaussian noise, smoothed, trilinearly upsampled."""
    spacing = (grid.sp, grid.sp, grid.sz)
    lo = [max(3, math.ceil(n * s / cell_mm) + 2) for n, s in zip(grid.shape, spacing, strict=True)]
    coarse = ndimage.gaussian_filter(rng.standard_normal(lo).astype(np.float32), 0.7)
    up = F.interpolate(torch.from_numpy(coarse)[None, None], size=grid.shape, mode="trilinear", align_corners=True)
    f = up[0, 0].numpy()
    return (f - f.mean()) / (f.std() + 1e-6)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


# ----------------------------------------------------------------------------------------------------------------
# anatomy parameters


@dataclass
class _Anatomy:
    """Per-case random anatomy (mm, radians, relative heights t in [0, 1]); varies habitus, breathing and pose."""

    a: float
    b_ant: float
    b_post: float
    y0: float
    a_mod: tuple[float, float, float]
    b_mod: tuple[float, float, float]
    pert: list[tuple[int, float, float]]
    obesity: float
    rib_pitch: float
    rib_drop: float
    rib_phase: float
    x_m: float
    r_vb: float
    disc_phase: float
    t_carina: float
    t_arch: float
    heart_dx: float
    heart_dy: float
    heart_a: float
    heart_b: float
    heart_rot: float
    t_heart: float
    dome_r: float
    dome_l: float
    dome_k: float
    t_top: float
    gastric_bubble: bool
    noise_std: float
    table_gap: float


def _sample_anatomy(rng: np.random.Generator) -> _Anatomy:
    u = rng.uniform
    dome_r = u(0.27, 0.36)
    return _Anatomy(
        a=u(138, 160),
        b_ant=u(92, 112),
        b_post=u(88, 102),
        y0=u(-14, -4),
        a_mod=(u(0.02, 0.05), u(0.6, 1.4), u(0, 2 * math.pi)),
        b_mod=(u(0.02, 0.05), u(0.6, 1.4), u(0, 2 * math.pi)),
        pert=[(k, rng.normal(0, 0.012), u(0, 2 * math.pi)) for k in (2, 3, 4, 5)],
        obesity=u(0.5, 1.7),
        rib_pitch=u(24, 30),
        rib_drop=u(75, 105),
        rib_phase=u(0, 1),
        x_m=u(-8, -2),
        r_vb=u(14, 17),
        disc_phase=u(0, 1),
        t_carina=u(0.6, 0.67),
        t_arch=u(0.7, 0.76),
        heart_dx=u(18, 32),
        heart_dy=u(8, 22),
        heart_a=u(56, 68),
        heart_b=u(40, 50),
        heart_rot=u(math.radians(125), math.radians(145)),
        t_heart=dome_r + u(0.0, 0.05),
        dome_r=dome_r,
        dome_l=dome_r - u(0.03, 0.07),
        dome_k=u(0.008, 0.011),
        t_top=u(0.93, 0.98),
        gastric_bubble=bool(rng.random() < 0.6),
        noise_std=u(10, 25),
        table_gap=u(4, 14),
    )


# ----------------------------------------------------------------------------------------------------------------
# body wall geometry


def _wall_thickness(th: np.ndarray, t: np.ndarray, an: _Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """Subcutaneous fat and muscle thickness (mm) by polar angle th (pi/2 = anterior) and height t."""
    s = np.abs(np.sin(th))
    fat = an.obesity * (6.0 + 9.0 * s) * (1.0 + 0.35 * (1.0 - t))
    back = np.abs(np.angle(np.exp(1j * (th + np.pi / 2))))  # angle from the posterior midline, 0..pi
    pect = 16.0 * _smoothstep((t - 0.35) / 0.3) * np.exp(-(((np.pi - back) - 0.75) ** 2) / 0.12)
    paraspinal = 36.0 * np.exp(-((back / 0.38) ** 2))
    lat = 8.0 * np.exp(-(((back - 1.0) / 0.4) ** 2))
    return fat.astype(np.float32), (6.0 + pect + paraspinal + lat).astype(np.float32)


def _outline_radius(th: np.ndarray, t: np.ndarray, an: _Anatomy) -> np.ndarray:
    """Distance (mm) from the body centre to the skin along angle th at height t (a perturbed superellipse)."""
    a = an.a * (1 + an.a_mod[0] * np.sin(2 * np.pi * an.a_mod[1] * t + an.a_mod[2]))
    b_scale = 1 + an.b_mod[0] * np.sin(2 * np.pi * an.b_mod[1] * t + an.b_mod[2])
    anterior = np.sin(th) > 0
    b = np.where(anterior, an.b_ant, an.b_post) * b_scale
    p = np.where(anterior, 2.3, 2.9)
    c, s = np.abs(np.cos(th)) + 1e-6, np.abs(np.sin(th)) + 1e-6
    r = 1.0 / ((c / a) ** p + (s / b) ** p) ** (1.0 / p)
    pert = 1.0 + sum(amp * np.cos(k * th + ph) for k, amp, ph in an.pert)
    return (r * pert).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# tubes: rasterised line segments with partial-volume edges


def _raster_segments(grid: _Grid, segs: list[tuple[np.ndarray, np.ndarray, float]], out: np.ndarray) -> None:
    """Max-accumulate into `out` the partial-volume fraction of tubes (p0, p1, radius mm) (hand-rolled: no lib)."""
    xs, ys, zs = grid.axis(0), grid.axis(1), grid.axis(2)
    sp, sz = grid.sp, grid.sz
    for p0, p1, r in segs:
        margin = r + sp + np.array([0, 0, 0.25 * sz])
        i0, i1 = grid.index_box(np.minimum(p0, p1) - margin, np.maximum(p0, p1) + margin)
        if np.any(i1 <= i0):
            continue
        px = xs[i0[0] : i1[0], None, None] - p0[0]
        py = ys[None, i0[1] : i1[1], None] - p0[1]
        pz = zs[None, None, i0[2] : i1[2]] - p0[2]
        d = p1 - p0
        s = np.clip((px * d[0] + py * d[1] + pz * d[2]) / max(float(d @ d), 1e-6), 0.0, 1.0)
        dx, dy = px - s * d[0], py - s * d[1]
        dz = np.maximum(np.abs(pz - s * d[2]) - 0.25 * sz, 0.0)  # a thick slice sees a tube over a wider z range
        dist = np.sqrt(dx * dx + dy * dy + dz * dz)
        frac = np.clip((r - dist) / sp + 0.5, 0.0, 1.0).astype(np.float32)
        view = out[i0[0] : i1[0], i0[1] : i1[1], i0[2] : i1[2]]
        np.maximum(view, frac, out=view)


def _rotate(v: np.ndarray, axis: np.ndarray, ang: float) -> np.ndarray:
    """Rodrigues rotation of v about a unit axis."""
    return v * math.cos(ang) + np.cross(axis, v) * math.sin(ang) + axis * (axis @ v) * (1 - math.cos(ang))


def _perpendicular(rng: np.random.Generator, d: np.ndarray) -> np.ndarray:
    n = np.cross(d, rng.standard_normal(3))
    return n / (np.linalg.norm(n) + 1e-9)


@dataclass
class _Branch:
    p0: np.ndarray
    p1: np.ndarray
    r: float
    gen: int
    side: np.ndarray  # unit vector perpendicular to the branch, where its bronchus runs


def _grow_tree(
    rng: np.random.Generator,
    root: np.ndarray,
    dirs: list[np.ndarray],
    r0: float,
    length0: float,
    inside: Callable[[np.ndarray], bool],
    r_min: float,
) -> list[_Branch]:
    """A random bifurcating tree from `root` along `dirs`, pruned at the lung boundary (vessels, airways)."""
    stack = [(root, d / np.linalg.norm(d), r0, length0, 0) for d in dirs]
    out: list[_Branch] = []
    while stack and len(out) < 3000:
        p, d, r, length, gen = stack.pop()
        end = p + d * length
        if gen > 0 and not (inside(end) and inside(p + 0.5 * d * length)):
            end = p + d * length * 0.5
            if not inside(end):
                continue
        n = _perpendicular(rng, d)
        out.append(_Branch(p, end, r, gen, n))
        if r * 0.72 < r_min:
            continue
        for sign in (1.0, -1.0):
            child = _rotate(d, n, sign * math.radians(rng.uniform(18, 42)))
            stack.append((end, child, r * rng.uniform(0.68, 0.8), length * rng.uniform(0.72, 0.86), gen + 1))
    return out


# ----------------------------------------------------------------------------------------------------------------
# the case


def make_phantom_case(seed: int, size: int = 256, slices: int = 48, healthy: bool = False) -> PhantomCase:
    """Synthesize one chest CT (HU) with lung/infection labels; deterministic for `seed`."""
    if size < 32:
        raise ValueError(f"phantom size must be at least 32 pixels, got {size}")
    if slices < 1:
        raise ValueError(f"phantom slices must be at least 1, got {slices}")
    rng = np.random.default_rng(seed)
    grid = _Grid(size, slices)
    an = _sample_anatomy(rng)
    n_shape, n_ret = _smooth_field(rng, grid, 14.0), _smooth_field(rng, grid, 5.0)
    n_tex, n_med = _smooth_field(rng, grid, 2.6), _smooth_field(rng, grid, 9.0)

    x2, y2 = grid.axis(0)[:, None, None], grid.axis(1)[None, :, None]
    z1, t1 = grid.axis(2), grid.t
    z3, t3 = z1[None, None, :], t1[None, None, :]
    hu = np.full(grid.shape, -1000.0, np.float32)
    tissue = np.zeros(grid.shape, np.uint8)

    def paint(mask: np.ndarray, value: float | np.ndarray, kind: Tissue) -> None:
        hu[mask] = value[mask] if isinstance(value, np.ndarray) else value
        tissue[mask] = kind

    # --- body wall: skin, fat, muscle, ribs; `cav` is the thoracic/abdominal cavity inside the ribs
    yd = y2 - an.y0
    th = np.arctan2(yd, x2)
    rad = np.sqrt(x2 * x2 + yd * yd)
    depth = _outline_radius(th, t3, an) - rad
    fat_t, mus_t = _wall_thickness(th, t3, an)
    rib_t = 7.0
    wall = fat_t + mus_t
    body = depth >= 0
    paint(body, 35.0 + 6 * n_med, Tissue.SOFT)
    paint(body & (depth >= 1.5) & (depth < fat_t), -100.0 + 8 * n_med, Tissue.FAT)
    paint(body & (depth >= fat_t), 45.0 + 5 * n_med, Tissue.SOFT)
    back = np.abs(np.angle(np.exp(1j * (th + np.pi / 2))))
    rib_arg = (z3 + an.rib_drop * back / np.pi) / an.rib_pitch + an.rib_phase
    s_a = (rib_arg - np.floor(rib_arg)) / 0.4
    s_r = (depth - wall) / rib_t
    rib_q = ((s_r - 0.5) / 0.5) ** 2 + ((s_a - 0.5) / 0.5) ** 2
    rib = (rib_q < 1) & (back > 0.3) & (back < np.pi - 0.14)
    cartilage = rib & (back > np.pi - 0.45)
    paint(rib & ~cartilage, 700.0, Tissue.BONE_CORTEX)
    paint(rib & ~cartilage & (rib_q < 0.3), 220.0 + 30 * n_tex, Tissue.BONE_MARROW)
    paint(cartilage, 120.0, Tissue.SOFT)
    cav_depth = depth - wall - rib_t
    cav = cav_depth >= 0
    paint(cav, 30.0, Tissue.SOFT)

    # --- landmarks along z: posterior/anterior cavity edge at the midline
    th_post, th_ant = np.full_like(t1, -np.pi / 2), np.full_like(t1, np.pi / 2)
    f_p, m_p = _wall_thickness(th_post, t1, an)
    f_a, m_a = _wall_thickness(th_ant, t1, an)
    y_cp = an.y0 - _outline_radius(th_post, t1, an) + f_p + m_p + rib_t
    y_front = an.y0 + _outline_radius(th_ant, t1, an) - f_a - m_a - rib_t
    y_mid = 0.5 * (y_cp + y_front)

    # sternum: anterior midline plate between the costal cartilages
    stern = (np.abs(x2) < 13) & (y2 > an.y0) & (depth >= wall - 3) & (depth < wall + rib_t + 2) & (t3 > 0.18)
    paint(stern, 650.0, Tissue.BONE_CORTEX)
    paint(stern & (np.abs(x2) < 9) & (depth >= wall - 1) & (depth < wall + rib_t), 200 + 30 * n_tex, Tissue.BONE_MARROW)

    # --- spine: vertebral body (cortex, marrow, discs), canal, pedicles, lamina, spinous and transverse processes
    r_vb = an.r_vb
    y_vb = (y_cp + 0.3 * r_vb)[None, None, :]
    y_sc = y_vb - r_vb - 7.0
    q_vb = np.sqrt((x2 / (1.12 * r_vb)) ** 2 + ((y2 - y_vb) / r_vb) ** 2)
    disc = ((z3 / 26.0 + an.disc_phase) % 1.0) < 0.2
    vb = q_vb < 1
    paint(vb & ~disc, 650.0, Tissue.BONE_CORTEX)
    paint(vb & ~disc & (q_vb < 0.84), 230.0 + 35 * n_tex, Tissue.BONE_MARROW)
    paint(vb & disc, 85.0, Tissue.SOFT)
    ring = np.sqrt(x2**2 + (y2 - y_sc) ** 2)
    posterior_el = ((ring < 12) & (ring >= 7.5) & (y2 <= y_vb - r_vb + 2)) | (
        (np.abs(x2) < 3.5) & (y2 < y_sc - 8) & (y2 > y_sc - 38)
    )
    posterior_el |= (np.abs(y2 - y_sc + 1) < 4) & (np.abs(x2) < 30) & (np.abs(x2) > 8)
    paint(posterior_el, 600.0, Tissue.BONE_CORTEX)
    paint(ring < 7.5, 15.0, Tissue.SOFT)

    # --- mediastinal organs as per-slice disks: (x, y, radius, present)
    ones = np.ones_like(t1)
    y_asc = y_mid + 22
    y_tr = (y_cp + 0.3 * r_vb) + r_vb + 17
    above_heart = t1 > an.t_heart + 0.17
    organs: list[tuple[np.ndarray, np.ndarray, float, np.ndarray, float, Tissue]] = [
        (an.x_m - 6 * ones, (y_cp + 0.3 * r_vb) + r_vb + 6, 7.5, ones > 0, 35.0, Tissue.SOFT),  # oesophagus
        (an.x_m - 23 - 0.2 * r_vb * ones, y_cp + 0.3 * r_vb + 4, 12.0, t1 <= an.t_arch + 0.02, 42.0, Tissue.VESSEL),
        (an.x_m + 13 * ones, y_asc, 15.0, above_heart & (t1 <= an.t_arch + 0.02), 42.0, Tissue.VESSEL),  # asc. aorta
        (an.x_m + 33 * ones, y_asc - 4, 10.0, (t1 > an.t_heart + 0.12) & (t1 < an.t_arch + 0.1), 40.0, Tissue.VESSEL),
        (an.x_m - 16 * ones, y_asc + 6, 14.0, np.abs(t1 - an.t_carina + 0.07) < 0.04, 40.0, Tissue.VESSEL),  # PA
        (an.x_m + 20 * ones, y_asc - 8, 7.0, t1 > an.t_arch + 0.05, 40.0, Tissue.VESSEL),  # brachiocephalic
        (an.x_m + 2 * ones, y_asc - 14, 6.0, t1 > an.t_arch + 0.05, 40.0, Tissue.VESSEL),  # left carotid
        (an.x_m - 14 * ones, y_asc - 18, 6.5, t1 > an.t_arch + 0.05, 40.0, Tissue.VESSEL),  # left subclavian
        (an.x_m + 2 * ones, y_tr, 10.5, t1 >= an.t_carina, 40.0, Tissue.SOFT),  # trachea wall
        (an.x_m + 2 * ones, y_tr, 8.0, t1 >= an.t_carina, -1000.0, Tissue.AIRWAY),  # trachea lumen
    ]
    hw = 19.0
    medi = cav & (np.abs(x2 - an.x_m) < hw) & (y2 > y_vb - 0.3 * r_vb)
    for cx, cy, r, pres, _, _ in organs:
        medi |= cav & (((x2 - cx[None, None]) ** 2 + (y2 - cy[None, None]) ** 2) < ((r + 5) * pres[None, None]) ** 2)
    # aortic arch: a capsule from the ascending to the descending aorta
    arch_t = (t1 > an.t_arch - 0.02) & (t1 < an.t_arch + 0.045)
    ax0, ay0 = an.x_m + 13, y_asc[None, None]
    ax1, ay1 = an.x_m - 23 - 0.2 * r_vb, (y_cp + 0.3 * r_vb + 4)[None, None]
    ddx, ddy = ax1 - ax0, ay1 - ay0
    s = np.clip(((x2 - ax0) * ddx + (y2 - ay0) * ddy) / (ddx**2 + ddy**2), 0, 1)
    arch_d = np.sqrt((x2 - ax0 - s * ddx) ** 2 + (y2 - ay0 - s * ddy) ** 2)
    arch = (arch_d < 13) & arch_t[None, None]
    medi |= cav & (arch_d < 18) & arch_t[None, None]

    # --- heart: rotated ellipse with an ellipsoidal z profile, epicardial fat and pericardium
    hz = np.clip(1 - ((t1 - an.t_heart) / np.where(t1 < an.t_heart, 0.09, 0.2)) ** 2, 0, 1) ** 0.5
    xh, yh = an.x_m - an.heart_dx, y_mid + an.heart_dy
    cr, sr = math.cos(an.heart_rot), math.sin(an.heart_rot)
    hu_ = (x2 - xh) * cr + (y2 - yh[None, None]) * sr
    hv_ = -(x2 - xh) * sr + (y2 - yh[None, None]) * cr
    scale = np.maximum(hz, 1e-3)[None, None]
    q_h = np.sqrt((hu_ / (an.heart_a * scale)) ** 2 + (hv_ / (an.heart_b * scale)) ** 2)
    heart_zone = cav & (hz[None, None] > 0.05)
    pericard = heart_zone & (q_h < 1.0 + 6.0 / an.heart_b)
    medi |= pericard

    # --- diaphragm domes and the abdomen below them
    zr = -Z_EXTENT_MM / 2 + an.dome_r * Z_EXTENT_MM
    zl = -Z_EXTENT_MM / 2 + an.dome_l * Z_EXTENT_MM
    ydp = (y_mid[None, None] - 5) if y_mid.ndim else y_mid
    dome = np.maximum(
        zr - an.dome_k * ((x2 - 60) ** 2 + (y2 - ydp) ** 2), zl - an.dome_k * ((x2 + 60) ** 2 + (y2 - ydp) ** 2)
    )
    below = cav & (z3 < dome)
    paint(below & (x2 >= an.x_m), 58.0 + 6 * n_med, Tissue.ABDOMEN)  # liver
    paint(below & (x2 < an.x_m), 45.0 + 6 * n_med, Tissue.ABDOMEN)  # spleen, stomach
    if an.gastric_bubble:
        gz = zl - 22
        gq = ((x2 + 55) / 38) ** 2 + ((y2 - ydp - 15) / 32) ** 2 + ((z3 - gz) / 28) ** 2
        paint(below & (gq < 1) & (z3 > gz), -1000.0, Tissue.AIRWAY)
        paint(below & (gq < 1) & (z3 <= gz), 15.0, Tissue.ABDOMEN)

    # --- mediastinal fat and organs over it, then the heart
    paint(medi & ~below, -95.0 + 10 * n_med, Tissue.FAT)
    for cx, cy, r, pres, val, kind in organs:
        m = ((x2 - cx[None, None]) ** 2 + (y2 - cy[None, None]) ** 2) < (r * pres[None, None]) ** 2
        paint(m & (cav | (kind == Tissue.AIRWAY)), val, kind)
    paint(arch & cav, 42.0, Tissue.VESSEL)
    paint(pericard & (q_h >= 1.0 + 4.0 / an.heart_b), 30.0, Tissue.SOFT)  # pericardium
    paint(pericard & (q_h < 1.0 + 4.0 / an.heart_b), -95.0 + 10 * n_med, Tissue.FAT)  # epicardial fat
    paint(heart_zone & (q_h < 1.0) & ~below, 40.0 + 4 * n_med, Tissue.HEART)
    # spine keeps priority over everything painted in the cavity
    spine_ext = q_vb < 1 + 4.0 / r_vb

    # --- lungs: cavity minus mediastinum/heart/spine/abdomen, narrowed to a cone at the apex
    t_ap = an.t_top - 0.22
    cone = np.where(t1 < t_ap, 1e3, 95.0 * np.sqrt(np.clip((an.t_top - t1) / (an.t_top - t_ap), 0, 1)))
    apex_ok = np.zeros(grid.shape, bool)
    for sx in (-1.0, 1.0):
        dxl = x2 - (an.x_m + sx * 70.0)
        dyl = y2 - (y_mid[None, None] - 8)
        apex_ok |= (dxl**2 + dyl**2) < cone[None, None] ** 2
    env = cav & (cav_depth > 1.0) & ~medi & ~spine_ext & ~below & apex_ok & (t3 < an.t_top)
    left = env & (x2 < an.x_m)
    right = env & (x2 >= an.x_m)
    left, right = _largest_component(left), _largest_component(right)
    env = left | right
    post = np.clip((y_front[None, None] - y2) / (y_front - y_cp)[None, None], 0, 1)
    lung_hu = (-872.0 + 55.0 * post**3 + 14.0 * n_med + 10.0 * n_tex).astype(np.float32)
    paint(env, lung_hu, Tissue.LUNG)

    # --- vessel and airway trees (arteries from the hila, veins toward the left atrium)
    def inside(p: np.ndarray) -> bool:
        i = int(round((p[0] - grid.axis(0)[0]) / grid.sp))
        j = int(round((p[1] - grid.axis(1)[0]) / grid.sp))
        k = int(round((p[2] - grid.axis(2)[0]) / grid.sz))
        return 0 <= i < size and 0 <= j < size and 0 <= k < slices and bool(env[i, j, k])

    def z_of(t: float) -> float:
        return -Z_EXTENT_MM / 2 + t * Z_EXTENT_MM

    k_mid = min(slices - 1, int((an.t_carina - 0.05) * slices))
    ym = float(y_mid[k_mid])
    vessels: list[tuple[np.ndarray, np.ndarray, float]] = []
    bronchi_wall: list[tuple[np.ndarray, np.ndarray, float]] = []
    bronchi_lumen: list[tuple[np.ndarray, np.ndarray, float]] = []
    carina = np.array([an.x_m + 2, float(y_tr[k_mid]), z_of(an.t_carina)])
    pa = np.array([an.x_m - 16, ym + 28, z_of(an.t_carina - 0.07)])
    for sx in (-1.0, 1.0):
        hil = np.array([an.x_m + sx * (hw + 16), ym - 4, z_of(an.t_carina - 0.05)])
        vessels.append((pa, hil, 9.0))
        hil_b = hil + np.array([0, -10, 8.0])
        bronchi_wall.append((carina, hil_b, 7.0))
        bronchi_lumen.append((carina, hil_b, 5.0))
        art_dirs = [
            np.array(v) for v in ([sx * 0.3, 0.1, 1], [sx, 0.35, -0.1], [sx * 0.35, -0.6, -1], [sx * 0.5, 0.5, -0.8])
        ]
        for br in _grow_tree(rng, hil, art_dirs, 5.5, 34.0, inside, 0.45):
            vessels.append((br.p0, br.p1, br.r))
            if br.gen <= 3:
                rb = 0.8 * br.r
                off = br.side * (br.r + rb + 1.0)
                bronchi_wall.append((br.p0 + off, br.p1 + off, rb + max(0.6, 0.25 * rb)))
                bronchi_lumen.append((br.p0 + off, br.p1 + off, rb))
        vein_root = np.array([xh + sx * 22, float(yh[k_mid]) - 10, z_of(an.t_heart + 0.07)])
        vein_dirs = [np.array(v) for v in ([sx, -0.2, 0.5], [sx, -0.5, -0.4], [sx * 0.6, 0.3, -0.6])]
        vessels += [(b.p0, b.p1, b.r) for b in _grow_tree(rng, vein_root, vein_dirs, 5.0, 30.0, inside, 0.45)]
    vfrac = np.zeros(grid.shape, np.float32)
    _raster_segments(grid, vessels, vfrac)
    soft_bg = (tissue == Tissue.LUNG) | (tissue == Tissue.FAT)
    hu[:] = np.where(soft_bg & (vfrac > 0), hu + vfrac * (40.0 - hu), hu)
    wfrac = np.zeros(grid.shape, np.float32)
    _raster_segments(grid, bronchi_wall, wfrac)
    hu[:] = np.where(soft_bg & (wfrac > 0), np.maximum(hu, hu + wfrac * (25.0 - hu)), hu)

    # --- COVID-like lesions inside the lungs
    label = np.zeros(grid.shape, np.uint8)
    label[left] = LEFT_LUNG
    label[right] = RIGHT_LUNG
    if not healthy:
        _add_lesions(rng, grid, an, env, lung_hu, hu, label, tissue, (n_shape, n_ret, n_tex), y_mid)

    lfrac = np.zeros(grid.shape, np.float32)
    _raster_segments(grid, bronchi_lumen, lfrac)
    airway_bg = soft_bg | (tissue == Tissue.LESION) | (tissue == Tissue.SOFT) & medi
    hu[:] = np.where(airway_bg & (lfrac > 0), hu + lfrac * (-990.0 - hu), hu)
    tissue[airway_bg & (lfrac > 0.5) & ~(label == INFECTION)] = Tissue.AIRWAY

    # --- table under the patient: two thin carbon shells around a foam core
    y_back = an.y0 - an.b_post * 1.06
    y_tab = y_back - an.table_gap + (x2**2) / 1400.0
    shell = ((np.abs(y2 - y_tab) < 1.2) | (np.abs(y2 - (y_tab - 12)) < 1.2)) & (np.abs(x2) < 165) & ~body
    core = (y2 < y_tab) & (y2 > y_tab - 12) & (np.abs(x2) < 165) & ~body & ~shell
    paint(np.broadcast_to(shell, grid.shape), 150.0, Tissue.TABLE)
    paint(np.broadcast_to(core, grid.shape), -850.0, Tissue.TABLE)

    # --- partial-volume blur and correlated scanner noise
    image = ndimage.gaussian_filter(hu, (0.6 / grid.sp * 1.5, 0.6 / grid.sp * 1.5, 0.0))
    noise = ndimage.gaussian_filter(rng.standard_normal(grid.shape).astype(np.float32), (0.7, 0.7, 0.0))
    image += noise * (an.noise_std / (noise.std() + 1e-6))
    np.clip(image, -1024.0, 3071.0, out=image)
    return PhantomCase(image.astype(np.float32), label, grid.affine(), bool(healthy), int(seed), tissue)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 3D connected component (drops lung-label islands between mediastinal organs)."""
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    counts = np.bincount(lab.ravel())
    counts[0] = 0
    return lab == int(np.argmax(counts))


def _add_lesions(
    rng: np.random.Generator,
    grid: _Grid,
    an: _Anatomy,
    env: np.ndarray,
    lung_hu: np.ndarray,
    hu: np.ndarray,
    label: np.ndarray,
    tissue: np.ndarray,
    fields: tuple[np.ndarray, np.ndarray, np.ndarray],
    y_mid: np.ndarray,
) -> None:
    """Subpleural, posterior/basal-predominant 3D GGO lesions (some with consolidation or crazy paving), in place."""
    n_shape, n_ret, n_tex = fields
    lung_vox = int(np.count_nonzero(env))
    if lung_vox == 0:
        return
    target = math.exp(rng.uniform(math.log(0.01), math.log(0.3)))
    # candidate centres: 2-22 mm inside the pleura, weighted to posterior and lower lung (coarse grid for speed)
    env_ds = env[::2, ::2, :]
    dist = ndimage.distance_transform_edt(env_ds, sampling=(2 * grid.sp, 2 * grid.sp, grid.sz))
    cand = np.argwhere((dist > 2) & (dist < 22))
    if len(cand) == 0:
        cand = np.argwhere(env_ds)
    xs, ys, zs = grid.axis(0)[::2], grid.axis(1)[::2], grid.axis(2)
    cy = ys[cand[:, 1]]
    weight = np.exp(-(cy - cy.min()) / 55.0) * (1.3 - grid.t[cand[:, 2]])
    weight /= weight.sum()
    infected = np.zeros(grid.shape, bool)
    count = 0
    for _ in range(16):
        if count >= target * lung_vox:
            break
        ci = cand[rng.choice(len(cand), p=weight)]
        c = np.array([xs[ci[0]], ys[ci[1]], zs[ci[2]]])
        remaining = (target * lung_vox - count) / lung_vox
        sc = float(np.clip((remaining / 0.05) ** (1 / 3), 0.55, 1.9))
        r_t, r_n, r_z = rng.uniform(14, 30) * sc, rng.uniform(8, 16) * sc, rng.uniform(12, 32) * sc
        lung_cx = an.x_m + (70.0 if c[0] >= an.x_m else -70.0)
        k = int(np.clip((c[2] + Z_EXTENT_MM / 2) / grid.sz, 0, grid.slices - 1))
        ang = math.atan2(c[1] - y_mid[k], c[0] - lung_cx) + math.pi / 2  # long axis tangential to the pleura
        ext = np.array([max(r_t, r_n) * 1.4, max(r_t, r_n) * 1.4, r_z * 1.4])
        i0, i1 = grid.index_box(c - ext, c + ext)
        sl = tuple(slice(a, b) for a, b in zip(i0, i1, strict=True))
        dx = grid.axis(0)[sl[0], None, None] - c[0]
        dy = grid.axis(1)[None, sl[1], None] - c[1]
        dz = grid.axis(2)[None, None, sl[2]] - c[2]
        u = dx * math.cos(ang) + dy * math.sin(ang)
        v = -dx * math.sin(ang) + dy * math.cos(ang)
        q = np.sqrt((u / r_t) ** 2 + (v / r_n) ** 2 + (dz / r_z) ** 2) + 0.32 * n_shape[sl]
        inl = env[sl]
        w = _smoothstep((1.1 - q) / 0.3)
        ggo = rng.uniform(-680, -380) + 55.0 * n_tex[sl]
        if rng.random() < 0.3:  # crazy paving: reticular septal thickening over the ground glass
            ggo = ggo + 140.0 * _smoothstep(1 - np.abs(n_ret[sl]) / 0.16)
        if rng.random() < 0.35:  # consolidation core
            core = _smoothstep((0.62 - q) / 0.3)
            ggo = ggo + core * (rng.uniform(-50, 40) - ggo)
        base = lung_hu[sl]
        les_hu = base + w * (ggo - base)
        m = inl & (q < 0.95)
        hu_v = hu[sl]
        hu_v[:] = np.where(inl & (w > 0), np.maximum(hu_v, les_hu), hu_v)
        inf_v = infected[sl]
        count += int(np.count_nonzero(m & ~inf_v))
        inf_v |= m
    label[infected] = INFECTION
    tissue[infected] = Tissue.LESION


# ----------------------------------------------------------------------------------------------------------------
# dataset writer


def _is_healthy(index: int, healthy_fraction: float) -> bool:
    """Case `index` is healthy when it crosses a multiple of 1/healthy_fraction (stable when cases are added)."""
    return math.floor((index + 1) * healthy_fraction) > math.floor(index * healthy_fraction)


def write_phantom_dataset(
    out_dir: str | Path,
    cases: int,
    seed: int,
    size: int = 256,
    slices: int = 48,
    healthy_fraction: float = 0.2,
    on_case: Callable[[int, Path, Path, dict], None] | None = None,
) -> list[tuple[Path, Path]]:
    """Write `cases` phantoms in the COVID-19-CT-Seg layout (HU int16 images, uint8 masks); returns (image, label)."""
    from cosingan_monai.io import save_nifti

    if cases < 0:
        raise ValueError(f"cases must be >= 0, got {cases}")
    if not 0.0 <= healthy_fraction <= 1.0:
        raise ValueError(f"healthy_fraction must be in [0, 1], got {healthy_fraction}")
    out = Path(out_dir)
    dirs = {name: out / name for name in (IMAGE_DIR, LABEL_DIR, LUNG_DIR, INFECTION_DIR)}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    written: list[tuple[Path, Path]] = []
    for i in range(cases):
        name = f"phantom_{i:03d}.nii.gz"
        paths = {k: d / name for k, d in dirs.items()}
        img_path, lab_path = paths[IMAGE_DIR], paths[LABEL_DIR]
        info: dict = {"index": i, "seed": seed + i, "healthy": _is_healthy(i, healthy_fraction)}
        if all(p.is_file() for p in paths.values()):
            info["skipped"] = True
            info.update(_label_stats(np.asarray(_load_label(lab_path))))
        else:
            case = make_phantom_case(seed + i, size=size, slices=slices, healthy=info["healthy"])
            lung_mask = _lung_sides(case.label)
            hu16 = np.clip(np.rint(case.image), -32768, 32767).astype(np.int16)
            save_nifti(lung_mask.astype(np.uint8), case.affine, paths[LUNG_DIR], dtype=np.uint8)
            save_nifti((case.label == INFECTION).astype(np.uint8), case.affine, paths[INFECTION_DIR], dtype=np.uint8)
            save_nifti(hu16, case.affine, img_path, dtype=np.int16)
            save_nifti(case.label, case.affine, lab_path, dtype=np.uint8)  # written last: marks the case complete
            info["skipped"] = False
            info.update(_label_stats(case.label))
        if on_case is not None:
            on_case(i, img_path, lab_path, info)
        written.append((img_path, lab_path))
    return written


def _lung_sides(label: np.ndarray) -> np.ndarray:
    """Lung_Mask values (1 left, 2 right) everywhere in the lungs, infection included (nearest lung side)."""
    inf = label == INFECTION
    lung = np.where(inf, 0, label)
    if not inf.any():
        return lung.astype(np.uint8)
    idx = ndimage.distance_transform_edt(lung == 0, return_distances=False, return_indices=True)
    filled = lung[tuple(idx)]
    return np.where(inf, filled, lung).astype(np.uint8)


def _load_label(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(str(path)).dataobj, dtype=np.uint8)


def _label_stats(label: np.ndarray) -> dict:
    lung = int(np.count_nonzero(label))
    inf = int(np.count_nonzero(label == INFECTION))
    return {"shape": tuple(int(s) for s in label.shape), "infection_pct": 100.0 * inf / lung if lung else 0.0}
