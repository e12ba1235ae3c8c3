"""Turn a user's case into the pipeline's working data: a validated HU/label volume, training slices, conditions.

Everything is written as NIfTI in HU with COVID-19-CT-Seg labels (CONVENTIONS.md), so every later stage and every
bundle reads one format whatever the user brought (NIfTI, DICOM or PNG).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cosingan_monai.core.errors import CaseError
from cosingan_monai.data.cases import label_map
from cosingan_monai.data.conditions import build_conditions, build_volume_anatomies
from cosingan_monai.data.io import Case, find_label, load_case, save_nifti, slice_affine
from cosingan_monai.data.lungmask import body_mask
from cosingan_monai.data.transforms import select_slices


@dataclass
class PreparedCase:
    """A validated case in HU with its full label map, body mask and RAS affine."""

    hu: np.ndarray
    label: np.ndarray
    body: np.ndarray
    affine: np.ndarray
    source: Case


def prepare_case(image: str | Path, label: str | Path | None = None, intensity: str = "auto") -> PreparedCase:
    """Load and validate a case; the label is found in the COVID-19-CT-Seg/MedSeg layout when not given.

    Raises CaseError naming the file for every problem, before any training starts.
    """
    image = Path(image)
    label_path = Path(label) if label is not None else find_label(image)
    if label_path is None:
        raise CaseError(image, "no label map given and none found beside it (pass --label)")
    case = load_case(image, label_path, intensity=intensity)
    full = label_map(case)
    assert full is not None  # a label path was given, so load_case returned a label
    lung = (full >= 1) & (full <= 3)
    if not lung.any():
        raise CaseError(label_path, "no lung found (no label 1-3, and the automatic lung mask found none)")
    hu = case.hu()
    body = body_mask(hu, spacing=case.spacing) | lung
    return PreparedCase(hu=hu, label=full, body=body, affine=case.affine, source=case)


def write_case(prepared: PreparedCase, out_dir: Path) -> dict[str, str]:
    """Write the normalised case (HU image, 0-3 label, body mask) as NIfTI; returns the paths."""
    image = save_nifti(prepared.hu.astype(np.float32), prepared.affine, out_dir / "image.nii.gz")
    label = save_nifti(prepared.label.astype(np.uint8), prepared.affine, out_dir / "label.nii.gz")
    body = save_nifti(prepared.body.astype(np.uint8), prepared.affine, out_dir / "body.nii.gz")
    return {"image": str(image), "label": str(label), "body": str(body)}


def write_training_slices(prepared: PreparedCase, k: int, out_dir: Path) -> list[dict[str, object]]:
    """Pick k slices with both infected and healthy lung (select_slices) and write each as a 2D NIfTI pair."""
    picks = select_slices(prepared.label, k)
    entries = []
    for z in picks:
        aff = slice_affine(prepared.affine, z)
        image = save_nifti(prepared.hu[..., z : z + 1].astype(np.float32), aff, out_dir / f"slice_{z:03d}_image.nii.gz")
        label = save_nifti(
            prepared.label[..., z : z + 1].astype(np.uint8), aff, out_dir / f"slice_{z:03d}_label.nii.gz"
        )
        entries.append({"slice": int(z), "image": str(image), "label": str(label)})
    return entries


def write_conditions(prepared: PreparedCase, count: int, seed: int, out_dir: Path) -> list[dict[str, object]]:
    """Build `count` 2D synthesis conditions (case slices + augmented + lesion-free) and write label/body NIfTIs."""
    conditions = build_conditions(prepared.label, prepared.body, count=count, seed=seed)
    z0 = int(np.flatnonzero(((prepared.label >= 1) & (prepared.label <= 3)).any(axis=(0, 1)))[0])
    aff = slice_affine(prepared.affine, z0)
    entries = []
    for i, cond in enumerate(conditions):
        label = save_nifti(cond.label[..., None].astype(np.uint8), aff, out_dir / "labels" / f"cond_{i:04d}.nii.gz")
        body = save_nifti(cond.body[..., None].astype(np.uint8), aff, out_dir / "bodies" / f"cond_{i:04d}.nii.gz")
        entries.append(cond.entry(label, body))
    return entries


def write_volume_anatomies(
    prepared: PreparedCase, count: int, seed: int, out_dir: Path, strength: float = 1.0
) -> list[dict[str, str]]:
    """Write the label volumes (and body masks) the synthetic volumes render: the case's own, then warped copies
    (data.conditions.build_volume_anatomies; strength 0: the case's own every time). Returns label/body/source."""
    anatomies = build_volume_anatomies(prepared.label, prepared.body, count, seed=seed, strength=strength)
    entries = []
    for i, (lab, body, source) in enumerate(anatomies):
        label = save_nifti(lab.astype(np.uint8), prepared.affine, out_dir / "labels" / f"anatomy_{i:03d}.nii.gz")
        mask = save_nifti(body.astype(np.uint8), prepared.affine, out_dir / "bodies" / f"anatomy_{i:03d}.nii.gz")
        entries.append({"label": str(label), "body": str(mask), "source": source})
    return entries
