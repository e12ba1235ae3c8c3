"""MONAI dictionary transforms for CoSinGAN: HU <-> network range, label -> condition, slice choice, pyramid sizes.

All arrays are RAS (x, y[, z]) and channel-less unless a name says otherwise (CONVENTIONS.md).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type

from cosingan_monai.core.constants import WINDOW_HU
from cosingan_monai.data.lungmask import body_from_lungs, body_mask

HU_MIN, HU_MAX = WINDOW_HU  # the network window (CONVENTIONS.md); 0-255 PNG exports use the same window

# ----------------------------------------------------------------------------------------------- intensities


def hu_to_unit(x: Any, clip: bool = True) -> Any:
    """HU -> network range [-1, 1] over the window [-1250, 250] (ndarray or tensor in, same type out)."""
    # Not ScaleIntensityRange: it returns a MetaTensor for any input (numpy too), and this map runs on plain arrays
    # and inside the GAN's training and sampling tensors; the downstream bundles use ScaleIntensityRanged.
    y = (x - HU_MIN) / (HU_MAX - HU_MIN) * 2.0 - 1.0
    if clip:
        y = y.clip(-1.0, 1.0)
    return y


def unit_to_hu(x: Any) -> Any:
    """Network range [-1, 1] -> HU, the inverse of hu_to_unit (for writing synthetic images back in HU)."""
    return (x + 1.0) / 2.0 * (HU_MAX - HU_MIN) + HU_MIN


# ----------------------------------------------------------------------------------------------- labels


def _np(x: Any) -> np.ndarray:
    """A numpy view of an ndarray or (Meta)Tensor."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _spacing_of(x: Any) -> tuple[float, ...] | None:
    """Voxel spacing from a MetaTensor's affine, else None (the lung-mask defaults apply)."""
    if isinstance(x, MetaTensor):
        return tuple(float(s) for s in x.pixdim)
    return None


def label_to_condition(label: np.ndarray, body: np.ndarray | None = None) -> np.ndarray:
    """COVID-19-CT-Seg label map -> float32 condition (C, ...): 0 lung (labels 1-3), 1 infection (3), [2 body]."""
    lab = _np(label)
    chans = [(lab >= 1) & (lab <= 3), lab == 3]
    if body is not None:
        b = _np(body).astype(bool)
        if b.shape != lab.shape:
            raise ValueError(f"body mask shape {b.shape} does not match label shape {lab.shape}")
        chans.append(b | chans[0])  # the lungs are always inside the body
    return np.stack(chans).astype(np.float32)


#: Index of the lesion density channel in a condition (lung, infection, body, density; it needs the body channel).
DENSITY_CHANNEL = 3


def density_level(lesion: Any, density: Any = 0.0) -> Any:
    """The lesion density channel: lesion mask x (0.5 + 0.5 d), for a density d in [-1, 1] (scalar or map).

    d is the lesion's HU shift as a fraction of the GAN's trained range (`jitter_lesion_shift`); d = 0 is the
    training slice's own density. Works on NumPy arrays and torch tensors alike (docs/design.md "Lesion density").
    """
    if isinstance(density, np.ndarray):
        density = np.clip(density, -1.0, 1.0)
    elif not torch.is_tensor(density):
        density = min(1.0, max(-1.0, float(density)))
    return lesion * (0.5 + 0.5 * density)


def with_lesion_density(cond: np.ndarray, density: float | np.ndarray = 0.0) -> np.ndarray:
    """A condition (C, ...) with the lesion density channel appended after its channels (infection is channel 1)."""
    c = np.asarray(cond, dtype=np.float32)
    return np.concatenate([c, density_level(c[1:2], density).astype(np.float32)], 0)


def _check_hu(image: np.ndarray, what: str) -> None:
    """Refuse images that are clearly not HU (already windowed to [-1, 1] or 0-255) for HU-based masks."""
    lo, hi = float(image.min()), float(image.max())
    if lo >= -1.5 and hi <= 1.5:
        raise ValueError(f"{what}: image range [{lo:.2f}, {hi:.2f}] looks windowed to [-1, 1]; pass HU instead")
    if lo >= 0.0 and hi <= 255.0:
        raise ValueError(f"{what}: image range [{lo:.0f}, {hi:.0f}] looks 0-255 windowed; use io.windowed_to_hu first")


