"""Case-level derived data: the label map in COVID-19-CT-Seg convention and the `inspect` summary.

Kept apart from `io` so that reading a file never runs a segmentation: only asking for a label map of an
infection-only case (or a summary of an unlabelled one) finds the lungs automatically.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cosingan_monai.core.constants import INFECTION, INFECTION_ONLY
from cosingan_monai.data.io import Case, windowed_to_hu
from cosingan_monai.data.lungmask import auto_lung_mask, infection_to_labels


def label_map(case: Case) -> np.ndarray | None:
    """The case's label in COVID-19-CT-Seg convention (0 bg, 1 left, 2 right, 3 infection); None without a label.

    Infection-only labels become 3 on top of the automatic lung mask, as CONVENTIONS.md prescribes.
    A lungs+infection label is returned as is (not a copy): do not modify it.
    """
    if case.label is None:
        return None
    if case.label_kind == "lungs+infection":
        return case.label
    return infection_to_labels(case.hu(), case.label == INFECTION_ONLY, case.spacing)


# ----------------------------------------------------------------------------------------------- summarize


def _ranges(indices: Sequence[int]) -> list[list[int]]:
    """Compress sorted slice indices into inclusive [start, end] runs."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = int(i)
        else:
            runs.append([int(i), int(i)])
    return runs


def _slices_with(mask: np.ndarray) -> list[int]:
    """z indices where the mask has any voxel."""
    return np.flatnonzero(mask.any(axis=(0, 1))).tolist()


def summarize(case: Case) -> dict[str, Any]:
    """A JSON-ready summary of a case: geometry, intensity range, lung/infection slices and infection % of lung."""
    img = case.image
    p1, p50, p99 = (float(v) for v in np.percentile(img, [1, 50, 99]))
    intensity = {"min": float(img.min()), "max": float(img.max()), "p1": p1, "p50": p50, "p99": p99}
    summary: dict[str, Any] = {
        "image": str(case.image_path),
        "label": str(case.label_path) if case.label_path else None,
        "shape": list(case.shape),
        "spacing_mm": [round(s, 6) for s in case.spacing],
        "spacing_source": case.spacing_source,
        "original_orientation": "".join(case.original_axcodes),
        "orientation": "RAS",
        "intensity_kind": case.intensity_kind,
        "intensity": intensity,
        "n_slices": case.shape[2],
        "label_kind": case.label_kind,
        "label_values": None,
        "lung_source": None,
        "slices_with_lung": None,
        "slices_with_infection": None,
        "lung_volume_ml": None,
        "infection_volume_ml": None,
        "infection_percent_of_lung": None,
        "notes": list(case.notes),
    }
    if case.intensity_kind == "windowed":
        summary["intensity_hu"] = {k: float(windowed_to_hu(v)) for k, v in intensity.items()}
    voxel_ml = float(np.prod(case.spacing)) / 1000.0
    if case.label is None:  # show where the automatic lung mask finds lungs: what slice selection will use
        lung = np.asarray(auto_lung_mask(case.hu(), case.spacing)) > 0
        summary["lung_source"] = "auto_lung_mask"
    else:
        values, counts = np.unique(case.label, return_counts=True)
        summary["label_values"] = {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)}
        lung = label_map(case) > 0  # infection counts as lung tissue
        summary["lung_source"] = "label" if case.label_kind == "lungs+infection" else "auto_lung_mask"
        infection = case.label == (INFECTION if case.label_kind == "lungs+infection" else INFECTION_ONLY)
        n_lung, n_inf = int(lung.sum()), int(infection.sum())
        summary["slices_with_infection"] = _ranges(_slices_with(infection))
        summary["infection_volume_ml"] = n_inf * voxel_ml
        summary["infection_percent_of_lung"] = 100.0 * n_inf / n_lung if n_lung else None
    summary["slices_with_lung"] = _ranges(_slices_with(lung))
    summary["lung_volume_ml"] = float(lung.sum()) * voxel_ml
    return summary
