"""Weight-free realism metrics: how close synthetic CT slices are to real ones, per region, with no trained network.

A slice is an HU float32 array (x, y) with a COVID-19-CT-Seg label map (x, y) uint8 (0 bg, 1 left lung, 2 right
lung, 3 infection). Every slice is first resampled to a common analysis grid of `size` x `size` pixels (default 128,
the downstream bundles' size): area averaging when shrinking, linear interpolation when enlarging, nearest for
labels. Regions: healthy lung = labels 1|2, lesion = 3, body = body mask (HU > -500, largest component, holes
filled) minus all lung labels.

Per region, real set against synthetic set (all pixels of all slices pooled):

- ``hu_w1``: 1-Wasserstein distance (HU) between the region's HU histograms (scipy.stats.wasserstein_distance).
- ``mean_hu``: mean over slices of the region's mean HU; ``mean_hu_sd``: its sd across slices.
- ``laplacian``: mean |scipy.ndimage.laplace(HU)| (5-point stencil, HU) = fine-texture energy.
- ``gradient``: mean gradient magnitude |sobel| / 8 (HU/px: exactly the slope on a linear ramp); ``gradient_sd``
  its sd. Each with a ``*_ratio`` = synthetic / real.
- ``psd_distance``: mean over radial frequency bins of |ln P_syn(f) - ln P_real(f)|, P the radially averaged power
  spectrum of mean-removed, Hann-windowed `patch_px` square patches (stride patch_px // 4) inside the region
  (0 = same spectrum; ln 4 = 1.39 = every frequency 4x off in power).
- ``glcm_distance``: mean over GLCM features (contrast, homogeneity, energy, correlation; skimage graycoprops,
  averaged over 4 angles) and distances (1, 2 px) of |f_syn - f_real| / (|f_syn| + |f_real|), in [0, 1]. HU are
  quantized to 32 levels over the real region's 1st-99th percentile; the co-occurrence counts of all slices are
  pooled.

Texture statistics (laplacian, gradient, PSD, GLCM) use the region eroded by `erode_px` (default 2) pixels so the
stencils never straddle a mask edge and partial-volume rims do not dominate; HU histograms and means use the full
region.

Global measures:

- ``diversity``: for each group of synthetic samples of the SAME mask, the mean over sample pairs of
  mean |(a_i - m_i) - (a_j - m_j)| over the healthy lung they share (m = each sample's mean there), i.e. how much
  their lung texture differs pixel by pixel. The real reference is the same statistic between pairs of distinct
  real slices over the healthy lung both have at the same grid position (real slices never share a mask; removing
  the means matches the per-slice HU level). ``ratio`` = synthetic / real: 0 = every sample of a mask identical.
- ``contrast``: mean over slices with both regions of (mean lesion HU - mean healthy-lung HU); ratio to real.
- ``segmenter``: Dice of a segmenter trained on real slices (any callable HU slice -> label map) against the
  slices' own labels, for lung (labels 1|2|3) and infection (3), pooled over slices, on the real and synthetic set.

Summary score (1 = indistinguishable from real, 0 = nothing alike)::

    q(r)        = min(r, 1/r) for a ratio r > 0, else 0
    region_r    = mean of the available [exp(-hu_w1 / max(sd_real_r, 10 HU)), q(laplacian_ratio), q(gradient_ratio),
                  q(gradient_sd_ratio), exp(-psd_distance), 1 - glcm_distance]   (sd_real_r: pooled real HU sd)
    contrast    = q(contrast ratio);  diversity = q(diversity ratio)
    segmenter   = mean over lung, infection of q(dice_synthetic / dice_real)
    summary     = mean of the available ones of region_healthy_lung, region_lesion, region_body, contrast,
                  diversity, segmenter

A measure is unavailable (null, with a note) when a set lacks the region or the data it needs; it then leaves the
mean. See docs/realism.md for how to read the numbers.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from scipy.stats import wasserstein_distance
from skimage.feature import graycomatrix, graycoprops

REGIONS: tuple[str, ...] = ("healthy_lung", "lesion", "body")
DEFAULT_SIZE = 128
ERODE_PX = 2
PATCH_PX = 12
BODY_HU = -500.0
GLCM_LEVELS = 32
GLCM_DISTANCES: tuple[int, ...] = (1, 2)
GLCM_ANGLES: tuple[float, ...] = (0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4)
GLCM_FEATURES: tuple[str, ...] = ("contrast", "homogeneity", "energy", "correlation")
#: Regions (and lesion/lung pairs) with fewer pixels than this in a slice are ignored in that slice.
MIN_REGION_PX = 20
#: Two slices' shared healthy lung must have at least this many pixels to count as a diversity pair.
MIN_PAIR_PX = 50
MAX_REAL_PAIRS = 300
MAX_GROUP_PAIRS = 45
W1_SCALE_FLOOR_HU = 10.0

PredFn = Callable[..., np.ndarray]


# ------------------------------------------------------------------------------------------------- slices


@dataclass
class RealismSlice:
    """One slice on the analysis grid: HU (x, y) float32, label (x, y) uint8, body (x, y) bool, spacing in mm."""

    hu: np.ndarray
    label: np.ndarray
    body: np.ndarray
    spacing: tuple[float, float] | None = None
    name: str = ""


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights: area averaging when shrinking, linear (half-pixel centres) when enlarging.

    Hand-rolled: scipy.ndimage.zoom has no area mode and skimage's downscale_local_mean needs integer factors.
    """
    m = np.zeros((n_out, n_in))
    if n_out <= n_in:
        edges = np.arange(n_out + 1) * (n_in / n_out)
        for i in range(n_out):
            lo, hi = edges[i], edges[i + 1]
            for j in range(int(math.floor(lo)), min(int(math.ceil(hi)), n_in)):
                m[i, j] = min(hi, j + 1) - max(lo, j)
        return m / m.sum(1, keepdims=True)
    pos = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    j0 = np.floor(pos).astype(int)
    j1 = np.minimum(j0 + 1, n_in - 1)
    frac = pos - j0
    m[np.arange(n_out), j0] += 1 - frac
    m[np.arange(n_out), j1] += frac
    return m