class LabelToConditiond(MapTransform):
    """Add `condition_key` = label_to_condition(label[, body]); body from body_mask(image HU) else body_from_lungs."""

    def __init__(
        self,
        keys: KeysCollection = "label",
        condition_key: str = "condition",
        image_key: str = "image",
        with_body: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.condition_key, self.image_key, self.with_body = condition_key, image_key, with_body

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            lab = _np(d[key])
            body = None
            if self.with_body:
                img = d.get(self.image_key)
                if img is not None:
                    hu = _np(img)
                    _check_hu(hu, f"LabelToConditiond[{self.image_key!r}]")
                    body = body_mask(hu, spacing=_spacing_of(img))
                else:
                    body = body_from_lungs(lab, spacing=_spacing_of(d[key]))
            cond = label_to_condition(lab, body)
            d[self.condition_key] = (
                convert_to_dst_type(cond, d[key], dtype=torch.float32)[0] if isinstance(d[key], torch.Tensor) else cond
            )
        return d


# ----------------------------------------------------------------------------------------------- slices


def select_slices(
    label: np.ndarray, k: int = 1, min_lung_fraction: float = 0.3, min_gap: int | None = None
) -> list[int]:
    """The k best axial slices for a single-slice GAN, best first.

    Score = min(infection area, healthy-lung area) so both infected and healthy lung are in view (a slice whose
    lung is nearly all infection loses); ties and infection-free volumes fall back to the largest lung. Only slices
    whose lung area is >= min_lung_fraction of the largest are eligible; picks are >= min_gap slices apart
    (default max(2, 5% of the depth)), relaxed if needed to reach k.
    """
    lab = _np(label)
    if lab.ndim == 2:
        lab = lab[..., None]
    if lab.ndim != 3:
        raise ValueError(f"label must be (x, y) or (x, y, z), got shape {lab.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    lung = ((lab >= 1) & (lab <= 3)).sum((0, 1)).astype(np.int64)
    inf = (lab == 3).sum((0, 1)).astype(np.int64)
    healthy = lung - inf
    if lung.max() == 0:
        raise ValueError("label map has no lung (labels 1-3) on any slice")
    eligible = np.flatnonzero(lung >= min_lung_fraction * lung.max())
    if len(eligible) < k:
        eligible = np.flatnonzero(lung > 0)
    if len(eligible) < k:
        raise ValueError(f"asked for k={k} slices but only {len(eligible)} slices contain lung")
    score = np.minimum(inf, healthy)
    ranked = sorted(eligible.tolist(), key=lambda z: (score[z], lung[z]), reverse=True)
    gap = max(2, round(0.05 * lab.shape[2])) if min_gap is None else int(min_gap)
    while True:
        picks: list[int] = []
        for z in ranked:
            if all(abs(z - p) >= gap for p in picks):
                picks.append(z)
                if len(picks) == k:
                    return picks
        gap -= 1  # not enough room: let the picks come closer


def take_slice(x: Any, z: int) -> Any:
    """Axial slice z of a channel-less (x, y, z) array; a MetaTensor keeps meta with the affine moved to slice z.

    Hand-rolled because SplitDim assumes channel-first arrays and would split all slices.
    """
    out = x[..., z]
    if isinstance(x, MetaTensor):
        out = MetaTensor(out.as_tensor(), meta=x.meta)
        shift = torch.eye(len(x.affine), dtype=x.affine.dtype)
        shift[2, -1] = z
        out.affine = x.affine @ shift
    return out


class SelectSlicesd(MapTransform):
    """Replace 3D (x, y, z) `keys` by the 2D slice(s) picked by select_slices on `label_key` (list of dicts if k>1)."""

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        k: int = 1,
        label_key: str = "label",
        slice_key: str = "slice_index",
        min_lung_fraction: float = 0.3,
        min_gap: int | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.k, self.label_key, self.slice_key = k, label_key, slice_key
        self.min_lung_fraction, self.min_gap = min_lung_fraction, min_gap

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any] | list[dict[Hashable, Any]]:
        zs = select_slices(data[self.label_key], self.k, self.min_lung_fraction, self.min_gap)
        outs = []
        for z in zs:
            d = dict(data)
            for key in self.key_iterator(d):
                if _np(d[key]).ndim != 3:
                    raise ValueError(f"SelectSlicesd: {key!r} must be (x, y, z), got shape {tuple(d[key].shape)}")
                d[key] = take_slice(d[key], z)
            d[self.slice_key] = z
            outs.append(d)
        return outs[0] if self.k == 1 else outs


# ----------------------------------------------------------------------------------------------- pyramid


def pyramid_sizes(
    shape_xy: tuple[int, int], max_size: int, min_size: int = 25, scale_factor: float = 0.75
) -> list[tuple[int, int]]:
    """Pyramid scale sizes, coarsest first.

    The finest scale's longer side is max_size (aspect ratio kept); the coarsest's shorter side stays >= min_size.
    """
    sx, sy = (int(s) for s in shape_xy)
    if sx < 1 or sy < 1 or max_size < 1:
        raise ValueError(f"bad pyramid request: shape {shape_xy}, max_size {max_size}")
    if not 0.0 < scale_factor < 1.0:
        raise ValueError(f"scale_factor must be in (0, 1), got {scale_factor}")
    s = max_size / max(sx, sy)
    fx, fy = sx * s, sy * s
    short = min(fx, fy)
    n = max(0, math.floor(math.log(min_size / short) / math.log(scale_factor) + 1e-9)) if short > min_size else 0

    def rnd(v: float) -> int:
        return max(1, math.floor(v + 0.5))

    return [(rnd(fx * scale_factor ** (n - i)), rnd(fy * scale_factor ** (n - i))) for i in range(n + 1)]
