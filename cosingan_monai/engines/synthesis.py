"""Synthesis with trained CoSinGANs as a `monai.engines.Evaluator`: one iteration per condition or label volume.

Writes the layout of CONVENTIONS.md ("Synthetic data layout"): images/ and labels/ NIfTI (HU, 0-3 labels on the
model's grid), previews/ PNG, datalist.json (+ "infected"), datalist_cls.json, and volumes/ + datalist_3d.json.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Events
from monai.engines import Evaluator

from cosingan_monai.core.constants import INFECTION
from cosingan_monai.core.errors import CaseError
from cosingan_monai.core.files import write_json
from cosingan_monai.data.conditions import lesion_density_map, remove_lesions
from cosingan_monai.data.datalists import classifier_entry, split_items, write_datalist
from cosingan_monai.data.io import NIFTI_SUFFIXES, hu_to_windowed, ras_to_display, save_nifti, save_png, slice_affine
from cosingan_monai.engines.model_fit import FIT_FEATURES, assign_models, label_features
from cosingan_monai.networks.pyramid import CoSinGAN

logger = logging.getLogger("cosingan_monai.sample")


# ----------------------------------------------------------------------------------------------- inputs


def read_label(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """A COVID-19-CT-Seg label map (x, y[, z]) in closest-canonical RAS and its affine; CaseError on bad input."""
    p = Path(path)
    if not p.is_file():
        raise CaseError(p, "label file not found")
    if not p.name.endswith(NIFTI_SUFFIXES):
        raise CaseError(p, "conditions must be NIfTI label maps (.nii/.nii.gz); convert PNG masks first")
    try:
        img = nib.as_closest_canonical(nib.load(str(p)))
        data = np.asarray(img.dataobj)
    except Exception as exc:  # nibabel raises several types for damaged files
        raise CaseError(p, f"cannot read NIfTI ({type(exc).__name__}: {exc})") from None
    data = np.squeeze(data) if data.ndim > 3 else data
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3):
        raise CaseError(p, f"expected a 2D slice or 3D volume, got shape {data.shape}")
    rounded = np.rint(data)
    if not np.allclose(rounded, data) or rounded.min() < 0 or rounded.max() > 3:
        raise CaseError(p, "label values must be integers 0-3 (0 background, 1 left, 2 right lung, 3 infection)")
    return rounded.astype(np.uint8), img.affine


def lung_slices(label: np.ndarray, k: int) -> list[int]:
    """Up to k lung-bearing slices of a volume, evenly spread over the lung extent."""
    lung = ((label >= 1) & (label <= 3)).sum((0, 1))
    zs = np.flatnonzero(lung >= 0.2 * max(1, lung.max()))
    if len(zs) == 0:
        return []
    pick = np.unique(np.linspace(0, len(zs) - 1, min(k, len(zs))).round().astype(int))
    return [int(zs[i]) for i in pick]


def _spacing(affine: np.ndarray) -> tuple[float, float]:
    sp = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    return float(sp[0]), float(sp[1])


def _entries(conditions: Any, datalist: str | None) -> list[dict[str, Any]]:
    """Condition entries {"label", ["body"], ...} from a folder, a {"conditions": [...]} JSON, a datalist, or a list."""
    if datalist:
        conditions = datalist
    if isinstance(conditions, (list, tuple)):
        return [c if isinstance(c, dict) else {"label": str(c)} for c in conditions]
    p = Path(str(conditions))
    if p.is_dir():
        for sub in ("Lung_and_Infection_Mask", "labels", "labelsTr"):  # dataset roots: use their label folder
            if (p / sub).is_dir():
                p = p / sub
                break
        files = sorted(f for f in p.iterdir() if f.name.endswith(NIFTI_SUFFIXES))
        if not files:
            raise CaseError(p, "no NIfTI label maps in this folder")
        return [{"label": str(f)} for f in files]
    if p.is_file() and p.suffix == ".json":
        doc = json.loads(p.read_text())
        items = doc.get("conditions") if isinstance(doc, dict) and "conditions" in doc else None
        if items is None and isinstance(doc, dict):
            items = [e for key in ("training", "validation", "test") for e in doc.get(key, [])]
        if not items:
            raise CaseError(p, "no condition entries (want {'conditions': [...]} or a MONAI datalist)")
        base = p.parent
        out = []
        for e in items:
            e = dict(e) if isinstance(e, dict) else {"label": str(e)}
            for key in ("label", "body"):
                if e.get(key) and not Path(e[key]).is_absolute():
                    e[key] = str(base / e[key])
            out.append(e)
        return out
    raise CaseError(p, "conditions must be a folder of label maps, a conditions/datalist JSON, or a list")


def build_condition_items(
    conditions: Any,
    datalist: str | None = None,
    slices_per_volume: int = 8,
    lesion_free_copies: bool = True,
) -> list[dict[str, Any]]:
    """2D synthesis items {label (x, y), body|None, affine, source, infected, lesion_removed, anatomy}; volumes
    give their lung slices. `anatomy` numbers the condition slices; a lesion-free copy shares its condition's.

    With `lesion_free_copies`, every infected condition is followed by a copy with label 3 turned into lung
    (remove_lesions): infection-free negatives for the classifier from the same anatomy. Such copies, and entries
    marked "lesion_removed" upstream, carry lesion_removed=True, which the datalists pass on.
    """
    items: list[dict[str, Any]] = []
    anatomy = 0  # one id per condition slice, shared by its lesion-free copy (rendered by the same model)
    for entry in _entries(conditions, datalist):
        label, affine = read_label(entry["label"])
        body = None
        if entry.get("body"):
            body, _ = read_label(entry["body"])
            if body.shape != label.shape:
                raise CaseError(entry["body"], f"body shape {body.shape} does not match label shape {label.shape}")
        if label.ndim == 2:
            slices = [(label, None if body is None else body > 0, affine, entry["label"])]
        else:
            slices = [
                (
                    label[..., z],
                    None if body is None else body[..., z] > 0,
                    slice_affine(affine, z),
                    f"{entry['label']}[z={z}]",
                )
                for z in lung_slices(label, slices_per_volume)
            ]
        removed = bool(entry.get("lesion_removed", False))  # a condition whose lesions were taken out upstream
        for lab, bod, aff, source in slices:
            infected = bool((lab == INFECTION).any())
            item = {"label": lab, "body": bod, "affine": aff, "source": source, "infected": infected}
            items.append({**item, "lesion_removed": removed, "anatomy": anatomy})
            if lesion_free_copies and infected:
                items.append(
                    {
                        "label": remove_lesions(lab),
                        "body": bod,
                        "affine": aff,
                        "source": source + " lesion-free",
                        "infected": False,
                        "lesion_removed": True,
                        "anatomy": anatomy,
                    }
                )
            anatomy += 1
    return items


# ----------------------------------------------------------------------------------------------- outputs


def grid_affine(affine: np.ndarray, shape_from: Sequence[int], shape_to: Sequence[int]) -> np.ndarray:
    """The affine of the same field of view resampled from shape_from to shape_to in-plane (voxel centres kept)."""
    zoom = np.eye(4)
    for i in range(2):
        z = shape_from[i] / shape_to[i]
        zoom[i, i] = z
        zoom[i, 3] = 0.5 * (z - 1.0)
    return np.asarray(affine, float) @ zoom


def label_on_grid(label: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resample of a label slice (x, y) or stack (x, y, z) to the model's in-plane size."""
    t = torch.as_tensor(label.astype(np.float32))
    t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[:, None]
    out = F.interpolate(t, size=tuple(int(s) for s in size), mode="nearest-exact")[:, 0]
    out = out[0] if label.ndim == 2 else out.permute(1, 2, 0)
    return out.numpy().astype(np.uint8)


