"""Realism of a CoSinGAN at the end of each pyramid scale, against a real reference set (metrics.realism).

Off unless a reference is given. At the end of scale n the model samples one slice for each of up to `n_masks`
reference masks (with the reference slice's own body mask) and `n_samples` slices for the training mask, and
`metrics.realism.compare_sets` compares them with the reference slices on an analysis grid of scale n's own
shorter side (the reference is area-averaged to it), so every scale is judged at the resolution it works at. The
flat numbers go into train_stats.json and TensorBoard (`realism/<name>`, global step = scale). Cost: a few dozen
small forward passes and one compare_sets on <= 2 x n_masks slices (about a second at 128 px).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cosingan_monai.core.constants import INFECTION
from cosingan_monai.data.cases import label_map
from cosingan_monai.data.io import find_label, load_case
from cosingan_monai.data.lungmask import body_mask
from cosingan_monai.metrics.realism import REGIONS, compare_sets
from cosingan_monai.networks.pyramid import CoSinGAN

IMAGE_SUFFIXES = (".png", ".nii", ".nii.gz", ".dcm")


def _reference_paths(source: str | os.PathLike[str]) -> list[tuple[Path, Path | None]]:
    """(image, label) paths of a reference: a MONAI datalist JSON (every split) or an images/ folder (or its parent)."""
    p = Path(source)
    if p.is_file() and p.suffix == ".json":
        data = json.loads(p.read_text())
        entries = [e for v in data.values() if isinstance(v, list) for e in v if isinstance(e, dict)]
        return [(p.parent / e["image"], p.parent / e["label"] if e.get("label") else None) for e in entries]
    folder = p / "images" if (p / "images").is_dir() else p
    if not folder.is_dir():
        raise FileNotFoundError(f"realism reference {p}: neither a datalist JSON nor a folder of images")
    images = sorted(f for f in folder.iterdir() if f.name.lower().endswith(IMAGE_SUFFIXES))
    return [(f, find_label(f)) for f in images]


def load_reference(source: str | os.PathLike[str], limit: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Real (HU (x, y), label map (x, y)) slices with lung from a datalist or folder, via the project's case loader.

    A volume contributes its middle lung-bearing slice. Slices without any lung label are skipped.
    """
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for image, label in _reference_paths(source):
        if label is None:
            continue
        case = load_case(image, label)
        hu, lab = case.hu(), label_map(case)
        if lab is None:
            continue
        if hu.ndim == 3:
            zs = np.flatnonzero((lab > 0).any((0, 1)))
            if len(zs) == 0:
                continue
            z = int(zs[len(zs) // 2])
            hu, lab = hu[..., z], lab[..., z]
        if (lab > 0).any():
            out.append((np.asarray(hu, np.float32), np.asarray(lab, np.uint8)))
        if limit is not None and len(out) >= limit:
            break
    return out


def label_from_condition(cond: torch.Tensor) -> np.ndarray:
    """A label map (x, y) from a condition (C, x, y): 1 lung (sides not kept), 3 infection, 0 elsewhere."""
    c = cond.detach().float().cpu().numpy()
    lab = np.where(c[0] > 0.5, 1, 0).astype(np.uint8)
    lab[(c[1] > 0.5) & (lab > 0)] = INFECTION
    return lab


def _nearest(label: np.ndarray, size: Sequence[int]) -> np.ndarray:
    t = torch.as_tensor(label.astype(np.float32))[None, None]
    return F.interpolate(t, size=tuple(int(s) for s in size), mode="nearest-exact")[0, 0].numpy().astype(np.uint8)


def flat_numbers(report: Any) -> dict[str, float | None]:
    """The numbers of a RealismReport that steer the GAN, flat: summary, per-region ratios and HU offsets, diversity."""
    out: dict[str, float | None] = {"summary_score": report.summary_score}
    for r in REGIONS:
        m = report.regions[r]
        diff = None
        if m.mean_hu_real is not None and m.mean_hu_synthetic is not None:
            diff = m.mean_hu_synthetic - m.mean_hu_real
        spread = None
        if m.mean_hu_sd_real and m.mean_hu_sd_synthetic is not None:
            spread = m.mean_hu_sd_synthetic / m.mean_hu_sd_real
        out.update(
            {
                f"{r}_laplacian_ratio": m.laplacian_ratio,
                f"{r}_gradient_ratio": m.gradient_ratio,
                f"{r}_mean_hu_diff": diff,
                f"{r}_spread_ratio": spread,
                f"{r}_hu_w1": m.hu_w1,
                f"{r}_psd_distance": m.psd_distance,
                f"{r}_score": m.score,
            }
        )
    out["diversity_ratio"] = report.diversity.ratio
    out["contrast_ratio"] = report.contrast.ratio
    return {k: (None if v is None else float(v)) for k, v in out.items()}


class ScaleRealism:
    """Realism numbers of a (partly trained) CoSinGAN at its current finest trained scale against real slices."""

    def __init__(
        self,
        reference: Sequence[tuple[np.ndarray, np.ndarray]] | str | os.PathLike[str],
        n_masks: int = 8,
        n_samples: int = 4,
        seed: int = 0,
    ) -> None:
        ref = load_reference(reference) if isinstance(reference, (str, os.PathLike)) else list(reference)
        if not ref:
            raise ValueError(f"realism reference {reference!s:.80}: no slice with a lung label")
        self.real = [(np.asarray(h, np.float32), np.asarray(lab, np.uint8)) for h, lab in ref]
        self.masks = [(lab, body_mask(hu)) for hu, lab in self.real[: max(0, int(n_masks))]]
        self.n_samples, self.seed = int(n_samples), int(seed)

    @torch.no_grad()
    def __call__(self, model: CoSinGAN) -> dict[str, float | None]:
        """Sample at the last trained scale and compare with the reference on that scale's grid (flat numbers)."""
        size = model.sizes[model.num_trained - 1]
        syn: list[tuple[np.ndarray, np.ndarray]] = []
        for i, (lab, body) in enumerate(self.masks):
            hu = model.to_hu(model.sample(lab, n=1, seed=self.seed + i, body=body))[0, 0].cpu().numpy()
            syn.append((hu, _nearest(lab, size)))
        group: list[int] = []
        if self.n_samples > 0:
            cond = F.interpolate(model.train_condition, size=size, mode="area")[0]
            train_lab = label_from_condition(cond)
            samples = model.sample(model.train_condition[0], n=self.n_samples, seed=self.seed + 10_007)
            for s in model.to_hu(samples)[:, 0].cpu().numpy():
                group.append(len(syn))
                syn.append((s, train_lab))
        groups = [[i] for i in range(len(self.masks))] + ([group] if group else [])
        report = compare_sets(self.real, syn, size=int(min(size)), groups=groups, seed=self.seed)
        return {"analysis_px": float(min(size)), **flat_numbers(report)}


def log_realism(writer: Any, numbers: dict[str, float | None], scale: int) -> None:
    """Write the available realism numbers of one scale to TensorBoard as `realism/<name>` at step = scale."""
    if writer is None:
        return
    for key, value in numbers.items():
        if value is not None and np.isfinite(value):
            writer.add_scalar(f"realism/{key}", value, scale)
    writer.flush()
