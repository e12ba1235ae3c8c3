"""Parametric chest anatomy for the phantom: body wall, ribs, spine, mediastinum, heart, diaphragm, lungs, table.

Why hand-rolled: no library ships a chest CT phantom with lung labels. Everything is in millimetres on a RAS grid
(x towards patient right, y anterior, z superior); painters run in order on a shared `Scene`, each writing HU and a
`Tissue` class, later painters overwriting earlier ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

FOV_MM = 350.0  # in-plane field of view, like a typical adult chest CT reconstruction
Z_EXTENT_MM = 240.0  # cranio-caudal extent covered by the volume, whatever the number of slices
RIB_T = 7.0  # radial rib thickness, mm
HILUM_X = 38.0  # lateral distance (mm) of each hilum from the mediastinal midline


class Tissue(IntEnum):
    """Tissue classes of `PhantomCase.tissue` (before blur and noise), so tests can check HU per tissue."""

    AIR = 0
    FAT = 1
    SOFT = 2  # skin, muscle, pleura, oesophagus, spinal canal, cartilage, discs
    BONE_CORTEX = 3
    BONE_MARROW = 4
    HEART = 5  # myocardium and blood (unenhanced)
    VESSEL = 6  # aorta, caval veins, pulmonary trunk, neck vessels
    LUNG = 7
    LESION = 8
    AIRWAY = 9  # air in the trachea, bronchi and stomach
    ABDOMEN = 10  # liver, spleen, stomach wall and contents below the diaphragm
    TABLE = 11


class GridAxes:
    """Voxel-centre axes (mm) and mm-box lookups shared by a volume's `Grid` and the sub-boxes the lesions raster."""

    shape: tuple[int, ...]
    axes: list[np.ndarray]
    origin: np.ndarray
    step: np.ndarray

    def axis(self, k: int) -> np.ndarray:
        """Voxel-centre coordinates (mm) along axis k."""
        return self.axes[k]

    def index_box(self, lo_mm: np.ndarray, hi_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Voxel index range [i0, i1) covering the mm box [lo_mm, hi_mm], clipped to this grid."""
        shape = np.array(self.shape)
        i0 = np.clip(np.floor((lo_mm - self.origin) / self.step).astype(int), 0, shape)
        i1 = np.clip(np.ceil((hi_mm - self.origin) / self.step).astype(int) + 1, 0, shape)
        return i0, i1


class Grid(GridAxes):
    """Voxel-centre coordinates in mm and the relative height t (0 inferior, 1 superior) of a size^2 x slices volume."""

    def __init__(self, size: int, slices: int) -> None:
        self.size, self.slices = size, slices
        self.sp, self.sz = FOV_MM / size, Z_EXTENT_MM / slices
        self.shape = (size, size, slices)
        self.step = np.array([self.sp, self.sp, self.sz])
        self.axes = [
            ((np.arange(n) - (n - 1) / 2) * st).astype(np.float32) for n, st in zip(self.shape, self.step, strict=True)
        ]
        self.origin = np.array([a[0] for a in self.axes], np.float64)
        self.t = ((np.arange(slices) + 0.5) / slices).astype(np.float32)

    def voxel(self, p: np.ndarray) -> tuple[int, int, int] | None:
        """Nearest voxel index of the mm point p, or None outside the volume."""
        i, j, k = (round((float(p[a]) - self.origin[a]) / self.step[a]) for a in range(3))
        if 0 <= i < self.size and 0 <= j < self.size and 0 <= k < self.slices:
            return i, j, k
        return None

    def z_of(self, t: float) -> float:
        """z (mm) at relative height t."""
        return -Z_EXTENT_MM / 2 + t * Z_EXTENT_MM

    def affine(self) -> np.ndarray:
        """RAS voxel-to-mm affine, diagonal, centred on the volume."""
        aff = np.diag([self.sp, self.sp, self.sz, 1.0])
        aff[:3, 3] = self.origin
        return aff


def smooth_field(rng: np.random.Generator, grid: Grid, cell_mm: float) -> np.ndarray:
    """Unit-variance random field with feature size ~cell_mm: coarse Gaussian noise, smoothed, trilinearly upsampled."""
    spacing = (grid.sp, grid.sp, grid.sz)
    lo = [max(3, math.ceil(n * s / cell_mm) + 2) for n, s in zip(grid.shape, spacing, strict=True)]
    coarse = ndimage.gaussian_filter(rng.standard_normal(lo).astype(np.float32), 0.7)
    up = F.interpolate(torch.from_numpy(coarse)[None, None], size=grid.shape, mode="trilinear", align_corners=True)
    f = up[0, 0].numpy()
    sub = f[::3, ::3, ::2]  # statistics on a subsample: plenty of samples, much faster
    return (f - sub.mean()) / (sub.std() + 1e-6)


def smoothstep(x: np.ndarray | float) -> np.ndarray:
    """Cubic 0..1 ramp of x clipped to [0, 1] (soft edges)."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def seg_dist2d(x: np.ndarray, y: np.ndarray, a: tuple, b: tuple) -> np.ndarray:
    """In-plane distance (mm) from (x, y) to the segment a-b; endpoints may be per-slice arrays."""
    (ax, ay), (bx, by) = a, b
    dx, dy = bx - ax, by - ay
    s = np.clip(((x - ax) * dx + (y - ay) * dy) / np.maximum(dx * dx + dy * dy, 1e-6), 0, 1)
    return np.sqrt((x - ax - s * dx) ** 2 + (y - ay - s * dy) ** 2)


@dataclass
class Anatomy:
    """Per-case random anatomy (mm, radians, relative heights t); varies habitus, breathing and pose."""

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
    r_aorta: float
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
    lung_offset: float


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one patient's anatomy; the ranges span slim to obese adults and shallow to deep inspiration."""
    u = rng.uniform
    dome_r = u(0.25, 0.34)
    dome_l = dome_r - u(0.03, 0.07)
    return Anatomy(
        a=u(145, 163),
        b_ant=u(104, 122),
        b_post=u(94, 108),
        y0=u(-10, 2),
        a_mod=(u(0.02, 0.045), u(0.6, 1.4), u(0, 2 * math.pi)),
        b_mod=(u(0.02, 0.045), u(0.6, 1.4), u(0, 2 * math.pi)),
        pert=[(k, rng.normal(0, 0.012), u(0, 2 * math.pi)) for k in (2, 3, 4, 5)],
        obesity=u(0.5, 1.6),
        rib_pitch=u(24, 30),
        rib_drop=u(140, 180),
        rib_phase=u(0, 1),
        x_m=u(-8, -2),
        r_vb=u(14, 17),
        disc_phase=u(0, 1),
        t_carina=u(0.6, 0.67),
        t_arch=u(0.71, 0.77),
        r_aorta=u(10.5, 13.5),
        heart_dx=u(16, 28),
        heart_dy=u(14, 26),
        heart_a=u(54, 64),
        heart_b=u(40, 48),
        heart_rot=u(math.radians(125), math.radians(145)),
        t_heart=dome_l + u(0.1, 0.14),
        dome_r=dome_r,
        dome_l=dome_l,
        dome_k=u(0.008, 0.011),
        t_top=u(0.86, 0.93),
        gastric_bubble=bool(rng.random() < 0.6),
        noise_std=u(10, 25),
        table_gap=u(4, 14),
        lung_offset=u(0, 150),  # inspiration depth and interstitial density vary between patients
    )


@dataclass
class Organ:
    """A round mediastinal structure per slice: centre (x, y) mm, radius mm, presence, HU and tissue."""

    x: np.ndarray
    y: np.ndarray
    r: float
    present: np.ndarray
    hu: float
    kind: Tissue

    def dist(self, s: Scene) -> np.ndarray:
        """In-plane distance to the centre, +inf on slices without the organ."""
        d = np.sqrt((s.x - self.x[None, None]) ** 2 + (s.y - self.y[None, None]) ** 2)
        return np.where(self.present[None, None], d, np.inf)


@dataclass
class Scene:
    """What the painters share: grid, anatomy, coordinates, random fields, the HU/tissue canvas and landmarks."""

    grid: Grid
    an: Anatomy
    fields: dict[str, np.ndarray]
    hu: np.ndarray = field(init=False)
    tissue: np.ndarray = field(init=False)
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # body, cav, medi, below, spine, heart, lungs...
    marks: dict[str, np.ndarray] = field(default_factory=dict)  # per-slice landmark y positions (mm)

    def __post_init__(self) -> None:
        self.hu = np.full(self.grid.shape, -1000.0, np.float32)
        self.tissue = np.zeros(self.grid.shape, np.uint8)
        self.x = self.grid.axis(0)[:, None, None]
        self.y = self.grid.axis(1)[None, :, None]
        self.z = self.grid.axis(2)[None, None, :]
        self.t1 = self.grid.t
        self.t = self.t1[None, None, :]

    def paint(self, mask: np.ndarray, value: float | np.ndarray, kind: Tissue) -> None:
        """Set HU (a constant or a same-shape field) and tissue class where mask holds."""
        mask = np.broadcast_to(mask, self.grid.shape)
        self.hu[mask] = value[mask] if isinstance(value, np.ndarray) else value
        self.tissue[mask] = kind

    def tex(self, name: str, amp: float) -> np.ndarray:
        """amp x a named unit-variance texture field."""
        return amp * self.fields[name]


# ----------------------------------------------------------------------------------------------------------------
# body wall


def wall_thickness(th: np.ndarray, t: np.ndarray, an: Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """Subcutaneous fat and muscle thickness (mm) by polar angle th (pi/2 = anterior) and height t."""
    s = np.abs(np.sin(th))
    fat = an.obesity * (8.0 + 7.0 * s) * (1.0 + 0.3 * (1.0 - t))
    back = np.abs(np.angle(np.exp(1j * (th + np.pi / 2))))  # angle from the posterior midline, 0..pi
    upper = smoothstep((t - 0.3) / 0.35)
    pect = 18.0 * upper * np.exp(-(((np.pi - back) - 0.8) ** 2) / 0.15)
    paraspinal = 34.0 * np.exp(-((back / 0.36) ** 2))
    lat = 10.0 * np.exp(-(((back - 1.0) / 0.45) ** 2))
    shoulder = 20.0 * smoothstep((t - 0.55) / 0.35) * np.exp(-(((back - 0.95) / 0.5) ** 2))
    return fat.astype(np.float32), (9.0 + pect + paraspinal + lat + shoulder).astype(np.float32)


def outline_radius(th: np.ndarray, t: np.ndarray, an: Anatomy) -> np.ndarray:
    """Distance (mm) from the body centre to the skin along angle th at height t (a perturbed superellipse).

    The superellipse is evaluated once in-plane; its slow change along z (breathing, habitus, the narrower upper
    chest with the arms raised) scales it per slice, blended between the lateral and the antero-posterior factor.
    """
    th2 = th if th.ndim < 3 else th[..., :1]
    anterior = np.sin(th2) > 0
    b = np.where(anterior, an.b_ant, an.b_post)
    p = np.where(anterior, 2.2, 2.8)
    c, s = np.abs(np.cos(th2)) + 1e-6, np.abs(np.sin(th2)) + 1e-6
    r = 1.0 / ((c / an.a) ** p + (s / b) ** p) ** (1.0 / p)
    r = r * (1.0 + sum(amp * np.cos(k * th2 + ph) for k, amp, ph in an.pert))
    taper = 1 - 0.12 * smoothstep((t - 0.4) / 0.55)  # the upper chest is narrower (arms raised)
    a_scale = (1 + an.a_mod[0] * np.sin(2 * np.pi * an.a_mod[1] * t + an.a_mod[2])) * taper
    b_scale = 1 + an.b_mod[0] * np.sin(2 * np.pi * an.b_mod[1] * t + an.b_mod[2])
    c2 = np.cos(th2) ** 2
    return (r * (a_scale * c2 + b_scale * (1 - c2))).astype(np.float32)


def paint_body_wall(s: Scene) -> None:
    """Skin, subcutaneous fat, muscle, ribs with cartilage, sternum and scapulae; sets the cavity and landmarks."""
    an = s.an
    yd = s.y - an.y0
    th = np.arctan2(yd, s.x)
    depth = outline_radius(th, s.t, an) - np.sqrt(s.x * s.x + yd * yd)
    fat_t, mus_t = wall_thickness(th, s.t, an)
    wall = fat_t + mus_t
    body = depth >= 0
    s.paint(body, 30.0 + s.tex("med", 6), Tissue.SOFT)
    s.paint(body & (depth >= 1.8) & (depth < fat_t), -100.0 + s.tex("med", 8), Tissue.FAT)
    s.paint(body & (depth >= fat_t), 45.0 + s.tex("med", 5), Tissue.SOFT)
    # ribs: oval cross-sections on a helix that drops anteriorly, so each slice cuts several short segments
    back = np.abs(np.angle(np.exp(1j * (th + np.pi / 2))))
    rib_arg = (s.z + an.rib_drop * back / np.pi) / an.rib_pitch + an.rib_phase
    s_a = (rib_arg - np.floor(rib_arg)) / 0.4
    s_r = (depth - wall) / RIB_T
    rib_q = ((s_r - 0.5) / 0.5) ** 2 + ((s_a - 0.5) / 0.5) ** 2
    rib = (rib_q < 1) & (back > 0.3) & (back < np.pi - 0.14)
    cartilage = rib & (back > np.pi - 0.5)
    s.paint(rib & ~cartilage, 700.0, Tissue.BONE_CORTEX)
    s.paint(rib & ~cartilage & (rib_q < 0.3), 220.0 + s.tex("tex", 30), Tissue.BONE_MARROW)
    s.paint(cartilage, 120.0, Tissue.SOFT)
    # scapulae: thin bony plates behind the upper posterolateral ribs
    scap = (back > 0.55) & (back < 1.35) & (depth > wall - 15) & (depth < wall - 10) & (s.t > 0.5) & (s.t < 0.93)
    s.paint(scap, 600.0, Tissue.BONE_CORTEX)
    # sternum: anterior midline plate between the costal cartilages
    stern = (np.abs(s.x) < 13) & (yd > 0) & (depth >= wall - 3) & (depth < wall + RIB_T + 2) & (s.t > 0.18)
    s.paint(stern, 650.0, Tissue.BONE_CORTEX)
    inner = stern & (np.abs(s.x) < 9) & (depth >= wall - 1) & (depth < wall + RIB_T)
    s.paint(inner, 200.0 + s.tex("tex", 30), Tissue.BONE_MARROW)
    cav_depth = depth - wall - RIB_T
    s.masks.update(body=body, cav=cav_depth >= 0, cav_depth=cav_depth)
    s.paint(s.masks["cav"], 30.0, Tissue.SOFT)
    # landmarks along z: the cavity's posterior and anterior edge at the midline
    t1 = s.t1
    th_post, th_ant = np.full_like(t1, -np.pi / 2), np.full_like(t1, np.pi / 2)
    f_p, m_p = wall_thickness(th_post, t1, an)
    f_a, m_a = wall_thickness(th_ant, t1, an)
    y_cp = an.y0 - outline_radius(th_post, t1, an) + f_p + m_p + RIB_T
    y_front = an.y0 + outline_radius(th_ant, t1, an) - f_a - m_a - RIB_T
    y_vb = y_cp + 0.3 * an.r_vb
    s.marks.update(
        y_cp=y_cp,
        y_front=y_front,
        y_mid=0.5 * (y_cp + y_front),
        y_back=an.y0 - outline_radius(th_post, t1, an),
        y_vb=y_vb,
        y_vf=y_vb + an.r_vb,
    )


# ----------------------------------------------------------------------------------------------------------------
# spine


def mark_spine(s: Scene) -> None:
    """The vertebral body's normalised radius field and the no-lung zone around it (used before painting)."""
    r = s.an.r_vb
    s.fields["q_vb"] = np.sqrt((s.x / (1.12 * r)) ** 2 + ((s.y - s.marks["y_vb"][None, None]) / r) ** 2)
    s.masks["spine"] = s.fields["q_vb"] < 1 + 4.0 / r


def paint_spine(s: Scene) -> None:
    """Vertebral body (cortex, marrow, discs), canal, pedicles, laminae, spinous and transverse processes."""
    an, r = s.an, s.an.r_vb
    q_vb = s.fields["q_vb"]
    disc = ((s.z / 26.0 + an.disc_phase) % 1.0) < 0.2
    vb = q_vb < 1
    s.paint(vb & ~disc, 650.0, Tissue.BONE_CORTEX)
    s.paint(vb & ~disc & (q_vb < 0.84), 230.0 + s.tex("tex", 35), Tissue.BONE_MARROW)
    s.paint(vb & disc, 85.0, Tissue.SOFT)
    # posterior elements, computed in a box around them only (full-volume distance maps are slow)
    y_vb = s.marks["y_vb"][None, None]
    y_sc = y_vb - r - 7.0
    bx = np.abs(s.grid.axis(0)) < 36
    by = (s.grid.axis(1) > float(y_sc.min()) - 40) & (s.grid.axis(1) < float(y_vb.max()))
    box = (slice(*np.flatnonzero(bx)[[0, -1]] + [0, 1]), slice(*np.flatnonzero(by)[[0, -1]] + [0, 1]))
    x, y = s.x[box[0]], s.y[:, box[1]]
    arch = np.zeros((x.shape[0], y.shape[1], s.grid.slices), bool)
    for sx in (-1.0, 1.0):
        arch |= seg_dist2d(x, y, (sx * 0.6 * r, y_vb - 0.6 * r), (sx * 9.0, y_sc)) < 3.5  # pedicle
        arch |= seg_dist2d(x, y, (sx * 9.0, y_sc), (0.0, y_sc - 11.0)) < 3.0  # lamina
        arch |= seg_dist2d(x, y, (sx * 9.0, y_sc + 1.0), (sx * 27.0, y_sc - 7.0)) < 4.0  # transverse process
    arch |= seg_dist2d(x, y, (0.0, y_sc - 11.0), (0.0, y_sc - 34.0)) < 3.0  # spinous process
    canal = np.sqrt(x**2 + (y - y_sc) ** 2) < 7.0
    full = np.zeros(s.grid.shape, bool)
    full[box] = arch
    s.paint(full, 600.0, Tissue.BONE_CORTEX)
    full[box] = canal
    s.paint(full, 15.0, Tissue.SOFT)  # spinal canal


# ----------------------------------------------------------------------------------------------------------------
# mediastinum, heart, abdomen


def mediastinal_organs(s: Scene) -> list[Organ]:
    """Oesophagus, aorta, azygos, caval and pulmonary vessels, neck vessels and trachea as per-slice disks."""
    an, t = s.an, s.t1
    x_m, ones = an.x_m, np.ones_like(s.t1)
    y_vb, y_vf = s.marks["y_vb"], s.marks["y_vf"]
    y_asc = s.marks["y_mid"] + 26
    above_heart = t > an.t_heart + 0.15
    t_pa = an.t_carina - 0.07
    neck = t > an.t_arch + 0.05
    s.marks["y_asc"], s.marks["y_tr"] = y_asc, y_vf + 19
    x_desc = x_m - 0.9 * an.r_vb - 10
    s.marks["x_desc"] = np.float32(x_desc)
    return [
        Organ(x_m - 4 * ones, y_vf + 7, 7.5, ones > 0, 35.0, Tissue.SOFT),  # oesophagus
        Organ(x_desc * ones, y_vb + 3, an.r_aorta, t <= an.t_arch + 0.02, 42.0, Tissue.VESSEL),  # descending aorta
        Organ(x_m + 0.6 * an.r_vb + 6 * ones, y_vb + 2, 4.0, t < an.t_arch, 40.0, Tissue.VESSEL),  # azygos
        Organ(x_m + 13 * ones, y_asc, an.r_aorta + 3, above_heart & (t <= an.t_arch + 0.02), 42.0, Tissue.VESSEL),
        Organ(x_m + 34 * ones, y_asc - 4, 10.5, (t > an.t_heart + 0.1) & (t < an.t_arch + 0.12), 40.0, Tissue.VESSEL),
        Organ(x_m - 17 * ones, y_asc + 4, 14.5, np.abs(t - t_pa) < 0.04, 40.0, Tissue.VESSEL),  # pulmonary trunk
        Organ(x_m + 20 * ones, y_asc - 8, 7.0, neck, 40.0, Tissue.VESSEL),  # brachiocephalic trunk
        Organ(x_m + 3 * ones, y_asc - 14, 5.5, neck, 40.0, Tissue.VESSEL),  # left common carotid
        Organ(x_m - 14 * ones, y_asc - 18, 6.5, neck, 40.0, Tissue.VESSEL),  # left subclavian
        Organ(x_m + 1 * ones, y_vf + 19, 10.5, t >= an.t_carina, 40.0, Tissue.SOFT),  # trachea wall
        Organ(x_m + 1 * ones, y_vf + 19, 8.0, t >= an.t_carina, -1000.0, Tissue.AIRWAY),  # trachea lumen
    ]


def _arch_distance(s: Scene, asc: tuple, desc: tuple, on: np.ndarray) -> np.ndarray:
    """In-plane distance to the aortic arch, a quadratic Bezier bulging left-anteriorly from the ascending to the
    descending aorta (past the left of the trachea); +inf on slices where `on` is false."""
    out = np.full(s.grid.shape, np.inf, np.float32)
    ks = np.flatnonzero(on)
    if len(ks) == 0:
        return out
    (ax, ay), (dx, dy) = asc, desc
    ay, dy = np.asarray(ay)[ks], np.asarray(dy)[ks]
    cx, cy = s.an.x_m - 22.0, ay - 2.0  # control point: left of the midline, level with the ascending aorta
    pts = [
        ((1 - u) ** 2 * ax + 2 * u * (1 - u) * cx + u * u * dx, (1 - u) ** 2 * ay + 2 * u * (1 - u) * cy + u * u * dy)
        for u in np.linspace(0, 1, 7)
    ]
    x, y = s.x, s.y
    d = np.min([seg_dist2d(x, y, p, q) for p, q in zip(pts[:-1], pts[1:], strict=True)], axis=0)
    out[:, :, ks] = d
    return out


def paint_heart_and_mediastinum(s: Scene) -> None:
    """Mediastinal fat holding the organs, the aortic arch, and the heart with epicardial fat and pericardium."""
    an, cav, t1 = s.an, s.masks["cav"], s.t1
    organs = mediastinal_organs(s)
    y_vb, y_asc, y_front = s.marks["y_vb"], s.marks["y_asc"], s.marks["y_front"]
    wobble = s.tex("shape", 3.0)  # keeps the mediastinal borders from being ruler-straight
    medi = (np.abs(s.x - an.x_m + wobble) < 10 + 0.5 * wobble) & (s.y > y_vb[None, None] - 0.3 * an.r_vb)
    for o in organs:
        medi |= o.dist(s) < o.r + 6
    # thymic fat: a triangle between the great vessels and the sternum above the heart
    frac = np.clip((y_front - s.y) / np.maximum(y_front - y_asc, 1), 0, 1)
    medi |= (np.abs(s.x - an.x_m - 4) < 8 + 22 * frac) & (s.y > y_asc) & (s.t > an.t_heart + 0.12)
    arch_t = ((t1 > an.t_arch - 0.02) & (t1 < an.t_arch + 0.045))[None, None]
    arch_d = _arch_distance(s, (an.x_m + 13, y_asc), (float(s.marks["x_desc"]), y_vb + 3), arch_t[0, 0])
    medi |= (arch_d < an.r_aorta + 8) & arch_t
    # hila: lung roots at the level just below the carina, where bronchi and pulmonary vessels enter
    hil_t = (np.abs(t1 - (an.t_carina - 0.06)) < 0.05)[None, None]
    for sx in (-1.0, 1.0):
        hx, hy = an.x_m + sx * HILUM_X, s.marks["y_mid"][None, None] - 2
        medi |= (np.sqrt((s.x - hx) ** 2 + (s.y - hy) ** 2) < 17) & hil_t
    vein_t = ((t1 > an.t_arch + 0.06) & (t1 < an.t_arch + 0.12))[None, None]
    brachio_v = seg_dist2d(s.x, s.y, (an.x_m - 38, y_asc + 10), (an.x_m + 32, y_asc - 2))
    medi |= (brachio_v < 11) & vein_t
    # heart: rotated ellipse with an ellipsoidal z profile (flatter above, sitting on the left dome below)
    low = an.t_heart - an.dome_l + 0.04  # the heart rests on the central tendon, just below the left dome
    hz = np.clip(1 - ((t1 - an.t_heart) / np.where(t1 < an.t_heart, low, 0.2)) ** 2, 0, 1) ** 0.5
    xh, yh = an.x_m - an.heart_dx, s.marks["y_mid"] + an.heart_dy
    cr, sr = math.cos(an.heart_rot), math.sin(an.heart_rot)
    du, dv = s.x - xh, s.y - yh[None, None]
    scale = np.maximum(hz, 1e-3)[None, None]
    q_h = np.sqrt(
        ((du * cr + dv * sr) / (an.heart_a * scale)) ** 2 + ((-du * sr + dv * cr) / (an.heart_b * scale)) ** 2
    )
    heart_zone = cav & (hz[None, None] > 0.05)
    pericard = heart_zone & (q_h < 1.0 + 6.0 / an.heart_b)
    medi = cav & (medi | pericard) & ~s.masks["spine"]
    below = s.masks["below"]
    s.paint(medi & ~below, -95.0 + s.tex("med", 10), Tissue.FAT)
    for o in organs:
        inside = o.dist(s) < o.r
        s.paint(inside & (cav | (o.kind == Tissue.AIRWAY)), o.hu, o.kind)
    s.paint((arch_d < an.r_aorta + 1) & arch_t & cav, 42.0, Tissue.VESSEL)
    s.paint((brachio_v < 5) & vein_t & cav, 40.0, Tissue.VESSEL)
    s.paint(pericard & (q_h >= 1.0 + 4.0 / an.heart_b), 30.0, Tissue.SOFT)  # pericardium
    s.paint(pericard & (q_h < 1.0 + 4.0 / an.heart_b), -95.0 + s.tex("med", 10), Tissue.FAT)  # epicardial fat
    s.paint(heart_zone & (q_h < 1.0) & ~below, 40.0 + s.tex("med", 4), Tissue.HEART)
    s.masks["medi"] = medi
    s.marks["heart"] = np.array([xh, 0.0, 0.0], np.float32)
    s.marks["y_heart"] = yh


def paint_abdomen(s: Scene) -> None:
    """Diaphragm domes (right higher) and the liver, spleen and stomach (with a fundal air bubble) below them."""
    an, cav = s.an, s.masks["cav"]
    zr, zl = s.grid.z_of(an.dome_r), s.grid.z_of(an.dome_l)
    # domes peak in front of centre and fall steeply behind: the posterior costophrenic recesses are the lowest lung
    ydp = s.marks["y_mid"][None, None] + 15
    dy2 = np.where(s.y < ydp, 1.4, 0.9) * (s.y - ydp) ** 2
    dome_r = zr - an.dome_k * (0.7 * (s.x - 60) ** 2 + dy2) + s.tex("shape", 3.0)
    dome_l = zl - an.dome_k * (0.7 * (s.x + 60) ** 2 + dy2) + s.tex("shape", 3.0)
    below = cav & (s.z < np.maximum(dome_r, dome_l))
    s.paint(below & (s.x >= an.x_m), 58.0 + s.tex("med", 6), Tissue.ABDOMEN)  # liver
    s.paint(below & (s.x < an.x_m), 45.0 + s.tex("med", 6), Tissue.ABDOMEN)  # spleen, stomach
    if an.gastric_bubble:
        gz, gy = zl - 20, ydp - 5
        gq = ((s.x + 58) / 30) ** 2 + ((s.y - gy) / 26) ** 2 + ((s.z - gz) / 20) ** 2
        # supine patient: gas rises anteriorly, so the air-fluid level is a coronal plane (a line in axial view)
        s.paint(below & (gq < 1) & (s.y > gy + 4), -1000.0, Tissue.AIRWAY)
        s.paint(below & (gq < 1) & (s.y <= gy + 4), 15.0, Tissue.ABDOMEN)
    s.masks["below"] = below


# ----------------------------------------------------------------------------------------------------------------
# lungs and table


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 3D connected component (drops lung-label islands between mediastinal organs)."""
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    counts = np.bincount(lab.ravel())
    counts[0] = 0
    return lab == int(np.argmax(counts))


def paint_lungs(s: Scene) -> None:
    """Lungs = cavity minus mediastinum, spine and abdomen, narrowed to a cone at the apex; parenchyma texture."""
    an, t1 = s.an, s.t1
    t_ap = an.t_top - 0.32  # the apical cap: lung cross-sections shrink to nothing at t_top
    cone = np.where(t1 < t_ap, 1e3, 85.0 * np.sqrt(np.clip((an.t_top - t1) / (an.t_top - t_ap), 0, 1)))
    apex_ok = np.zeros(s.grid.shape, bool)
    for sx in (-1.0, 1.0):
        # apical lung: an antero-posteriorly elongated oval, lateral and posterior
        d2 = ((s.x - (an.x_m + sx * 62.0)) / 0.85) ** 2 + ((s.y - (s.marks["y_mid"][None, None] - 18)) / 1.1) ** 2
        apex_ok |= np.sqrt(d2) < cone[None, None] + s.tex("shape", 5.0)  # lobulated, not a perfect oval
    m = s.masks
    env = m["cav"] & (m["cav_depth"] > 1.0) & ~m["medi"] & ~m["spine"] & ~m["below"] & apex_ok & (s.t < an.t_top)
    left = largest_component(env & (s.x < an.x_m))
    right = largest_component(env & (s.x >= an.x_m))
    env = left | right
    y_front, y_cp = s.marks["y_front"][None, None], s.marks["y_cp"][None, None]
    post = np.clip((y_front - s.y) / (y_front - y_cp), 0, 1)  # gravity-dependent density, supine patient
    lung_hu = -885.0 + an.lung_offset + 55.0 * post**3 + s.tex("med", 14) + s.tex("tex", 10)
    if "fine" in s.fields:  # interstitium and unresolved small vessels: real lung's fine texture (results.md)
        lung_hu = lung_hu + s.tex("fine", 40)
    lung_hu = lung_hu.astype(np.float32)
    s.paint(env, lung_hu, Tissue.LUNG)
    m.update(lungs=env, left=left, right=right)
    s.fields["lung_hu"] = lung_hu


def paint_table(s: Scene) -> None:
    """The scanner table under the patient: two thin curved carbon shells around a foam core."""
    y_tab = float(s.marks["y_back"].min()) - s.an.table_gap + (s.x**2) / 1400.0
    free = (np.abs(s.x) < 165) & ~s.masks["body"]
    shell = ((np.abs(s.y - y_tab) < 1.3) | (np.abs(s.y - (y_tab - 12)) < 1.0)) & free
    core = (s.y < y_tab) & (s.y > y_tab - 12) & free & ~shell
    s.paint(shell, 150.0, Tissue.TABLE)
    s.paint(core, -880.0, Tissue.TABLE)
