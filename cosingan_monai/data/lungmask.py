"""Classical (weight-free) body and lung masks for chest CT in HU, RAS (x, y[, z]) arrays.

Why hand-rolled: MONAI has no threshold-based lung segmentation (its lung models need downloaded weights, which we
cannot get), so this module combines thresholds, connected components and morphology from scipy.ndimage. Big
morphological closings use Euclidean distance transforms (linear time) instead of large structuring elements.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from cosingan_monai.core.constants import INFECTION

LEFT, RIGHT = 1, 2

BODY_HU = -500.0  # tissue vs air; padding (-2048, -1024 ...) and outside air fall below
AIR_HU = -400.0  # lung parenchyma (-900..-700) and most ground-glass (-700..-400) fall below
GAS_HU = -950.0  # median HU of pure gas (bowel, stomach, trachea); aerated lung has a higher median
DEFAULT_SPACING = (0.75, 0.75, 5.0)  # mm, the project's assumption for PNG slices (CONVENTIONS.md)


def _spacing(spacing: tuple[float, ...] | None, ndim: int) -> tuple[float, ...]:
    """Return an ndim-long spacing in mm, filling unknowns with the project defaults."""
    if spacing is None:
        return DEFAULT_SPACING[:ndim]
    sp = tuple(float(s) for s in spacing)[:ndim]
    if len(sp) < ndim:
        sp = sp + DEFAULT_SPACING[len(sp) : ndim]
    if any(not np.isfinite(s) or s <= 0 for s in sp):
        raise ValueError(f"spacing must be positive and finite, got {spacing}")
    return sp


def _check(hu: np.ndarray, name: str = "hu") -> np.ndarray:
    """Validate a 2D/3D array and return it as a float32 ndarray (torch tensors are accepted)."""
    arr = np.asarray(hu.detach().cpu() if hasattr(hu, "detach") else hu)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} must be 2D (x, y) or 3D (x, y, z) without a channel axis, got shape {arr.shape}")
    return arr


def _slices(arr: np.ndarray) -> np.ndarray:
    """View a 2D or 3D array as 3D (x, y, z) so per-slice code handles both."""
    return arr[..., None] if arr.ndim == 2 else arr


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8/26-connected component of a boolean mask (empty stays empty)."""
    lab, n = ndi.label(mask, structure=np.ones((3,) * mask.ndim, bool))
    if n == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(sizes.argmax())


def _disk(radius_px: float) -> np.ndarray:
    """A 2D disk structuring element of the given radius in pixels."""
    r = max(int(np.ceil(radius_px)), 1)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (xx**2 + yy**2) <= radius_px**2 + 1e-6


def _closing_mm(mask2d: np.ndarray, radius_mm: float, sampling: tuple[float, float]) -> np.ndarray:
    """Binary closing of a 2D mask with a disk of radius_mm, via distance transforms (fast for big radii)."""
    if not mask2d.any():
        return mask2d.copy()
    pad = int(np.ceil(radius_mm / min(sampling))) + 2
    idx = np.argwhere(mask2d)
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = idx.max(0) + pad + 1
    # work in a padded crop so the dilation never hits the array border
    crop = np.zeros(tuple(hi - lo), bool)
    sub = mask2d[lo[0] : hi[0], lo[1] : hi[1]]
    crop[: sub.shape[0], : sub.shape[1]] = sub
    crop = np.pad(crop, pad)
    dil = ndi.distance_transform_edt(~crop, sampling=sampling) <= radius_mm
    clo = ndi.distance_transform_edt(dil, sampling=sampling) > radius_mm
    clo = clo[pad:-pad, pad:-pad][: sub.shape[0], : sub.shape[1]]
    out = mask2d.copy()
    out[lo[0] : hi[0], lo[1] : hi[1]] |= clo
    return out