def preview(hu: np.ndarray) -> np.ndarray:
    """An HU slice (x, y) as an 8-bit radiological display image (window -1250..250)."""
    return ras_to_display(np.clip(hu_to_windowed(hu), 0, 255).round().astype(np.uint8))


# ----------------------------------------------------------------------------------------------- engine


class SynthesisEvaluator(Evaluator):
    """Synthesize `samples_per_condition` slices per 2D condition, then `n_volumes` volumes (models in turn).

    With several models, `model_assignment` says which render a condition (engines/model_fit.py): "fit" (default)
    the model whose training slice fits it best, each model an equal share; "round_robin" one in turn; "all"
    every model (the set grows with k). A condition and its lesion-free copy share a model. Each iteration handles
    one condition and writes its files; at completion the datalists and records.json (which model rendered each
    slice) are written. The synthetic split into training/validation is made per condition, stratified by infection.
    """

    def __init__(
        self,
        device: torch.device | str,
        models: Sequence[str | os.PathLike[str]] | str,
        items: list[dict[str, Any]],
        output_dir: str | os.PathLike[str],
        samples_per_condition: int = 4,
        seed: int = 0,
        volume_labels: Sequence[str] = (),
        volume_bodies: Sequence[str] = (),
        n_volumes: int = 0,
        val_fraction: float = 0.2,
        previews: bool = True,
        amp: bool = True,
        val_handlers: Sequence[Any] | None = None,
        lesion_density_spread: float = 0.0,
        model_assignment: str = "fit",
    ) -> None:
        paths = [models] if isinstance(models, (str, os.PathLike)) else list(models)
        if not paths:
            raise ValueError("no CoSinGAN model given")
        self.models = [CoSinGAN.load(p, device) for p in paths]
        self.model_paths = paths
        self.item_models = self._assign(items, model_assignment)
        self.volume_jobs = self._volume_jobs(volume_labels, volume_bodies, n_volumes)
        data = list(items) + [{"volume": j} for j in range(len(self.volume_jobs))]
        if not data:
            raise ValueError("nothing to synthesize: no conditions and no volumes")
        super().__init__(
            device=torch.device(device),
            val_data_loader=data,
            epoch_length=len(data),
            amp=amp,
            decollate=False,
            val_handlers=val_handlers,
        )
        self.out = Path(output_dir)
        self.samples_per_condition, self.seed = int(samples_per_condition), int(seed)
        self.val_fraction, self.previews = float(val_fraction), bool(previews)
        lesion_density_map(np.zeros((1, 1)), lesion_density_spread, np.random.default_rng(0))  # range check first
        self.lesion_density_spread = float(lesion_density_spread)
        self.records: list[dict[str, Any]] = []
        self.volume_records: list[dict[str, Any]] = []
        self._counter = 0
        self.add_event_handler(Events.COMPLETED, lambda engine: self.write_datalists())

    def _assign(self, items: Sequence[dict[str, Any]], how: str) -> list[list[int]]:
        """The models of each item: one assignment per anatomy (a condition and its lesion-free copy)."""
        groups: dict[Any, int] = {}
        firsts: list[dict[str, Any]] = []
        for i, item in enumerate(items):
            key = item.get("anatomy", ("item", i))
            if key not in groups:
                groups[key] = len(firsts)
                firsts.append(item)
        if how == "fit" and len(self.models) > 1:  # the features cost a body mask per condition: only when used
            feats = [label_features(it["label"], it["body"], _spacing(it["affine"])) for it in firsts]
        else:
            feats = [np.zeros(len(FIT_FEATURES)) for _ in firsts]
        chosen = assign_models(feats, self.models, how)
        return [chosen[groups[item.get("anatomy", ("item", i))]] for i, item in enumerate(items)]

    @staticmethod
    def _volume_jobs(labels: Sequence[str], bodies: Sequence[str], n: int) -> list[tuple[str, str | None, int]]:
        if n > 0 and not labels:
            raise ValueError(f"n_volumes={n} but no volume_labels given")
        if bodies and len(bodies) != len(labels):
            raise ValueError("volume_bodies must be empty or match volume_labels one to one")
        return [(labels[j % len(labels)], bodies[j % len(labels)] if bodies else None, j) for j in range(n)]

    @torch.no_grad()
    def _iteration(self, engine: SynthesisEvaluator, item: dict[str, Any]) -> dict[str, Any]:
        if "volume" in item:
            return self._volume(*self.volume_jobs[item["volume"]])
        lab, aff = item["label"], item["affine"]
        spacing = _spacing(aff)
        written = []
        jobs = [m for m in self.item_models[engine.state.iteration - 1] for _ in range(self.samples_per_condition)]
        for m in jobs:
            idx = self._counter
            model = self.models[m]
            density = self._density(model, lab, (self.seed, idx))
            img = model.sample(
                lab, n=1, seed=self.seed * 1_000_003 + idx, body=item["body"], spacing=spacing, density=density
            )
            hu = model.to_hu(img)[0, 0].cpu().numpy().astype(np.float32)
            out_lab = label_on_grid(lab, hu.shape)
            out_aff = grid_affine(aff, lab.shape, hu.shape)
            name = f"syn_{idx:04d}"
            save_nifti(hu, out_aff, self.out / "images" / f"{name}.nii.gz", dtype=np.float32)
            save_nifti(out_lab, out_aff, self.out / "labels" / f"{name}.nii.gz", dtype=np.uint8)
            if self.previews:
                save_png(preview(hu), self.out / "previews" / f"{name}.png")
            infected = int((out_lab == INFECTION).any())
            rec = {
                "name": name,
                "condition": engine.state.iteration - 1,
                "infected": infected,
                "source": item["source"],
                "model": m,
                "lesion_removed": int(bool(item.get("lesion_removed", False))),
            }
            self.records.append(rec)
            written.append(rec)
            self._counter += 1
        return {"written": written}

    def _volume(self, label_path: str, body_path: str | None, j: int) -> dict[str, Any]:
        label, aff = read_label(label_path)
        if label.ndim != 3:
            raise CaseError(label_path, "volume mode needs a 3D label volume (x, y, z)")
        body = read_label(body_path)[0] > 0 if body_path else None
        model = self.models[j % len(self.models)]
        density = self._density(model, label, (self.seed, 7919, j))
        hu = model.sample_volume(label, seed=self.seed * 7919 + j, body=body, spacing=_spacing(aff), density=density)
        out_lab = label_on_grid(label, hu.shape[:2])
        out_aff = grid_affine(aff, label.shape, hu.shape)
        name = f"vol_{j:03d}"
        save_nifti(hu.astype(np.float32), out_aff, self.out / "volumes" / "images" / f"{name}.nii.gz", np.float32)
        save_nifti(out_lab, out_aff, self.out / "volumes" / "labels" / f"{name}.nii.gz", np.uint8)
        rec = {"name": name, "source": str(label_path), "infected": int((out_lab == INFECTION).any())}
        self.volume_records.append(rec)
        return {"written": [rec]}

    def _density(self, model: CoSinGAN, label: np.ndarray, key: tuple[int, ...]) -> np.ndarray | None:
        """Per-lesion density map for one sample (None: the training slice's density, or a model without the
        lesion density channel); seeded by `key`, so the same seed gives the same densities."""
        if not model.config.lesion_density_channel:
            return None
        return lesion_density_map(label, self.lesion_density_spread, np.random.default_rng(key))

    def _split_spec(self, n: int) -> dict[str, int]:
        """Per-split counts: val_fraction of n for validation, at least one when val_fraction > 0 and n >= 2."""
        val = min(n - 1, max(1 if self.val_fraction > 0 else 0, round(n * self.val_fraction)))
        return {"training": n - val, "validation": val, "test": 0}

    def write_datalists(self) -> None:
        """datalist.json, datalist_cls.json and (volumes) datalist_3d.json, split per condition / per volume."""
        if self.records:
            conds = sorted({str(r["condition"]) for r in self.records})
            infected = {str(r["condition"]): r["infected"] for r in self.records}
            if len(conds) == 1:
                split_of = dict.fromkeys(conds, "training")
            else:
                parts = split_items(conds, self._split_spec(len(conds)), seed=self.seed, strata=infected)
                split_of = {c: name for name, cs in parts.items() for c in cs}
            seg: dict[str, list] = {"training": [], "validation": [], "test": []}
            cls: dict[str, list] = {"training": [], "validation": [], "test": []}
            for r in self.records:
                s = split_of[str(r["condition"])]
                img, lab = f"images/{r['name']}.nii.gz", f"labels/{r['name']}.nii.gz"
                seg[s].append(
                    {
                        "image": img,
                        "label": lab,
                        "infected": r["infected"],
                        "source": r["source"],
                        "lesion_removed": r["lesion_removed"],
                    }
                )
                cls[s].append(classifier_entry(seg[s][-1]))
            write_datalist(self.out / "datalist.json", seg)
            write_datalist(self.out / "datalist_cls.json", cls)
            write_json(
                self.out / "records.json", {"models": [str(p) for p in self.model_paths], "slices": self.records}
            )
        if self.volume_records:
            names = [r["name"] for r in self.volume_records]
            parts = (
                split_items(names, self._split_spec(len(names)), seed=self.seed)
                if len(names) > 1
                else {"training": names}
            )
            vol: dict[str, list] = {"training": [], "validation": [], "test": []}
            for split, members in parts.items():
                for n in members:
                    vol[split].append({"image": f"volumes/images/{n}.nii.gz", "label": f"volumes/labels/{n}.nii.gz"})
            write_datalist(self.out / "datalist_3d.json", vol)
        logger.info("wrote %d slices and %d volumes to %s", len(self.records), len(self.volume_records), self.out)
