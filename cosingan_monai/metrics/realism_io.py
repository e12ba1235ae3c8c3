"""Files for the realism metrics: read a real or synthetic slice set, wrap a trained segmenter, write the report.

A set is a folder with `images/` and `labels/` (or `masks/`) of NIfTI or PNG slices, or a MONAI datalist JSON.
Every case goes through `data.io.load_case` + `data.cases.label_map`, so PNG windowing, RAS orientation and
automatic lungs for infection-only masks are the same as everywhere else. Bad input raises CaseError naming the file.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from cosingan_monai.core.constants import INFECTION, PRESETS, WINDOW_HU
from cosingan_monai.core.errors import CaseError
from cosingan_monai.core.files import atomic_write_path, read_json, write_json
from cosingan_monai.data.cases import label_map
from cosingan_monai.data.io import NIFTI_SUFFIXES, PNG_SUFFIXES, load_case, pair_with_labels
from cosingan_monai.metrics.realism import (
    DEFAULT_SIZE,
    RealismReport,
    RealismSlice,
    analysis_slice,
    compare_sets,
    group_by_mask,
    resample_label,
)

IMAGE_SUFFIXES = NIFTI_SUFFIXES + PNG_SUFFIXES
#: The datalist `cosingan-monai sample` writes beside images/ and labels/; its entries record their condition.
SYNTHESIS_DATALIST = "datalist.json"


@dataclass
class SliceSet:
    """The slices of one set on the analysis grid, groups of indices sharing one mask, and how they were found."""

    slices: list[RealismSlice]
    groups: list[list[int]]
    grouped_by: str
    source: Path
    files: int = 0
    notes: list[str] = field(default_factory=list)


def _natural(path: Path) -> list[Any]:
    """Sort key: file names with their numbers compared as numbers (syn_2 before syn_10)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _is_image(path: Path) -> bool:
    """A NIfTI or PNG file name."""
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)