def _fill_holes_framed(mask: np.ndarray, min_edge_cover: float = 0.3) -> np.ndarray:
    """Fill holes in a 2D mask, treating image edges the mask mostly covers as closed.

    Cropped exports (the body fills the frame) would otherwise leave lungs that touch the image edge unfilled.
    """
    frame = [mask[0].mean(), mask[-1].mean(), mask[:, 0].mean(), mask[:, -1].mean()]
    padded = np.pad(mask, 1)
    if frame[0] >= min_edge_cover:
        padded[0, :] = True
    if frame[1] >= min_edge_cover:
        padded[-1, :] = True
    if frame[2] >= min_edge_cover:
        padded[:, 0] = True
    if frame[3] >= min_edge_cover:
        padded[:, -1] = True
    return ndi.binary_fill_holes(padded)[1:-1, 1:-1]


def body_mask(hu: np.ndarray, threshold: float = BODY_HU, spacing: tuple[float, ...] | None = None) -> np.ndarray:
    """Boolean patient-body mask per axial slice: tissue above `threshold`, largest component, holes filled.

    Air, scanner padding outside the scan circle and (mostly) the table are excluded; the lungs are inside, also
    when the body fills the frame and the lungs touch the image edge.
    """
    arr = _check(hu)
    sp = _spacing(spacing, 2)
    vol = _slices(arr)
    out = np.zeros(vol.shape, bool)
    # a small opening cuts thin bridges to the table and blankets before taking the largest component
    open_px = max(1.0, 2.0 / min(sp))
    for z in range(vol.shape[2]):
        tissue = vol[:, :, z] > threshold
        if not tissue.any():
            continue
        opened = ndi.binary_opening(tissue, structure=_disk(open_px))
        body = _largest_component(opened if opened.any() else tissue)
        out[:, :, z] = _fill_holes_framed(body)
    return out[..., 0] if arr.ndim == 2 else out


def otsu_air_threshold(hu: np.ndarray, body: np.ndarray, lo: float = -450.0, hi: float = -250.0) -> float:
    """Otsu threshold between aerated lung and soft tissue inside the body, clipped to [lo, hi] HU.

    Adapts to ground-glass-heavy lungs and to PNG exports whose real window differs from the nominal one.
    """
    import SimpleITK as sitk

    vals = np.clip(hu[body], -1024.0, 200.0).astype(np.float32)  # bone and padding would skew the histogram
    if vals.size < 16 or vals.min() == vals.max():
        return AIR_HU
    otsu = sitk.OtsuThresholdImageFilter()
    otsu.SetNumberOfHistogramBins(256)
    otsu.SetInsideValue(0)
    otsu.SetOutsideValue(1)
    otsu.Execute(sitk.GetImageFromArray(vals[None, :]))
    return float(np.clip(otsu.GetThreshold(), lo, hi))


