"""Classical (weight-free) body and lung masks for chest CT in HU, RAS (x, y[, z]) arrays.

Why hand-rolled: MONAI has no threshold-based lung segmentation (its lung models need downloaded weights, which we
cannot get), so this module combines thresholds, connected components and morphology from scipy.ndimage. Big
morphological closings use Euclidean distance transforms (linear time) instead of large structuring elements.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

LEFT, RIGHT = 1, 2

BODY_HU = -500.0  # tissue vs air; padding (-2048, -1024 ...) and outside air fall below
AIR_HU = -400.0  # lung parenchyma (-900..-700) and most ground-glass (-700..-400) fall below
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


def body_mask(hu: np.ndarray, threshold: float = BODY_HU, spacing: tuple[float, ...] | None = None) -> np.ndarray:
    """Boolean patient-body mask per axial slice: tissue above `threshold`, largest component, holes filled.

    Air, scanner padding outside the scan circle and (mostly) the table are excluded; the lungs are inside.
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
        body = ndi.binary_fill_holes(body)
        out[:, :, z] = body
    return out[..., 0] if arr.ndim == 2 else out


def _air_components(air: np.ndarray, body: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the air components inside the body that do not touch the body outline (outside air, skin folds)."""
    lab, n = ndi.label(air, structure=ndi.generate_binary_structure(3, 1))
    if n == 0:
        return lab, 0
    # voxels just outside the body, per slice: components touching them are outside air leaking in
    rim = np.zeros_like(body)
    for z in range(body.shape[2]):
        rim[:, :, z] = ndi.binary_dilation(body[:, :, z], iterations=2) & ~ndi.binary_erosion(body[:, :, z])
    touching = np.unique(lab[rim & air])
    lab[np.isin(lab, touching[touching > 0])] = 0
    return lab, n


def _split_touching(lung: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Split one merged lung component into left (1) and right (2) per slice at the thinnest central column."""
    out = np.zeros(lung.shape, np.uint8)
    for z in range(lung.shape[2]):
        m = lung[:, :, z]
        if not m.any():
            continue
        lab, n = ndi.label(m)
        if n >= 2:
            sizes = np.bincount(lab.ravel())[1:]
            order = np.argsort(sizes)[::-1]
            if sizes[order[1]] >= 0.15 * sizes[order[0]]:
                # two separate lungs in this slice: side by centroid x
                a, b = (lab == order[0] + 1), (lab == order[1] + 1)
                ca, cb = np.argwhere(a)[:, 0].mean(), np.argwhere(b)[:, 0].mean()
                left, right = (a, b) if ca < cb else (b, a)
                rest = m & ~left & ~right
                out[:, :, z][left] = LEFT
                out[:, :, z][right] = RIGHT
                if rest.any():  # small pieces go to the nearer side of the split column
                    mid = 0.5 * (ca + cb)
                    xs = np.arange(m.shape[0])[:, None]
                    out[:, :, z][rest & (xs < mid)] = LEFT
                    out[:, :, z][rest & (xs >= mid)] = RIGHT
                continue
        # one blob: split at the column with the least lung, searched in the central third of the body
        cols = m.sum(1)
        bx = np.flatnonzero(body[:, :, z].any(1))
        lo, hi = (bx[0], bx[-1]) if bx.size else (0, m.shape[0] - 1)
        c0, c1 = int(lo + (hi - lo) / 3), int(lo + 2 * (hi - lo) / 3) + 1
        mid = c0 + int(np.argmin(cols[c0:c1])) if c1 > c0 else (lo + hi) // 2
        xs = np.arange(m.shape[0])[:, None]
        out[:, :, z][m & (xs < mid)] = LEFT
        out[:, :, z][m & (xs >= mid)] = RIGHT
    return out


def auto_lung_mask(
    hu: np.ndarray,
    spacing: tuple[float, ...] | None = None,
    air_threshold: float = AIR_HU,
    closing_mm: float = 12.0,
    min_lung_ml: float = 2.0,
) -> np.ndarray:
    """Label map of the lungs from HU alone: 0 background, 1 left lung (lower x), 2 right lung (higher x).

    Vessels, ground-glass and consolidation inside or at the periphery of the lungs are included (per-slice
    closing with a `closing_mm` disk and hole filling), the trachea and main bronchi are dropped where they show as
    small air islands near the midline. Works on 2D (x, y) and 3D (x, y, z) arrays.
    """
    arr = _check(hu).astype(np.float32, copy=False)
    sp = _spacing(spacing, arr.ndim)
    vol = _slices(arr)
    sp3 = sp if arr.ndim == 3 else (sp[0], sp[1], DEFAULT_SPACING[2])
    body = _slices(body_mask(arr, spacing=sp))
    air = (vol < air_threshold) & body
    lab, n = _air_components(air, body)
    out = np.zeros(vol.shape, np.uint8)
    if n == 0:
        return out[..., 0] if arr.ndim == 2 else out
    voxel_ml = float(np.prod(sp3)) / 1000.0
    sizes = np.bincount(lab.ravel(), minlength=n + 1).astype(float)
    sizes[0] = 0
    # lungs are the biggest air bodies; keep those comparable to the largest (drops bowel gas, small bubbles)
    min_vox = max(min_lung_ml / voxel_ml if arr.ndim == 3 else 0.0, 0.1 * sizes.max())
    if arr.ndim == 2:  # a single slice: area in cm^2 instead of volume
        min_vox = max(1.0 / (sp[0] * sp[1] / 100.0), 0.1 * sizes.max())
    keep = np.flatnonzero(sizes >= min_vox)
    order = keep[np.argsort(sizes[keep])[::-1]][:2]
    lung = np.isin(lab, order)
    lung = _drop_airways(lung, body, sp)
    if len(order) == 2 and _centroid_x(lab == order[0]) != _centroid_x(lab == order[1]):
        a, b = (lab == order[0]) & lung, (lab == order[1]) & lung
        left, right = (a, b) if _centroid_x(a) < _centroid_x(b) else (b, a)
        out[left] = LEFT
        out[right] = RIGHT
        # a lung split into two 3D parts is unusual; sizes too different mean both lungs are in one component
        if sizes[order[1]] < 0.15 * sizes[order[0]]:
            out = _split_touching(lung, body)
    else:
        out = _split_touching(lung, body)
    out = _fill_lungs(out, body, (sp3[0], sp3[1]), closing_mm)
    return out[..., 0] if arr.ndim == 2 else out


def _centroid_x(mask: np.ndarray) -> float:
    """Mean x index of a mask (nan if empty)."""
    xs = np.nonzero(mask)[0]
    return float(xs.mean()) if xs.size else float("nan")


def _drop_airways(lung: np.ndarray, body: np.ndarray, sp: tuple[float, ...]) -> np.ndarray:
    """Remove per-slice air islands smaller than ~4 cm^2 lying near the body midline (trachea, main bronchi)."""
    out = lung.copy()
    px_cm2 = sp[0] * sp[1] / 100.0
    for z in range(lung.shape[2]):
        m = lung[:, :, z]
        if not m.any():
            continue
        bx = np.flatnonzero(body[:, :, z].any(1))
        if bx.size == 0:
            continue
        centre, width = 0.5 * (bx[0] + bx[-1]), bx[-1] - bx[0] + 1
        lab, n = ndi.label(m)
        if n < 2:
            continue
        for i in range(1, n + 1):
            comp = lab == i
            area = comp.sum() * px_cm2
            if area < 4.0 and abs(_centroid_x(comp) - centre) < 0.12 * width:
                out[:, :, z][comp] = False
    return out


def _fill_lungs(lab: np.ndarray, body: np.ndarray, sp2: tuple[float, float], closing_mm: float) -> np.ndarray:
    """Per slice and per lung: closing with a closing_mm disk and hole filling, kept inside the body."""
    out = lab.copy()
    for z in range(lab.shape[2]):
        filled = {}
        for side in (LEFT, RIGHT):
            m = lab[:, :, z] == side
            if not m.any():
                continue
            m = _closing_mm(m, closing_mm, sp2) if closing_mm > 0 else m
            filled[side] = ndi.binary_fill_holes(m) & body[:, :, z]
        for side, m in filled.items():
            other = lab[:, :, z] == (RIGHT if side == LEFT else LEFT)
            out[:, :, z][m & ~other & (out[:, :, z] == 0)] = side
    return out


def body_from_lungs(
    lung: np.ndarray, spacing: tuple[float, ...] | None = None, margin_mm: tuple[float, float] = (20.0, 30.0)
) -> np.ndarray:
    """A plausible boolean body region from a lung label map alone (no image), per axial slice.

    Union of an ellipse around the lungs' bounding box (widened by margin_mm in x and y) and the lungs' convex hull
    dilated by the x margin. Slices without lung copy the nearest slice that has one. Used when synthesizing from
    bare label maps.
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
        ellipse = ((xs - cx) / ax) ** 2 + ((ys - cy) / ay) ** 2 <= 1.0
        hull = _convex_hull_2d(m)
        near_hull = ndi.distance_transform_edt(~hull, sampling=sp) <= margin_mm[0]
        out[:, :, z] = ellipse | near_hull
    if have:
        for z in range(vol.shape[2]):
            if z not in have:
                out[:, :, z] = out[:, :, min(have, key=lambda h: abs(h - z))]
    return out[..., 0] if arr.ndim == 2 else out


def _convex_hull_2d(mask: np.ndarray) -> np.ndarray:
    """Filled convex hull of a 2D mask (scipy's Delaunay test; no scikit-image dependency)."""
    from scipy.spatial import Delaunay, QhullError

    pts = np.argwhere(mask)
    if len(pts) < 3:
        return mask.copy()
    lo, hi = pts.min(0), pts.max(0) + 1
    try:
        tri = Delaunay(pts)
    except QhullError:  # collinear points: the mask itself is its hull
        return mask.copy()
    gx, gy = np.mgrid[lo[0] : hi[0], lo[1] : hi[1]]
    inside = tri.find_simplex(np.stack([gx.ravel(), gy.ravel()], 1)) >= 0
    out = np.zeros_like(mask, dtype=bool)
    out[lo[0] : hi[0], lo[1] : hi[1]] = inside.reshape(gx.shape)
    return out | mask
