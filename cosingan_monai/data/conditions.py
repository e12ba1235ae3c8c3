"""Synthesis conditions for the pipeline: every lung-bearing mask slice of a case plus augmented and lesion-free ones,
and the label volumes its synthetic volumes render (the case's own, then warped anatomies).

A single-image GAN only generalises as far as its conditions vary, so the pipeline widens the case's own masks with
joint flips, small affine and elastic deformations (MONAI random transforms, nearest-neighbour on masks), and adds
lesion-free copies that give the classifier its negatives. The same warps, one per volume and shared by all its
slices, give the 3D segmenter more than one anatomy (docs/design.md "Volume anatomies").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.transforms import Compose, Rand2DElasticd, RandAffined, RandFlipd
from scipy import ndimage

from cosingan_monai.core.constants import INFECTION
from cosingan_monai.core.constants import LEFT_LUNG as LEFT
from cosingan_monai.core.constants import RIGHT_LUNG as RIGHT

#: Label values of the COVID-19-CT-Seg convention.


@dataclass
class Condition:
    """One 2D synthesis condition: a COVID-19-CT-Seg label slice (x, y), its body mask, and where it came from."""

    label: np.ndarray
    body: np.ndarray
    source: str
    #: the infection of the mask it came from was removed (remove_lesions): a classifier negative that the 2D
    #: segmenter does not train on (data.datalists.mix_real_slices)
    lesion_removed: bool = False

    @property
    def infected(self) -> bool:
        """Whether the condition asks for infection (label 3 present)."""
        return bool((self.label == INFECTION).any())

    def entry(self, label_path: object, body_path: object) -> dict[str, object]:
        """This condition's conditions.json entry, once its label and body are written to those files."""
        return {
            "label": str(label_path),
            "body": str(body_path),
            "infected": int(self.infected),
            "source": self.source,
            "lesion_removed": int(self.lesion_removed),
        }


def lung_bearing_slices(label: np.ndarray, min_fraction: float = 0.2) -> list[int]:
    """Axial slices whose lung area (labels 1-3) is at least `min_fraction` of the largest slice's."""
    area = ((label >= LEFT) & (label <= INFECTION)).sum(axis=(0, 1))
    if area.max() == 0:
        return []
    return [int(z) for z in np.flatnonzero(area >= min_fraction * area.max())]


def relabel_sides(label: np.ndarray) -> np.ndarray:
    """Re-assign lung labels 1/2 by position after a flip or warp: RAS left lung has the lower x (CONVENTIONS.md).

    Works on a slice (x, y) or a volume (x, y, z) (one split for the whole volume).

    Infection (3) is left untouched; the split is the midpoint between the two sides' lung centroids.
    """
    out = label.copy()
    lung = (label == LEFT) | (label == RIGHT)
    if not lung.any():
        return out
    xs = np.nonzero(lung)[0]
    left_x = np.nonzero(label == LEFT)[0]
    right_x = np.nonzero(label == RIGHT)[0]
    both_sides = len(left_x) and len(right_x)
    mid = 0.5 * (left_x.mean() + right_x.mean()) if both_sides else 0.5 * (xs.min() + xs.max())
    xgrid = np.arange(label.shape[0]).reshape((-1,) + (1,) * (label.ndim - 1))  # a slice (x, y) or volume (x, y, z)
    out[lung & (xgrid < mid)] = LEFT
    out[lung & (xgrid >= mid)] = RIGHT
    return out


def remove_lesions(label: np.ndarray) -> np.ndarray:
    """The same lungs without infection: label 3 becomes lung of the side it lies on (a negative for the classifier)."""
    out = label.copy()
    out[out == INFECTION] = LEFT  # any lung value; relabel_sides puts it on the right side
    return relabel_sides(out)


def lesion_density_map(label: np.ndarray, spread: float, rng: np.random.Generator) -> np.ndarray | None:
    """A lesion density d ~ U[-spread, spread] per connected lesion (label 3) of a slice or volume, 0 elsewhere.

    Why per lesion: one training slice shows one density, while a real lung mixes faint ground glass and dense
    consolidation; a GAN with the lesion density channel can render each lesion of a new mask at its own density
    (docs/design.md "Lesion density"). None when there is nothing to draw (no lesion, or spread 0).
    """
    if not 0.0 <= spread <= 1.0:
        raise ValueError(f"lesion density spread must be in [0, 1]; got {spread}")
    lesion = np.asarray(label) == INFECTION
    if spread == 0.0 or not lesion.any():
        return None
    components, count = ndimage.label(lesion)
    levels = np.concatenate([[0.0], rng.uniform(-spread, spread, size=count)]).astype(np.float32)
    return levels[components]