def _inner_air(air: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Per slice, drop air islands touching the body outline (outside air, skin folds); image edges do not count."""
    out = np.zeros_like(air)
    for z in range(air.shape[2]):
        a, b = air[:, :, z], body[:, :, z]
        if not a.any():
            continue
        rim = ~ndi.binary_erosion(b, iterations=2, border_value=1) & b
        lab, n = ndi.label(a)
        touching = np.unique(lab[rim & a])
        out[:, :, z] = (lab > 0) & ~np.isin(lab, touching[touching > 0])
    return out


def auto_lung_mask(
    hu: np.ndarray,
    spacing: tuple[float, ...] | None = None,
    air_threshold: float | None = None,
    gas_hu: float = GAS_HU,
    closing_mm: float = 20.0,
    min_fraction: float = 0.08,
    include: np.ndarray | None = None,
) -> np.ndarray:
    """Label map of the lungs from HU alone: 0 background, 1 left lung (lower x), 2 right lung (higher x).

    Air below `air_threshold` (default: otsu_air_threshold) inside the body forms candidate components; pure-gas
    ones (median HU < gas_hu: bowel, stomach, trachea, outside air) and those smaller than min_fraction of the
    largest are dropped.
    Vessels, ground-glass and consolidation inside or at the periphery of the lungs are included (per-slice closing
    with a `closing_mm` disk and hole filling). `include` (same shape, e.g. an annotated infection mask) is known
    lung: it joins the nearer lung before filling. Works on 2D (x, y) and 3D (x, y, z) arrays.
    """
    arr = _check(hu).astype(np.float32, copy=False)
    sp = _spacing(spacing, arr.ndim)
    vol = _slices(arr)
    sp2 = (sp[0], sp[1])
    body = _slices(body_mask(arr, spacing=sp))
    thr = otsu_air_threshold(vol, body) if air_threshold is None else float(air_threshold)
    air = _inner_air((vol < thr) & body, body)
    out = np.zeros(vol.shape, np.uint8)
    lab, n = ndi.label(air, structure=ndi.generate_binary_structure(3, 2))
    extra = None
    if include is not None:
        extra = _slices(np.asarray(include).astype(bool))
        if extra.shape != vol.shape:
            raise ValueError(f"include mask shape {np.shape(include)} does not match image shape {arr.shape}")
    if n == 0 and extra is None:
        return out[..., 0] if arr.ndim == 2 else out
    keep = _lung_components(lab, n, vol, gas_hu, min_fraction, 1.0 / (sp2[0] * sp2[1] / 100.0))
    lung = np.isin(lab, keep)
    lung = _drop_airways(lung, vol, sp2, gas_hu)
    out = _assign_sides(np.where(lung, lab, 0), keep, body)
    if extra is not None:
        out = _add_known_lung(out, extra & body, body)
    out = _fill_lungs(out, body, sp2, closing_mm)
    return out[..., 0] if arr.ndim == 2 else out


def _size_and_lunglike(lab: np.ndarray, n: int, vol: np.ndarray, gas_hu: float) -> tuple[np.ndarray, np.ndarray]:
    """Voxel count of components 1..n and whether their median HU is >= gas_hu (at most half is below gas_hu).

    Counting voxels below gas_hu gives the median test with two bincounts; ndi.median sorts and is ~100x slower.
    """
    flat = lab.ravel()
    sizes = np.bincount(flat, minlength=n + 1)[1:].astype(float)
    below = np.bincount(flat, weights=(vol.ravel() < gas_hu).astype(float), minlength=n + 1)[1:]
    return sizes, below <= 0.5 * sizes


def _lung_components(
    lab: np.ndarray, n: int, vol: np.ndarray, gas_hu: float, min_fraction: float, min_vox: float
) -> np.ndarray:
    """Ids of the lung-like air components: median HU >= gas_hu and size >= min_fraction of the largest such."""
    if n == 0:
        return np.zeros(0, int)
    idx = np.arange(1, n + 1)
    sizes, lunglike = _size_and_lunglike(lab, n, vol, gas_hu)
    if not lunglike.any():  # e.g. severe emphysema: fall back to size alone
        lunglike[:] = True
    floor = max(min_fraction * sizes[lunglike].max(), min_vox)
    return idx[lunglike & (sizes >= floor)]


def _centre_x(body: np.ndarray) -> np.ndarray:
    """Per-slice x centre of the body's extent (nan where the slice has no body)."""
    c = np.full(body.shape[2], np.nan)
    for z in range(body.shape[2]):
        bx = np.flatnonzero(body[:, :, z].any(1))
        if bx.size:
            c[z] = 0.5 * (bx[0] + bx[-1])
    return c


def _assign_sides(lab: np.ndarray, keep: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Side of each kept component by where its voxels lie relative to the body centre; straddlers are split."""
    out = np.zeros(lab.shape, np.uint8)
    centre = _centre_x(body)
    centre = np.where(np.isnan(centre), body.shape[0] / 2, centre)
    xs = np.arange(lab.shape[0])[:, None, None]
    left_of = xs < centre[None, None, :]
    merged = np.zeros(lab.shape, bool)
    for i in keep:
        comp = lab == i
        frac_left = float((comp & left_of).sum()) / max(int(comp.sum()), 1)
        if 0.2 <= frac_left <= 0.8:  # one component holding both lungs (touching lungs or joined by airways)
            merged |= comp
        else:
            out[comp] = LEFT if frac_left > 0.5 else RIGHT
    if merged.any():
        split = _split_touching(merged, body)
        out[merged] = split[merged]
    return out


def _add_known_lung(out: np.ndarray, extra: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Give each known-lung voxel the side of the nearest found lung in its slice (by body centre if none)."""
    out = out.copy()
    centre = _centre_x(body)
    xs = np.arange(out.shape[0])[:, None]
    for z in range(out.shape[2]):
        add = extra[:, :, z] & (out[:, :, z] == 0)
        if not add.any():
            continue
        sl = out[:, :, z]
        if sl.any():
            _, (ix, iy) = ndi.distance_transform_edt(sl == 0, return_indices=True)
            sl[add] = sl[ix[add], iy[add]]
        else:
            c = centre[z] if not np.isnan(centre[z]) else out.shape[0] / 2
            sl[add & (xs < c)] = LEFT
            sl[add & (xs >= c)] = RIGHT
    return out


def _split_touching(lung: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Split merged lungs into left (1) and right (2) per slice at the thinnest column of the central third."""
    out = np.zeros(lung.shape, np.uint8)
    centre = _centre_x(body)
    xs = np.arange(lung.shape[0])[:, None]
    for z in range(lung.shape[2]):
        m = lung[:, :, z]
        if not m.any():
            continue
        bx = np.flatnonzero(body[:, :, z].any(1))
        lo, hi = (bx[0], bx[-1]) if bx.size else (0, m.shape[0] - 1)
        c0, c1 = int(lo + (hi - lo) / 3), int(lo + 2 * (hi - lo) / 3) + 1
        cols = m.sum(1)
        if c1 > c0:
            cand = np.flatnonzero(cols[c0:c1] == cols[c0:c1].min()) + c0
            mid = int(cand[np.argmin(np.abs(cand - centre[z]))]) if not np.isnan(centre[z]) else int(cand[0])
        else:
            mid = (lo + hi) // 2
        out[:, :, z][m & (xs < mid)] = LEFT
        out[:, :, z][m & (xs >= mid)] = RIGHT
    return out


def _drop_airways(lung: np.ndarray, vol: np.ndarray, sp2: tuple[float, float], gas_hu: float) -> np.ndarray:
    """Remove per-slice pure-gas islands under ~6 cm^2 (trachea, main bronchi joined to the lungs in 3D)."""
    out = lung.copy()
    px_cm2 = sp2[0] * sp2[1] / 100.0
    for z in range(lung.shape[2]):
        lab, n = ndi.label(lung[:, :, z])
        if n == 0:
            continue
        sizes, lunglike = _size_and_lunglike(lab, n, vol[:, :, z], gas_hu)
        drop = np.arange(1, n + 1)[(sizes * px_cm2 < 6.0) & ~lunglike]
        out[:, :, z][np.isin(lab, drop)] = False
    return out


def _fill_lungs(
    lab: np.ndarray, body: np.ndarray, sp2: tuple[float, float], closing_mm: float, big_hole_cm2: float = 8.0
) -> np.ndarray:
    """Per slice and per lung: closing with a closing_mm disk, then hole filling, kept inside the body.

    In volumes, in-plane holes above big_hole_cm2 are filled only if they are also enclosed in 3D: a lesion is,
    the liver dome ringed by the lung bases is not (it continues into the abdomen below).
    """
    closed = lab.copy()
    for z in range(lab.shape[2]):
        for side in (LEFT, RIGHT):
            m = lab[:, :, z] == side
            if m.any() and closing_mm > 0:
                closed[:, :, z][_closing_mm(m, closing_mm, sp2) & body[:, :, z] & (closed[:, :, z] == 0)] = side
    lung3d = closed > 0
    holes3d = ndi.binary_fill_holes(lung3d) & ~lung3d if lab.shape[2] > 1 else None
    big_px = big_hole_cm2 / (sp2[0] * sp2[1] / 100.0)
    out = closed.copy()
    for z in range(lab.shape[2]):
        for side in (LEFT, RIGHT):
            m = closed[:, :, z] == side
            if not m.any():
                continue
            holes = ndi.binary_fill_holes(m) & ~m & body[:, :, z] & (out[:, :, z] == 0)
            if holes3d is not None and holes.any():
                hl, n = ndi.label(holes)
                sizes = np.bincount(hl.ravel(), minlength=n + 1)
                enclosed = np.bincount(hl.ravel(), weights=holes3d[:, :, z].ravel(), minlength=n + 1)
                ok = (sizes < big_px) | (enclosed > 0.5 * sizes)
                ok[0] = False
                holes = ok[hl]
            out[:, :, z][holes] = side
    return out


def body_from_lungs(
    lung: np.ndarray,
    spacing: tuple[float, ...] | None = None,
    margin_mm: tuple[float, float] = (30.0, 40.0),
    exponent: float = 2.5,
) -> np.ndarray:
    """A plausible boolean body region from a lung label map alone (no image), per axial slice.

    Union of a superellipse (|dx/ax|^p + |dy/ay|^p <= 1) around the lungs' bounding box widened by margin_mm in x
    and y, and the lungs' convex hull dilated by the x margin. Slices without lung copy the nearest slice that has
    one. Used when synthesizing from bare label maps. The defaults maximise the median Dice against body_mask on
    real slices (0.92 over 24 slices of ../shared/data).
    """
    arr = _check(lung, "lung")
    sp = _spacing(spacing, 2)
    vol = _slices(np.asarray(arr) > 0)
    out = np.zeros(vol.shape, bool)
    nx, ny = vol.shape[:2]
    xs, ys = np.meshgrid(np.arange(nx) * sp[0], np.arange(ny) * sp[1], indexing="ij")
    have = [z for z in range(vol.shape[2]) if vol[:, :, z].any()]
    for z in have:
        m = vol[:, :, z]
        px = np.argwhere(m)
        (x0, y0), (x1, y1) = px.min(0) * sp, px.max(0) * sp
        cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
        ax, ay = 0.5 * (x1 - x0) + margin_mm[0], 0.5 * (y1 - y0) + margin_mm[1]
        ellipse = np.abs((xs - cx) / ax) ** exponent + np.abs((ys - cy) / ay) ** exponent <= 1.0
        hull = _convex_hull_2d(m)
        near_hull = ndi.distance_transform_edt(~hull, sampling=sp) <= margin_mm[0]
        out[:, :, z] = ellipse | near_hull
    if have:
        for z in range(vol.shape[2]):
            if z not in have:
                out[:, :, z] = out[:, :, min(have, key=lambda h: abs(h - z))]
    return out[..., 0] if arr.ndim == 2 else out


def _convex_hull_2d(mask: np.ndarray) -> np.ndarray:
    """Filled convex hull of a 2D mask: pixel centres on the inner side of every qhull facet (no scikit-image)."""
    from scipy.spatial import ConvexHull, QhullError

    pts = np.argwhere(mask)
    if len(pts) < 3:
        return mask.copy()
    lo, hi = pts.min(0), pts.max(0) + 1
    try:
        eq = ConvexHull(pts).equations  # rows (a, b, c): a*x + b*y + c <= 0 inside
    except QhullError:  # collinear points: the mask itself is its hull
        return mask.copy()
    gx, gy = np.mgrid[lo[0] : hi[0], lo[1] : hi[1]]
    inside = np.ones(gx.shape, bool)
    for a, b, c in eq:
        inside &= a * gx + b * gy + c <= 1e-9
    out = np.zeros_like(mask, dtype=bool)
    out[lo[0] : hi[0], lo[1] : hi[1]] = inside
    return out | mask


def infection_to_labels(hu: np.ndarray, infection: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """An infection-only mask (MedSeg style) + HU image -> labels 1 left, 2 right lung, 3 infection.

    Infection is lung by definition: it joins the nearer lung before hole filling, then becomes label 3.
    """
    inf = np.asarray(infection).astype(bool)
    if inf.shape != np.shape(hu):
        raise ValueError(f"image shape {np.shape(hu)} does not match mask shape {inf.shape}")
    out = np.asarray(auto_lung_mask(hu, spacing, include=inf), dtype=np.uint8).copy()
    out[inf] = INFECTION
    return out