def folder_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(image, label) pairs of a folder with images/ and labels/ (or masks/) subfolders, matched by file name."""
    images = folder / "images"
    if not images.is_dir():
        raise CaseError(folder, "want images/ and labels/ (or masks/) subfolders of NIfTI or PNG slices, or a datalist")
    files = sorted((p for p in images.iterdir() if _is_image(p)), key=_natural)
    if not files:
        raise CaseError(images, "no NIfTI (.nii, .nii.gz) or PNG images in this folder")
    return pair_with_labels(files, "no label of the same name in labels/ or masks/")


def datalist_entries(path: Path) -> list[dict[str, Any]]:
    """Every entry (all splits) of a MONAI datalist JSON with image and label resolved against its folder, each
    image once."""
    doc = read_json(path)
    lists = [v for v in doc.values() if isinstance(v, list)] if isinstance(doc, dict) else [doc]
    entries: list[dict[str, Any]] = []
    seen: set[str] = set()
    for items in lists:
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not item.get("image") or not item.get("label"):
                raise CaseError(path, f"entry {i} {str(item)[:80]!r} lacks an image or a label")
            resolved = {k: (path.parent / v if k in ("image", "label") else v) for k, v in item.items()}
            # a training list repeats files to fill its steps (real share, cycled segmenter lists): one slice each,
            # else the copies would score as samples of one mask that do not differ (diversity 0)
            key = os.path.abspath(resolved["image"])
            if key not in seen:
                seen.add(key)
                entries.append(resolved)
    if not entries:
        raise CaseError(path, "no datalist entries (want {'training': [{'image': ..., 'label': ...}], ...})")
    return entries


def _sources(folder: Path) -> dict[Path, str]:
    """image path -> condition recorded by the sampler in FOLDER/datalist.json ({} when there is none)."""
    dl = folder / SYNTHESIS_DATALIST
    if not dl.is_file():
        return {}
    entries = datalist_entries(dl)
    return {Path(os.path.abspath(e["image"])): str(e["source"]) for e in entries if "source" in e}


def case_slices(image: Path, label: Path, size: int) -> list[RealismSlice]:
    """The axial slices holding lung of one case (all of a 2D one), on the size x size analysis grid."""
    case = load_case(image, label)
    hu, lab = case.hu(), label_map(case)
    if lab is None:  # load_case was given a label, so this cannot happen; kept for type narrowing
        raise CaseError(label, "no label map")
    spacing = case.spacing[:2]
    if hu.shape[2] == 1:
        return [analysis_slice(hu[:, :, 0], lab[:, :, 0], size, spacing, image.name)]
    keep = [z for z in range(hu.shape[2]) if (lab[:, :, z] > 0).any()]
    return [analysis_slice(hu[:, :, z], lab[:, :, z], size, spacing, f"{image.name}[z={z}]") for z in keep]


def load_slice_set(path: str | os.PathLike[str], size: int = DEFAULT_SIZE) -> SliceSet:
    """Read a set (images/+labels/ folder or datalist JSON) onto the analysis grid, grouping samples of one mask.

    Groups come from the `source` each entry of the sampler's datalist records; without it, from identical label
    maps. CaseError (naming the file) for a missing or empty folder, unreadable or mismatched files, or no lung.
    """
    root = Path(path)
    if not root.exists():
        raise CaseError(root, "does not exist")
    if root.is_dir():
        pairs = folder_pairs(root)
        sources = _sources(root)
    else:
        entries = datalist_entries(root)
        pairs = [(Path(e["image"]), Path(e["label"])) for e in entries]
        sources = {Path(os.path.abspath(e["image"])): str(e["source"]) for e in entries if "source" in e}
    slices: list[RealismSlice] = []
    keys: list[str] = []
    for image, label in pairs:
        found = case_slices(image, label, size)
        slices += found
        keys += [sources.get(Path(os.path.abspath(image)), "") for _ in found]
    if not any((s.label > 0).any() for s in slices):
        raise CaseError(root, "no lung (label 1, 2 or 3) in any slice")
    if sources and all(keys):
        groups: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            groups.setdefault(k, []).append(i)
        return SliceSet(slices, list(groups.values()), "datalist source", root, len(pairs))
    return SliceSet(slices, group_by_mask(slices), "identical label maps", root, len(pairs))


# ------------------------------------------------------------------------------------------------ segmenter


def _number(config: dict[str, Any], key: str, path: Path) -> float:
    """A plain number id of a bundle config, or CaseError naming the config."""
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CaseError(path, f"'{key}' is {value!r}, not a number")
    return float(value)


def _pad_or_crop(arr: np.ndarray, size: int) -> tuple[np.ndarray, tuple[slice, slice], tuple[slice, slice]]:
    """arr centred on a size x size canvas of zeros; returns canvas, its slices and the matching slices of arr."""
    canvas = np.zeros((size, size), arr.dtype)
    dst, src = [], []
    for n in arr.shape:
        if n <= size:
            a = (size - n) // 2
            dst.append(slice(a, a + n))
            src.append(slice(0, n))
        else:
            a = (n - size) // 2
            dst.append(slice(0, size))
            src.append(slice(a, a + size))
    d, s = (dst[0], dst[1]), (src[0], src[1])
    canvas[d] = arr[s]
    return canvas, d, s


class BundleSegmenter:
    """A trained covid_seg_2d bundle's models/model.ts as a callable (HU slice, spacing mm) -> COVID-19-CT-Seg labels.

    Preprocessing follows configs/inference.json: resample to fov_mm / image_size mm (bilinear), HU window
    [-1250, 250] -> [0, 1] clipped, centre pad (zeros) or crop to image_size; classes 0 bg, 1 lung, 2 infection map
    to labels 0, 1, 3. image_size is that of the preset recorded in logs/train_preset.txt (else inference.json's).
    """

    def __init__(self, bundle: str | os.PathLike[str]) -> None:
        import torch  # lazy: torch is needed only when a segmenter is asked for

        root = Path(bundle)
        if not root.is_dir():
            raise CaseError(root, "segmenter bundle folder does not exist")
        model_path = root / "models" / "model.ts"
        if not model_path.is_file():
            raise CaseError(model_path, "missing: a trained covid_seg_2d bundle holds its TorchScript export here")
        config_path = root / "configs" / "inference.json"
        config = read_json(config_path)
        if not isinstance(config, dict):
            raise CaseError(config_path, "not a bundle config (want a JSON object)")
        self.preset = "full"
        record = root / "logs" / "train_preset.txt"
        if record.is_file():
            self.preset = record.read_text(encoding="utf-8").strip() or "full"
        preset_path = root / "configs" / "presets" / f"{self.preset}.json"
        overrides = read_json(preset_path) if self.preset in PRESETS and preset_path.is_file() else {}
        self.image_size = int(_number({**config, **overrides}, "image_size", config_path))
        self.fov_mm = _number(config, "fov_mm", config_path)
        try:
            with warnings.catch_warnings():  # model.ts is the bundle's export format, deprecated or not
                warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
                self.model = torch.jit.load(str(model_path), map_location="cpu").eval()
        except Exception as exc:  # any TorchScript load failure is a bad file
            raise CaseError(
                model_path, f"not a loadable TorchScript model ({str(exc).splitlines()[0][:200]})"
            ) from None
        self.path = root
        self._torch = torch

    @property
    def note(self) -> str:
        """What was run, for the report."""
        return f"covid_seg_2d bundle {self.path} ({self.preset} preset, {self.image_size} px over {self.fov_mm:g} mm)"

    def __call__(self, hu: np.ndarray, spacing: tuple[float, float] | None = None) -> np.ndarray:
        """Label map (0, 1 lung, 3 infection) of an HU slice of the given pixel spacing (default: spans fov_mm)."""
        nx, ny = hu.shape
        sp = spacing or (self.fov_mm / nx, self.fov_mm / ny)
        pix = self.fov_mm / self.image_size
        shape = (max(1, round(nx * sp[0] / pix)), max(1, round(ny * sp[1] / pix)))
        img = ndi.zoom(np.asarray(hu, np.float64), (shape[0] / nx, shape[1] / ny), order=1, mode="nearest")
        lo, hi = WINDOW_HU
        x = np.clip((img - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
        canvas, dst, src = _pad_or_crop(x, self.image_size)
        with self._torch.no_grad():
            logits = self.model(self._torch.from_numpy(canvas)[None, None])
        classes = logits.argmax(1)[0].cpu().numpy().astype(np.uint8)
        pred = np.zeros(img.shape, np.uint8)
        pred[src] = classes[dst]
        out = resample_label(pred, (nx, ny))
        return np.where(out == 2, INFECTION, out).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------- report


def run_realism(
    real: str | os.PathLike[str],
    synthetic: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    size: int = DEFAULT_SIZE,
    segmenter: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> tuple[RealismReport, list[Path]]:
    """Compare a synthetic set with a real one; with `out`, write realism.json and realism.md there atomically."""
    seg = BundleSegmenter(segmenter) if segmenter else None
    rs = load_slice_set(real, size)
    ss = load_slice_set(synthetic, size)
    report = compare_sets(
        rs.slices,
        ss.slices,
        size=size,
        groups=ss.groups,
        segmenter=seg,
        segmenter_pass_spacing=True,
        segmenter_note=seg.note if seg else None,
        seed=seed,
    )
    report.settings.update(
        {
            "real": str(rs.source),
            "synthetic": str(ss.source),
            "real_files": rs.files,
            "synthetic_files": ss.files,
            "synthetic_groups": ss.grouped_by,
            "segmenter": str(segmenter) if segmenter else None,
        }
    )
    written: list[Path] = []
    if out is not None:
        folder = Path(out)
        written.append(write_json(folder / "realism.json", report.to_dict()))
        md = folder / "realism.md"
        with atomic_write_path(md) as tmp:
            tmp.write_text(report.to_markdown(), encoding="utf-8")
        written.append(md)
    return report, written


#: The few realism figures a pipeline or experiment table shows per synthetic set (the full report is beside it).
KEY_FIGURES: tuple[tuple[str, str], ...] = (
    ("summary_score", "summary"),
    ("lung_laplacian_ratio", "lung texture ratio"),
    ("lung_gradient_ratio", "lung gradient ratio"),
    ("body_gradient_ratio", "body gradient ratio"),
    ("lesion_mean_hu", "lesion HU"),
    ("lung_mean_hu", "healthy lung HU"),
    ("contrast_ratio", "lesion contrast ratio"),
    ("diversity_ratio", "diversity ratio"),
    ("segmenter_infection_dice", "real-trained segmenter infection Dice"),
)


def key_figures(report: RealismReport) -> dict[str, float | None]:
    """The KEY_FIGURES of one report, plus the real set's lesion and healthy-lung HU for reference."""
    lung, body, lesion = (report.regions.get(r) for r in ("healthy_lung", "body", "lesion"))
    return {
        "summary_score": report.summary_score,
        "lung_laplacian_ratio": lung.laplacian_ratio if lung else None,
        "lung_gradient_ratio": lung.gradient_ratio if lung else None,
        "body_gradient_ratio": body.gradient_ratio if body else None,
        "lesion_mean_hu": lesion.mean_hu_synthetic if lesion else None,
        "lung_mean_hu": lung.mean_hu_synthetic if lung else None,
        "contrast_ratio": report.contrast.ratio,
        "diversity_ratio": report.diversity.ratio,
        "segmenter_infection_dice": report.segmenter.infection_dice_synthetic,
        "real_lesion_mean_hu": lesion.mean_hu_real if lesion else None,
        "real_lung_mean_hu": lung.mean_hu_real if lung else None,
    }


def key_figures_markdown(rows: dict[str, dict[str, float | None]]) -> str:
    """A markdown table: one row per named synthetic set, the KEY_FIGURES as columns (HU rounded, ratios 2 places)."""

    def cell(key: str, value: float | None) -> str:
        if value is None or not np.isfinite(value):
            return "n/a"
        return f"{value:.0f}" if key.endswith("_hu") else f"{value:.3f}" if key == "summary_score" else f"{value:.2f}"

    head = "| set | " + " | ".join(title for _, title in KEY_FIGURES) + " |"
    lines = [head, "|" + "---|" * (len(KEY_FIGURES) + 1)]
    for name, figures in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(k, figures.get(k)) for k, _ in KEY_FIGURES) + " |")
    real = next(iter(rows.values()), {})
    if real.get("real_lesion_mean_hu") is not None or real.get("real_lung_mean_hu") is not None:
        lines += [
            "",
            f"Real set: lesion {cell('x_hu', real.get('real_lesion_mean_hu'))} HU, healthy lung "
            f"{cell('x_hu', real.get('real_lung_mean_hu'))} HU (docs/realism.md defines every column).",
        ]
    return "\n".join(lines)