def mask_augmentation(size_xy: tuple[int, int], strength: float = 1.0) -> Compose:
    """Joint random flip + small affine + elastic warp for (label, body) masks, nearest-neighbour throughout."""
    keys = ("label", "body")
    sigma = max(size_xy) / 16.0
    return Compose(
        [
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandAffined(
                keys,
                prob=0.8,
                rotate_range=0.12 * strength,
                scale_range=0.08 * strength,
                translate_range=(0.03 * size_xy[0] * strength, 0.03 * size_xy[1] * strength),
                mode="nearest",
                padding_mode="zeros",
            ),
            Rand2DElasticd(
                keys,
                spacing=(sigma, sigma),
                magnitude_range=(0.0, 2.0 * strength),
                prob=0.6,
                mode="nearest",
                padding_mode="zeros",
            ),
        ]
    )


def build_conditions(
    label: np.ndarray,
    body: np.ndarray,
    count: int,
    seed: int = 0,
    lesion_free_fraction: float = 0.25,
    min_lung_fraction: float = 0.2,
) -> list[Condition]:
    """`count` 2D conditions from a label volume (x, y, z): its lung-bearing slices first, then augmented copies.

    Roughly `lesion_free_fraction` of the augmented conditions have their infection removed. Deterministic for a
    seed. Raises ValueError when the volume has no lung.
    """
    if label.ndim == 2:
        label, body = label[..., None], body[..., None]
    if label.shape != body.shape:
        raise ValueError(f"label shape {label.shape} and body shape {body.shape} differ")
    slices = lung_bearing_slices(label, min_lung_fraction)
    if not slices:
        raise ValueError("the label volume has no lung (labels 1-3) on any slice")
    rng = np.random.default_rng(seed)
    conditions = [Condition(label[..., z].copy(), body[..., z].astype(bool), f"slice {z}") for z in slices[:count]]
    augment = mask_augmentation(label.shape[:2])
    augment.set_random_state(seed=seed)
    while len(conditions) < count:
        z = int(rng.choice(slices))
        sample = augment(
            {
                "label": torch.as_tensor(label[None, ..., z].astype(np.float32)),
                "body": torch.as_tensor(body[None, ..., z].astype(np.float32)),
            }
        )
        lab = relabel_sides(np.rint(np.asarray(sample["label"])[0]).astype(np.uint8))
        bod = np.asarray(sample["body"])[0] > 0.5
        source, removed = f"slice {z} augmented", False
        if rng.random() < lesion_free_fraction and (lab == INFECTION).any():
            lab, source, removed = remove_lesions(lab), source + ", lesion-free", True
        if not ((lab >= LEFT) & (lab <= INFECTION)).any():
            continue  # the warp pushed the lungs out of view
        conditions.append(Condition(lab, bod | (lab > 0), source, removed))
    return conditions


def build_volume_anatomies(
    label: np.ndarray, body: np.ndarray, count: int, seed: int = 0, strength: float = 1.0, max_tries: int = 20
) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """`count` label volumes (x, y, z) with their body masks: the case's own first, then warped copies.

    Each copy draws one flip / affine / elastic warp (mask_augmentation) and applies it to every axial slice, so the
    volume stays continuous along z while its lungs, lesions and body take another shape: a 3D segmenter trained and
    validated on one label volume learns that one anatomy. Deterministic for a seed; `strength` 0 gives `count`
    copies of the case. Raises ValueError when the volume has no lung, or when `max_tries` warps in a row push the
    lungs out of view.
    """
    if label.ndim != 3 or label.shape != body.shape:
        raise ValueError(f"need a label volume and a body mask of one 3D shape; got {label.shape} and {body.shape}")
    if not ((label >= LEFT) & (label <= INFECTION)).any():
        raise ValueError("the label volume has no lung (labels 1-3) on any slice")
    if strength == 0.0:
        return [(label.copy(), body.astype(bool), "case") for _ in range(count)]
    out = [(label.copy(), body.astype(bool), "case")]
    augment = mask_augmentation(label.shape[:2], strength)
    augment.set_random_state(seed=seed)
    lung_before = int(((label >= LEFT) & (label <= INFECTION)).sum())
    tries = 0
    while len(out) < count:
        # z as the channel axis: MONAI's 2D transforms draw one warp and apply it to every channel
        sample = augment(
            {
                "label": torch.as_tensor(np.moveaxis(label, 2, 0).astype(np.float32)),
                "body": torch.as_tensor(np.moveaxis(body, 2, 0).astype(np.float32)),
            }
        )
        lab = relabel_sides(np.moveaxis(np.rint(np.asarray(sample["label"])), 0, 2).astype(np.uint8))
        bod = np.moveaxis(np.asarray(sample["body"]), 0, 2) > 0.5
        lung_after = int(((lab >= LEFT) & (lab <= INFECTION)).sum())
        if lung_after < 0.5 * lung_before:  # the warp pushed much of the lungs out of view: draw again
            tries += 1
            if tries >= max_tries:
                raise ValueError(f"{max_tries} warps in a row pushed the lungs out of view (strength {strength})")
            continue
        tries = 0
        out.append((lab, bod | (lab > 0), f"case warped {len(out)}"))
    return out[:count]