def resample_image(hu: np.ndarray, size: int) -> np.ndarray:
    """HU slice resampled to size x size (area when shrinking, linear when enlarging), float32."""
    arr = np.asarray(hu, dtype=np.float64)
    if arr.shape == (size, size):
        return arr.astype(np.float32)
    return (_area_matrix(arr.shape[0], size) @ arr @ _area_matrix(arr.shape[1], size).T).astype(np.float32)


def resample_label(label: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Label map resampled to size x size (or a (nx, ny) shape) by nearest neighbour, uint8.

    Each output pixel takes the input pixel under its centre.
    """
    lab = np.asarray(label)
    nx, ny = (size, size) if isinstance(size, int) else size
    ix = np.minimum(((np.arange(nx) + 0.5) * lab.shape[0] / nx).astype(int), lab.shape[0] - 1)
    iy = np.minimum(((np.arange(ny) + 0.5) * lab.shape[1] / ny).astype(int), lab.shape[1] - 1)
    return lab[np.ix_(ix, iy)].astype(np.uint8)


def simple_body_mask(hu: np.ndarray, label: np.ndarray, threshold: float = BODY_HU) -> np.ndarray:
    """Body = largest component of HU > threshold (1-px opening drops the table), holes filled, plus the lungs."""
    inside = ndi.binary_opening(hu > threshold)
    lab, n = ndi.label(inside)
    if n:
        sizes = np.bincount(lab.ravel())[1:]
        inside = lab == (int(np.argmax(sizes)) + 1)
    return ndi.binary_fill_holes(inside | (label > 0))


def analysis_slice(
    hu: np.ndarray,
    label: np.ndarray,
    size: int = DEFAULT_SIZE,
    spacing: Sequence[float] | None = None,
    name: str = "",
) -> RealismSlice:
    """Resample one (HU, label) slice to the analysis grid and find its body, so every set is measured alike."""
    hu = np.asarray(hu)
    label = np.asarray(label)
    if hu.ndim != 2 or label.shape != hu.shape:
        raise ValueError(f"{name or 'slice'}: want 2D HU and label of one shape, got {hu.shape} and {label.shape}")
    if size < 8:
        raise ValueError(f"analysis size must be at least 8 px, got {size}")
    img = resample_image(hu, size)
    lab = resample_label(label, size)
    sp = None
    if spacing is not None:
        sp = (float(spacing[0]) * hu.shape[0] / size, float(spacing[1]) * hu.shape[1] / size)
    return RealismSlice(img, lab, simple_body_mask(img, lab), sp, name)


def _as_slice(item: RealismSlice | tuple[np.ndarray, np.ndarray], size: int) -> RealismSlice:
    """A RealismSlice on the size x size grid from a RealismSlice or an (hu, label) pair."""
    if isinstance(item, RealismSlice):
        if item.hu.shape == (size, size):
            return item
        return analysis_slice(item.hu, item.label, size, item.spacing, item.name)
    hu, label = item
    return analysis_slice(hu, label, size)


def region_masks(s: RealismSlice) -> dict[str, np.ndarray]:
    """Boolean masks of the three regions of a slice: healthy lung (1|2), lesion (3), body minus lungs."""
    lung = (s.label == 1) | (s.label == 2)
    lesion = s.label == 3
    return {"healthy_lung": lung, "lesion": lesion, "body": s.body & (s.label == 0)}


def erode(mask: np.ndarray, px: int) -> np.ndarray:
    """The mask eroded by px pixels (3x3 structuring element, px iterations); the image border counts as outside."""
    if px <= 0:
        return mask.copy()
    return ndi.binary_erosion(mask, iterations=px, border_value=0)


def gradient_magnitude(hu: np.ndarray) -> np.ndarray:
    """|sobel| / 8 in HU/px: the 3x3 Sobel kernel sums to 8x the slope, so a ramp of slope s gives exactly s."""
    a = np.asarray(hu, dtype=np.float64)
    return np.hypot(ndi.sobel(a, axis=0, mode="nearest"), ndi.sobel(a, axis=1, mode="nearest")) / 8.0


def abs_laplacian(hu: np.ndarray) -> np.ndarray:
    """|5-point Laplacian| in HU (scipy.ndimage.laplace): a checkerboard of +-a gives 8a, a ramp gives 0."""
    return np.abs(ndi.laplace(np.asarray(hu, dtype=np.float64), mode="nearest"))


# -------------------------------------------------------------------------------------------- spectrum, GLCM


def _patch_corners(mask: np.ndarray, patch: int) -> list[tuple[int, int]]:
    """Top-left corners, on a grid of stride max(patch // 4, 1), of patch x patch squares wholly inside mask."""
    nx, ny = mask.shape
    if nx < patch or ny < patch:
        return []
    integral = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    inside = (
        integral[patch:, patch:] - integral[:-patch, patch:] - integral[patch:, :-patch] + integral[:-patch, :-patch]
    ) == patch * patch
    step = max(patch // 4, 1)
    xs, ys = np.nonzero(inside[::step, ::step])
    return [(int(x) * step, int(y) * step) for x, y in zip(xs, ys, strict=True)]


def radial_power_spectra(patches: np.ndarray) -> np.ndarray:
    """Radially averaged power spectra (n, patch // 2) of mean-removed, Hann-windowed square patches (n, p, p).

    Hand-rolled: neither scipy nor scikit-image offers a radially averaged power spectrum.
    """
    n, p, _ = patches.shape
    window = np.outer(np.hanning(p + 2)[1:-1], np.hanning(p + 2)[1:-1])
    centred = patches - patches.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(centred * window, axes=(1, 2))) ** 2
    f = np.fft.fftfreq(p) * p
    radius = np.rint(np.hypot(f[:, None], f[None, :])).astype(int)
    out = np.zeros((n, p // 2))
    for r in range(1, p // 2 + 1):
        out[:, r - 1] = power[:, radius == r].mean(axis=1)
    return out


def psd_distance(spectrum_real: np.ndarray, spectrum_synthetic: np.ndarray) -> float:
    """Mean over frequency bins of |ln P_syn - ln P_real| (0 when equal; spectra of zeros count as equal)."""
    scale = max(float(np.max(spectrum_real)), float(np.max(spectrum_synthetic)), 1e-30)
    eps = 1e-12 * scale
    return float(np.mean(np.abs(np.log(spectrum_synthetic + eps) - np.log(spectrum_real + eps))))


def quantize(hu: np.ndarray, mask: np.ndarray, window: tuple[float, float], levels: int = GLCM_LEVELS) -> np.ndarray:
    """uint8 levels 1..levels for HU over window (clipped) inside mask, 0 outside (dropped from the GLCM later)."""
    lo, hi = window
    q = np.floor((np.asarray(hu, dtype=np.float64) - lo) / (hi - lo) * levels)
    q = (np.clip(q, 0, levels - 1) + 1).astype(np.uint8)
    q[~mask] = 0
    return q


def glcm_counts(hu: np.ndarray, mask: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Symmetric co-occurrence counts (levels, levels, distances, angles) of HU pairs lying both inside mask."""
    q = quantize(hu, mask, window)
    counts = graycomatrix(q, list(GLCM_DISTANCES), list(GLCM_ANGLES), levels=GLCM_LEVELS + 1, symmetric=True)
    return counts[1:, 1:].astype(np.float64)


def glcm_features(counts: np.ndarray) -> dict[str, np.ndarray] | None:
    """GLCM features per distance (averaged over angles) from pooled counts; None when there is no pixel pair."""
    if counts.sum() == 0:
        return None
    return {name: graycoprops(counts, name).mean(axis=1) for name in GLCM_FEATURES}


def glcm_distance(real: dict[str, np.ndarray], synthetic: dict[str, np.ndarray]) -> float:
    """Mean over features and distances of |f_s - f_r| / (|f_s| + |f_r|) (0 when both are 0), in [0, 1]."""
    terms = []
    for name in GLCM_FEATURES:
        a, b = np.asarray(real[name], float), np.asarray(synthetic[name], float)
        den = np.abs(a) + np.abs(b)
        terms.append(np.where(den > 0, np.abs(a - b) / np.where(den > 0, den, 1.0), 0.0))
    return float(np.mean(terms))


# ------------------------------------------------------------------------------------------------- results


def _f(x: Any) -> float | None:
    """A plain float (JSON-friendly) or None for None/nan."""
    if x is None:
        return None
    v = float(x)
    return None if math.isnan(v) else v


def ratio(synthetic: float | None, real: float | None) -> float | None:
    """synthetic / real; 1 when both are 0, None when undefined (missing value, or real 0 with synthetic not)."""
    if synthetic is None or real is None:
        return None
    if real == 0:
        return 1.0 if synthetic == 0 else None
    return float(synthetic) / float(real)


def ratio_score(r: float | None) -> float | None:
    """q(r) = min(r, 1/r) in [0, 1] (1 when r = 1; 0 for r <= 0); None for None."""
    if r is None:
        return None
    if r <= 0 or math.isinf(r):
        return 0.0
    return float(min(r, 1.0 / r))


def _ratio_component(real: float | None, r: float | None) -> float | None:
    """q(r) of a measured ratio; 0 when real was measured but the ratio is undefined (real 0, synthetic not)."""
    if real is None:
        return None
    return 0.0 if r is None else ratio_score(r)


def _mean_available(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not None; None if there are none."""
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


@dataclass
class RegionMetrics:
    """Real vs synthetic statistics of one region; *_ratio = synthetic / real; score in [0, 1]."""

    region: str
    pixels_real: int = 0
    pixels_synthetic: int = 0
    slices_real: int = 0
    slices_synthetic: int = 0
    mean_hu_real: float | None = None
    mean_hu_synthetic: float | None = None
    mean_hu_sd_real: float | None = None
    mean_hu_sd_synthetic: float | None = None
    hu_sd_real: float | None = None
    hu_w1: float | None = None
    laplacian_real: float | None = None
    laplacian_synthetic: float | None = None
    laplacian_ratio: float | None = None
    gradient_real: float | None = None
    gradient_synthetic: float | None = None
    gradient_ratio: float | None = None
    gradient_sd_real: float | None = None
    gradient_sd_synthetic: float | None = None
    gradient_sd_ratio: float | None = None
    psd_distance: float | None = None
    psd_patches_real: int = 0
    psd_patches_synthetic: int = 0
    glcm_distance: float | None = None
    score: float | None = None
    note: str | None = None

    def component_scores(self) -> dict[str, float | None]:
        """The per-measure similarities that make up this region's score (see the module docstring)."""
        w1 = None
        if self.hu_w1 is not None and self.hu_sd_real is not None:
            w1 = math.exp(-self.hu_w1 / max(self.hu_sd_real, W1_SCALE_FLOOR_HU))
        return {
            "hu_w1": w1,
            "laplacian": _ratio_component(self.laplacian_real, self.laplacian_ratio),
            "gradient": _ratio_component(self.gradient_real, self.gradient_ratio),
            "gradient_sd": _ratio_component(self.gradient_sd_real, self.gradient_sd_ratio),
            "psd": math.exp(-self.psd_distance) if self.psd_distance is not None else None,
            "glcm": 1.0 - self.glcm_distance if self.glcm_distance is not None else None,
        }


@dataclass
class RatioMetric:
    """A real vs synthetic statistic (contrast or diversity) with its ratio synthetic / real and q(ratio) score.

    count_real / count_synthetic: the slices (contrast) or slice pairs (diversity) it averages over.
    """

    real: float | None = None
    synthetic: float | None = None
    ratio: float | None = None
    score: float | None = None
    count_real: int = 0
    count_synthetic: int = 0
    note: str | None = None


@dataclass
class SegmenterMetrics:
    """Dice of a real-trained segmenter against each set's own labels; score = mean q(dice_syn / dice_real)."""

    lung_dice_real: float | None = None
    lung_dice_synthetic: float | None = None
    infection_dice_real: float | None = None
    infection_dice_synthetic: float | None = None
    score: float | None = None
    note: str | None = None


@dataclass
class RealismReport:
    """All realism measures of a synthetic set against a real set; JSON via to_dict(), markdown via to_markdown()."""

    size: int
    n_real: int
    n_synthetic: int
    regions: dict[str, RegionMetrics]
    contrast: RatioMetric
    diversity: RatioMetric
    segmenter: SegmenterMetrics
    components: dict[str, float | None] = field(default_factory=dict)
    summary_score: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (floats, ints, str, None)."""
        return asdict(self)

    def to_json(self) -> str:
        """The report as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        """The report as markdown tables (regions, then global measures), for the console and realism.md."""
        return format_markdown(self)


# --------------------------------------------------------------------------------------------- per-set stats


@dataclass
class _RegionPool:
    """Pooled per-set statistics of one region (internal)."""

    values: list[np.ndarray] = field(default_factory=list)
    slice_means: list[float] = field(default_factory=list)
    lap: list[np.ndarray] = field(default_factory=list)
    grad: list[np.ndarray] = field(default_factory=list)
    patches: list[np.ndarray] = field(default_factory=list)
    slices: int = 0

    def all_values(self) -> np.ndarray:
        """Every HU value of the region in the set."""
        return np.concatenate(self.values) if self.values else np.zeros(0)


def _pool_region(slices: Sequence[RealismSlice], region: str, erode_px: int, patch_px: int) -> _RegionPool:
    """HU values, per-slice means, texture-stat pixels and patches of one region over a set."""
    pool = _RegionPool()
    for s in slices:
        mask = region_masks(s)[region]
        if mask.sum() < MIN_REGION_PX:
            continue
        pool.slices += 1
        pool.values.append(s.hu[mask].astype(np.float64))
        pool.slice_means.append(float(s.hu[mask].mean()))
        inner = erode(mask, erode_px)
        if inner.any():
            pool.lap.append(abs_laplacian(s.hu)[inner])
            pool.grad.append(gradient_magnitude(s.hu)[inner])
        corners = _patch_corners(inner, patch_px)
        if corners:
            pool.patches.append(np.stack([s.hu[x : x + patch_px, y : y + patch_px] for x, y in corners]))
    return pool


def _pooled_glcm(
    slices: Sequence[RealismSlice], region: str, erode_px: int, window: tuple[float, float]
) -> dict[str, np.ndarray] | None:
    """GLCM features of a region from co-occurrence counts summed over the set's slices (None without pairs)."""
    total = None
    for s in slices:
        mask = region_masks(s)[region]
        if mask.sum() < MIN_REGION_PX:
            continue
        counts = glcm_counts(s.hu, erode(mask, erode_px), window)
        total = counts if total is None else total + counts
    return None if total is None else glcm_features(total)


def _mean_spectrum(pool: _RegionPool) -> np.ndarray | None:
    """Mean radial power spectrum over all patches of a pool, or None without patches."""
    if not pool.patches:
        return None
    return radial_power_spectra(np.concatenate(pool.patches).astype(np.float64)).mean(axis=0)


def _texture_stats(pool: _RegionPool) -> tuple[float | None, float | None, float | None]:
    """(mean |Laplacian|, mean gradient magnitude, sd of gradient magnitude) over the pool's eroded pixels."""
    if not pool.lap:
        return None, None, None
    lap, grad = np.concatenate(pool.lap), np.concatenate(pool.grad)
    return float(lap.mean()), float(grad.mean()), float(grad.std())


def region_metrics(
    real: Sequence[RealismSlice],
    synthetic: Sequence[RealismSlice],
    region: str,
    erode_px: int = ERODE_PX,
    patch_px: int = PATCH_PX,
) -> RegionMetrics:
    """All per-region measures of synthetic against real (slices already on one analysis grid)."""
    pr, ps = _pool_region(real, region, erode_px, patch_px), _pool_region(synthetic, region, erode_px, patch_px)
    vr, vs = pr.all_values(), ps.all_values()
    m = RegionMetrics(region, int(vr.size), int(vs.size), pr.slices, ps.slices)
    if vr.size == 0 or vs.size == 0:
        missing = "real" if vr.size == 0 else "synthetic"
        m.note = f"no {region} region (>= {MIN_REGION_PX} px) in any {missing} slice"
        return m
    m.mean_hu_real, m.mean_hu_synthetic = float(np.mean(pr.slice_means)), float(np.mean(ps.slice_means))
    m.mean_hu_sd_real, m.mean_hu_sd_synthetic = float(np.std(pr.slice_means)), float(np.std(ps.slice_means))
    m.hu_sd_real = float(vr.std())
    m.hu_w1 = float(wasserstein_distance(vr, vs))
    notes = []
    lr, gr, gsr = _texture_stats(pr)
    ls, gs, gss = _texture_stats(ps)
    if lr is None or ls is None:
        notes.append(f"no pixel left after {erode_px}-px erosion: texture statistics unavailable")
    else:
        m.laplacian_real, m.laplacian_synthetic, m.laplacian_ratio = lr, ls, ratio(ls, lr)
        m.gradient_real, m.gradient_synthetic, m.gradient_ratio = gr, gs, ratio(gs, gr)
        m.gradient_sd_real, m.gradient_sd_synthetic, m.gradient_sd_ratio = gsr, gss, ratio(gss, gsr)
    sr, ss = _mean_spectrum(pr), _mean_spectrum(ps)
    m.psd_patches_real = sum(len(p) for p in pr.patches)
    m.psd_patches_synthetic = sum(len(p) for p in ps.patches)
    if sr is None or ss is None:
        notes.append(f"no {patch_px}x{patch_px} patch fits inside the eroded region: power spectrum unavailable")
    else:
        m.psd_distance = psd_distance(sr, ss)
    lo, hi = (float(v) for v in np.percentile(vr, [1, 99]))
    window = (lo, max(hi, lo + 1.0))
    fr = _pooled_glcm(real, region, erode_px, window)
    fs = _pooled_glcm(synthetic, region, erode_px, window)
    if fr is None or fs is None:
        notes.append("no pixel pair inside the eroded region: GLCM unavailable")
    else:
        m.glcm_distance = glcm_distance(fr, fs)
    m.score = _mean_available(m.component_scores().values())
    m.note = "; ".join(notes) or None
    return m


# ------------------------------------------------------------------------------------------ global measures


def lesion_contrast(slices: Sequence[RealismSlice]) -> tuple[float | None, int]:
    """Mean over slices holding both regions of (mean lesion HU - mean healthy-lung HU), and that slice count."""
    diffs = []
    for s in slices:
        r = region_masks(s)
        if r["lesion"].sum() >= MIN_REGION_PX and r["healthy_lung"].sum() >= MIN_REGION_PX:
            diffs.append(float(s.hu[r["lesion"]].mean() - s.hu[r["healthy_lung"]].mean()))
    return (float(np.mean(diffs)) if diffs else None), len(diffs)


def contrast_metric(real: Sequence[RealismSlice], synthetic: Sequence[RealismSlice]) -> RatioMetric:
    """Lesion-minus-healthy-lung contrast of both sets, its ratio synthetic / real and q(ratio)."""
    cr, nr = lesion_contrast(real)
    cs, ns = lesion_contrast(synthetic)
    out = RatioMetric(cr, cs, count_real=nr, count_synthetic=ns)
    if cr is None or cs is None:
        which = "real" if cr is None else "synthetic"
        out.note = f"no {which} slice has both a lesion and healthy lung of >= {MIN_REGION_PX} px"
        return out
    out.ratio = ratio(cs, cr)
    out.score = ratio_score(out.ratio)
    return out


def pair_difference(a: RealismSlice, b: RealismSlice) -> float | None:
    """mean |(a - mean a) - (b - mean b)| over the healthy lung both slices share; None if under MIN_PAIR_PX px."""
    common = region_masks(a)["healthy_lung"] & region_masks(b)["healthy_lung"]
    if common.sum() < MIN_PAIR_PX:
        return None
    x, y = a.hu[common].astype(np.float64), b.hu[common].astype(np.float64)
    return float(np.mean(np.abs((x - x.mean()) - (y - y.mean()))))


def _pairs(n: int, limit: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """All index pairs i < j of n items, or `limit` of them drawn at random (without replacement)."""
    total = n * (n - 1) // 2
    if total <= limit:
        return list(itertools.combinations(range(n), 2))
    chosen = rng.choice(total, size=limit, replace=False)
    all_pairs = list(itertools.combinations(range(n), 2))
    return [all_pairs[int(k)] for k in sorted(chosen)]


def _mean_pair_difference(slices: Sequence[RealismSlice], pairs: Iterable[tuple[int, int]]) -> list[float]:
    """pair_difference of each listed pair that shares enough healthy lung."""
    out = [pair_difference(slices[i], slices[j]) for i, j in pairs]
    return [d for d in out if d is not None]


def group_by_mask(slices: Sequence[RealismSlice]) -> list[list[int]]:
    """Indices of slices grouped by identical label maps (hash of shape and bytes), in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(slices):
        key = hashlib.sha1(repr(s.label.shape).encode() + np.ascontiguousarray(s.label).tobytes()).hexdigest()
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def diversity_metric(
    real: Sequence[RealismSlice],
    synthetic: Sequence[RealismSlice],
    groups: Sequence[Sequence[int]] | None = None,
    seed: int = 0,
) -> RatioMetric:
    """How much samples of one mask differ in the lungs, against how much distinct real slices differ (ratio)."""
    rng = np.random.default_rng(seed)
    groups = group_by_mask(synthetic) if groups is None else groups
    syn: list[float] = []
    for g in groups:
        members = [synthetic[i] for i in g]
        if len(members) >= 2:
            syn += _mean_pair_difference(members, _pairs(len(members), MAX_GROUP_PAIRS, rng))
    rea = _mean_pair_difference(real, _pairs(len(real), MAX_REAL_PAIRS, rng))
    out = RatioMetric(count_real=len(rea), count_synthetic=len(syn))
    out.real = float(np.mean(rea)) if rea else None
    out.synthetic = float(np.mean(syn)) if syn else None
    if not syn:
        out.note = "no two synthetic slices share a mask (with >= 50 px of healthy lung): diversity unavailable"
    elif not rea:
        out.note = f"no two real slices share >= {MIN_PAIR_PX} px of healthy lung: no real reference"
    else:
        out.ratio = ratio(out.synthetic, out.real)
        out.score = ratio_score(out.ratio)
    return out


def dice(pred: np.ndarray, truth: np.ndarray) -> float | None:
    """2 |P & T| / (|P| + |T|) of boolean masks; None when both are empty."""
    total = int(pred.sum()) + int(truth.sum())
    return None if total == 0 else 2.0 * int((pred & truth).sum()) / total


def segmenter_dice(
    pred_fn: PredFn,
    slices: Sequence[RealismSlice | tuple[np.ndarray, np.ndarray]],
    pass_spacing: bool = False,
) -> dict[str, float | None]:
    """Dice of pred_fn(hu) (a COVID-19-CT-Seg label map) against each slice's label, pooled over the slices.

    "lung" compares labels 1|2|3 with predicted 1|2|3, "infection" label 3 with predicted 3; None where both are
    empty everywhere. With pass_spacing, pred_fn is called as pred_fn(hu, spacing) (RealismSlice.spacing, in mm).
    """
    inter = {"lung": 0, "infection": 0}
    total = {"lung": 0, "infection": 0}
    for item in slices:
        if isinstance(item, RealismSlice):
            hu, label, spacing = item.hu, item.label, item.spacing
        else:
            (hu, label), spacing = item, None
        pred = np.asarray(pred_fn(hu, spacing) if pass_spacing else pred_fn(hu))
        if pred.shape != np.shape(label):
            raise ValueError(f"segmenter returned shape {pred.shape} for a slice of shape {np.shape(label)}")
        for name, p, t in (("lung", pred > 0, label > 0), ("infection", pred == 3, label == 3)):
            inter[name] += int((p & t).sum())
            total[name] += int(p.sum()) + int(t.sum())
    return {k: (2.0 * inter[k] / total[k] if total[k] else None) for k in inter}


def segmenter_metric(
    pred_fn: PredFn | None,
    real: Sequence[RealismSlice],
    synthetic: Sequence[RealismSlice],
    pass_spacing: bool = False,
    note: str | None = None,
) -> SegmenterMetrics:
    """segmenter_dice on both sets and its score; all null with a note when there is no segmenter."""
    if pred_fn is None:
        return SegmenterMetrics(note=note or "no segmenter given (pass --segmenter BUNDLE of a trained covid_seg_2d)")
    dr, ds = segmenter_dice(pred_fn, real, pass_spacing), segmenter_dice(pred_fn, synthetic, pass_spacing)
    out = SegmenterMetrics(dr["lung"], ds["lung"], dr["infection"], ds["infection"], note=note)
    out.score = _mean_available(
        [
            ratio_score(ratio(ds[k], dr[k])) if dr[k] is not None and ds[k] is not None else None
            for k in ("lung", "infection")
        ]
    )
    return out


# ---------------------------------------------------------------------------------------------- the report


def summary_score(report: RealismReport) -> tuple[float | None, dict[str, float | None]]:
    """The documented summary (mean of available region, contrast, diversity and segmenter scores) and its parts."""
    parts: dict[str, float | None] = {f"region:{r}": m.score for r, m in report.regions.items()}
    parts["contrast"] = report.contrast.score
    parts["diversity"] = report.diversity.score
    parts["segmenter"] = report.segmenter.score
    return _mean_available(parts.values()), parts


def compare_sets(
    real: Sequence[RealismSlice | tuple[np.ndarray, np.ndarray]],
    synthetic: Sequence[RealismSlice | tuple[np.ndarray, np.ndarray]],
    *,
    size: int = DEFAULT_SIZE,
    groups: Sequence[Sequence[int]] | None = None,
    segmenter: PredFn | None = None,
    segmenter_pass_spacing: bool = False,
    segmenter_note: str | None = None,
    erode_px: int = ERODE_PX,
    patch_px: int = PATCH_PX,
    seed: int = 0,
) -> RealismReport:
    """Every realism measure of `synthetic` against `real` and the summary score.

    Items are RealismSlice (from analysis_slice) or (hu, label) pairs; all are put on the size x size grid.
    `groups` lists indices of synthetic slices that share one mask (default: grouped by identical label maps).
    """
    rs = [_as_slice(s, size) for s in real]
    ss = [_as_slice(s, size) for s in synthetic]
    if not rs or not ss:
        raise ValueError(f"need at least one real and one synthetic slice, got {len(rs)} and {len(ss)}")
    for name, group in (("real", rs), ("synthetic", ss)):
        if not any((s.label > 0).any() for s in group):
            raise ValueError(f"no lung (label 1, 2 or 3) in any {name} slice")
    if groups is not None:
        bad = [i for g in groups for i in g if not 0 <= i < len(ss)]
        if bad:
            raise ValueError(f"groups name synthetic slices {bad[:5]} outside 0..{len(ss) - 1}")
    regions = {r: region_metrics(rs, ss, r, erode_px, patch_px) for r in REGIONS}
    report = RealismReport(
        size=size,
        n_real=len(rs),
        n_synthetic=len(ss),
        regions=regions,
        contrast=contrast_metric(rs, ss),
        diversity=diversity_metric(rs, ss, groups, seed),
        segmenter=segmenter_metric(segmenter, rs, ss, segmenter_pass_spacing, segmenter_note),
        settings={"erode_px": erode_px, "patch_px": patch_px, "seed": seed, "glcm_levels": GLCM_LEVELS},
    )
    report.summary_score, report.components = summary_score(report)
    return report


# -------------------------------------------------------------------------------------------------- markdown


def _fmt(x: float | None, digits: int = 0) -> str:
    """A number for the tables, or an en dash for None."""
    return "–" if x is None else f"{x:.{digits}f}"


def format_markdown(report: RealismReport) -> str:
    """Markdown tables of a RealismReport: per-region real/synthetic values, then the global measures."""
    lines = [
        f"## Realism of {report.n_synthetic} synthetic vs {report.n_real} real slices ({report.size} px)",
        "",
        f"**Summary score {_fmt(report.summary_score, 3)}** (1 = indistinguishable from real; docs/realism.md)",
        "",
        "| region | mean HU real / syn | sd across slices real / syn | W1 HU | mean abs Laplacian HU real / syn "
        "(ratio) | gradient HU/px real / syn (ratio) | gradient sd ratio | PSD dist | GLCM dist | score |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report.regions.items():
        lines.append(
            f"| {name} | {_fmt(m.mean_hu_real)} / {_fmt(m.mean_hu_synthetic)} "
            f"| {_fmt(m.mean_hu_sd_real)} / {_fmt(m.mean_hu_sd_synthetic)} | {_fmt(m.hu_w1, 1)} "
            f"| {_fmt(m.laplacian_real)} / {_fmt(m.laplacian_synthetic)} ({_fmt(m.laplacian_ratio, 2)}) "
            f"| {_fmt(m.gradient_real)} / {_fmt(m.gradient_synthetic)} ({_fmt(m.gradient_ratio, 2)}) "
            f"| {_fmt(m.gradient_sd_ratio, 2)} | {_fmt(m.psd_distance, 2)} | {_fmt(m.glcm_distance, 3)} "
            f"| {_fmt(m.score, 3)} |"
        )
    c, d, g = report.contrast, report.diversity, report.segmenter
    lines += [
        "",
        "| measure | real | synthetic | ratio | score |",
        "|---|---|---|---|---|",
        f"| lesion - healthy lung contrast HU | {_fmt(c.real)} | {_fmt(c.synthetic)} | {_fmt(c.ratio, 2)} "
        f"| {_fmt(c.score, 3)} |",
        f"| diversity in lungs HU | {_fmt(d.real, 1)} | {_fmt(d.synthetic, 1)} | {_fmt(d.ratio, 2)} "
        f"| {_fmt(d.score, 3)} |",
        f"| segmenter lung Dice | {_fmt(g.lung_dice_real, 3)} | {_fmt(g.lung_dice_synthetic, 3)} | "
        f"{_fmt(ratio(g.lung_dice_synthetic, g.lung_dice_real), 2)} | {_fmt(g.score, 3)} |",
        f"| segmenter infection Dice | {_fmt(g.infection_dice_real, 3)} | {_fmt(g.infection_dice_synthetic, 3)} | "
        f"{_fmt(ratio(g.infection_dice_synthetic, g.infection_dice_real), 2)} | |",
    ]
    notes = [f"{name}: {m.note}" for name, m in report.regions.items() if m.note]
    notes += [f"{name}: {x.note}" for name, x in (("contrast", c), ("diversity", d), ("segmenter", g)) if x.note]
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"
