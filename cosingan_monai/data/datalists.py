"""MONAI datalists for the downstream bundles from real data folders, with deterministic train/val/test splits.

Two sources (CONVENTIONS.md): a COVID-19-CT-Seg folder of volumes (HU or 0-255 windowed, label maps 0-3), and a
folder of PNG slices with infection-only masks (MedSeg: images/*.png + masks/*.png), whose lungs are found
automatically. Outputs are NIfTI in HU with COVID-19-CT-Seg label maps, which is all the bundles ever read:
volumes for covid_seg_3d (`datalist_3d.json`), axial slices for covid_seg_2d (`datalist.json`, entries carry
`"infected"`) and for covid_slice_classifier (`datalist_cls.json`, `"label": 0|1`). Splits are made per case, so
slices of one patient never straddle training and test.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from cosingan_monai.core.constants import INFECTION
from cosingan_monai.core.errors import CaseError
from cosingan_monai.core.files import atomic_write_path
from cosingan_monai.data.cases import label_map
from cosingan_monai.data.io import (
    DICOM_SUFFIXES,
    NIFTI_SUFFIXES,
    load_case,
    pair_with_labels,
    save_nifti,
    slice_affine,
)

SPLITS: tuple[str, str, str] = ("training", "validation", "test")
#: image folders of the layouts `find_volume_pairs` understands, in the order they are tried.
IMAGE_DIRS: tuple[str, ...] = ("COVID-19-CT-Seg_20cases", "images", "imagesTr")
#: split sizes: fractions (summing to 1) or counts per split.
SplitSpec = Mapping[str, float] | Mapping[str, int]
DEFAULT_FRACTIONS: dict[str, float] = {"training": 0.6, "validation": 0.2, "test": 0.2}

Echo = Callable[[str], None]


@dataclass
class PreparedData:
    """What a prepare_* call wrote: the datalist files by name and the number of entries per split."""

    out_dir: Path
    datalists: dict[str, Path] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ splitting


def split_counts(n: int, spec: SplitSpec | None = None) -> dict[str, int]:
    """Turn fractions or counts into per-split counts summing to n; training, when asked for, gets at least one."""
    spec = dict(DEFAULT_FRACTIONS if spec is None else spec)
    unknown = set(spec) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split names {sorted(unknown)}; use {list(SPLITS)}")
    values = [spec.get(s, 0) for s in SPLITS]
    if any(v < 0 for v in values):
        raise ValueError(f"split sizes must be >= 0, got {spec}")
    if all(float(v).is_integer() for v in values) and sum(values) > 1:
        counts = [int(v) for v in values]
        if sum(counts) > n:
            raise ValueError(f"split counts {spec} need {sum(counts)} items but only {n} are available")
    else:
        total = float(sum(values))
        if total <= 0:
            raise ValueError(f"split fractions must not all be 0, got {spec}")
        # validation and test are rounded, training takes the rest, so no item is lost or duplicated
        counts = [0, *(int(round(n * v / total)) for v in values[1:])]
        counts[0] = n - counts[1] - counts[2]
    if n > 0 and spec.get("training", 0) > 0 and counts[0] < 1:
        raise ValueError(f"split {spec} leaves no training item out of {n}")
    return dict(zip(SPLITS, counts, strict=True))


def split_items(
    items: Sequence[str], spec: SplitSpec | None = None, seed: int = 0, strata: Mapping[str, Any] | None = None
) -> dict[str, list[str]]:
    """Deterministically shuffle sorted `items` with `seed` and cut them into training/validation/test.

    With `strata` (item -> group, e.g. infected or not) the groups are shuffled separately and interleaved, and
    test then validation are cut first, so small held-out splits still see every group. Not
    `monai.data.partition_dataset_classes`: it rounds each class's share on its own, so 4 cases (2 healthy) at
    0.6/0.2/0.2 leave validation and test empty, where this gives 2/1/1.
    """
    ordered = sorted(items)
    counts = split_counts(len(ordered), spec)
    rng = np.random.default_rng(seed)
    if strata is None:
        queue = [ordered[i] for i in rng.permutation(len(ordered))]
    else:
        groups: dict[Any, list[str]] = {}
        for item in ordered:
            groups.setdefault(strata[item], []).append(item)
        keys = sorted(groups, key=str)
        shuffled = [[groups[k][i] for i in rng.permutation(len(groups[k]))] for k in keys]
        queue = [g[i] for i in range(max(map(len, shuffled), default=0)) for g in shuffled if i < len(g)]
    out: dict[str, list[str]] = {}
    start = 0
    for name in ("test", "validation", "training"):
        out[name] = sorted(queue[start : start + counts[name]])
        start += counts[name]
    return {name: out[name] for name in SPLITS}


# --------------------------------------------------------------------------------------------- file helpers


def _rel(path: Path, base: Path) -> str:
    """`path` relative to the datalist folder when it lies inside it, else absolute (datalists stay movable)."""
    path, base = path.resolve(), base.resolve()
    return os.path.relpath(path, base) if base in path.parents else str(path)


def write_datalist(path: str | os.PathLike[str], splits: Mapping[str, list[dict[str, Any]]]) -> Path:
    """Write a MONAI datalist JSON ({"training": [...], ...}) atomically; returns its path."""
    final = Path(path)
    payload = {name: list(splits.get(name, [])) for name in SPLITS}
    payload.update({k: v for k, v in splits.items() if k not in payload})
    with atomic_write_path(final) as tmp:
        tmp.write_text(json.dumps(payload, indent=1) + "\n")
    return final


def classifier_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A segmentation datalist entry as a covid_slice_classifier one: image, slice label 0|1 and the label map as
    "mask" (the classifier trains on the infection mask: networks/slice_classifier.py). "source" and
    "lesion_removed" are kept where present, so a classifier list can be mirrored (the experiment's arm d); lists
    that mix entries give every entry both (MONAI's collate refuses a batch whose dictionaries differ)."""
    out = {"image": entry["image"], "label": int(entry["infected"]), "mask": entry["label"]}
    out.update({k: entry[k] for k in ("source", "lesion_removed") if k in entry})
    return out


def for_segmenter(entries: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The entries a segmenter trains on: all but lesion-free copies of infected masks ("lesion_removed").

    Why: the sampler adds such a copy for every infected mask, as negatives for the classifier, which puts half
    the synthetic slices without infection whatever the case's own mix; a 2D segmenter trained on that became
    conservative (demo: held-out infection recall 0.25, 0.37 without the copies; docs/results.md "Lesion-free
    copies and the 2D segmenter"). The classifier keeps them.
    """
    return [e for e in entries if not int(e.get("lesion_removed", 0))]


def mix_real_slices(
    datalist: str | os.PathLike[str], real: Sequence[Mapping[str, Any]], share: float, out_dir: str | os.PathLike[str]
) -> dict[str, Path]:
    """Synthetic training set + the real training slices, repeated to `share` of the result (the rest unchanged).

    Writes OUT_DIR/datalist.json (2D segmenter: without lesion-free copies, `for_segmenter`, cycled to the length of
    the classifier's list) and OUT_DIR/datalist_cls.json (classifier: every entry) with absolute paths; the
    validation split stays synthetic.
    `real` entries need "image" and "label" (a label map with values 0-3); share 0 adds none.
    Why: a synthetic arm that also sees the real slices with the same augmentation keeps what the real slice
    teaches (real texture, vessels are not lesions) and adds the GAN's variety (docs/design.md "Synthetic arm").
    """
    if not 0.0 <= share < 1.0:
        raise ValueError(f"real share must be in [0, 1); got {share}")
    source = Path(datalist)
    splits = json.loads(source.read_text(encoding="utf-8"))

    def absolute(e: Mapping[str, Any]) -> dict[str, Any]:
        return {**e, **{k: str((source.parent / e[k]).resolve()) for k in ("image", "label")}}

    reals = []
    for e in real:
        lab = np.asarray(nib.load(str(e["label"])).dataobj)
        reals.append(
            {
                "image": str(e["image"]),
                "label": str(e["label"]),
                "infected": int((lab == INFECTION).any()),
                "source": f"real {Path(e['image']).name}",
                "lesion_removed": 0,  # the same keys as the synthetic entries (MONAI's collate needs them)
            }
        )

    def with_reals(synthetic: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        n_real = 0 if not reals or share == 0 else max(len(reals), round(share * len(synthetic) / (1.0 - share)))
        return synthetic + [reals[i % len(reals)] for i in range(n_real)]

    training = [{"source": "", "lesion_removed": 0, **absolute(e)} for e in splits.get("training", [])]
    validation = [{"source": "", "lesion_removed": 0, **absolute(e)} for e in splits.get("validation", [])]
    cls_seg = {"training": with_reals(training), "validation": validation, "test": []}
    # the segmenter's list is cycled to the full list's length: the same optimiser steps per epoch as with the
    # copies (with half the steps the demo's 2D arm lost 0.08 Dice: docs/results.md "Lesion-free copies")
    seg_training = with_reals(for_segmenter(training))
    n_seg = len(cls_seg["training"]) if seg_training else 0
    seg = {
        "training": [seg_training[i % len(seg_training)] for i in range(n_seg)],
        "validation": for_segmenter(validation),
        "test": [],
    }
    cls = {k: [classifier_entry(e) for e in v] for k, v in cls_seg.items()}
    out = Path(out_dir)
    return {
        "datalist": write_datalist(out / "datalist.json", seg),
        "datalist_cls": write_datalist(out / "datalist_cls.json", cls),
    }


def _case_name(path: Path) -> str:
    """A file's name without its NIfTI/PNG suffix."""
    name = path.name
    for suffix in (*NIFTI_SUFFIXES, ".png"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _is_dicom_series(path: Path) -> bool:
    """A folder holding DICOM files (one series per case folder)."""
    return path.is_dir() and any(p.name.lower().endswith(DICOM_SUFFIXES) for p in path.iterdir())


def _series_label(series: Path) -> Path | None:
    """The NIfTI label of a DICOM series folder CASE: a label folder beside the image folder holding CASE.nii(.gz)."""
    for folder in ("Lung_and_Infection_Mask", "Infection_Mask", "labels", "labelsTr"):
        for suffix in NIFTI_SUFFIXES:
            candidate = series.parent.parent / folder / f"{series.name}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def find_volume_pairs(root: str | os.PathLike[str]) -> list[tuple[Path, Path]]:
    """(image, label) pairs of a COVID-19-CT-Seg style folder (also images/labels, imagesTr/labelsTr): NIfTI
    volumes, or DICOM series, one folder per case (IMAGE_DIR/CASE/*.dcm with Lung_and_Infection_Mask/CASE.nii.gz)."""
    base = Path(root)
    if not base.is_dir():
        raise CaseError(base, "dataset folder does not exist")
    for folder in IMAGE_DIRS:
        entries = sorted((base / folder).glob("*"))
        images = [p for p in entries if p.name.lower().endswith(NIFTI_SUFFIXES)]
        series = [p for p in entries if _is_dicom_series(p)]
        if not images and not series:
            continue
        pairs = pair_with_labels(images, "has no label: expected a file of the same name in Lung_and_Infection_Mask/")
        for folder_ in series:
            label = _series_label(folder_)
            if label is None:
                expected = f"Lung_and_Infection_Mask/{folder_.name}.nii.gz"
                raise CaseError(folder_, f"DICOM series has no label: expected {expected}")
            pairs.append((folder_, label))
        return sorted(pairs)
    raise CaseError(
        base,
        f"no NIfTI volumes or DICOM series found in any of {', '.join(IMAGE_DIRS)}/ (COVID-19-CT-Seg layout expected)",
    )


def find_png_pairs(root: str | os.PathLike[str]) -> list[tuple[Path, Path]]:
    """(image, mask) pairs of a MedSeg-style folder: images/*.png with same-named masks/*.png."""
    base = Path(root)
    images = sorted((base / "images").glob("*.png"))
    if not images:
        raise CaseError(base, "no PNG slices in images/ (expected images/*.png and masks/*.png)")
    pairs = []
    for image in images:
        mask = base / "masks" / image.name
        if not mask.is_file():
            raise CaseError(image, f"has no mask: {mask} is missing")
        pairs.append((image, mask))
    return pairs


def prepare_volumes(
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    split: SplitSpec | None = None,
    seed: int = 0,
    echo: Echo | None = None,
) -> PreparedData:
    """Write OUT/datalist_3d.json for a COVID-19-CT-Seg folder, split per case.

    HU volumes with 0-3 label maps are referenced in place; windowed (0-255) images or infection-only labels are
    converted to HU / 0-3 NIfTI under OUT/volumes/ first, since the bundles read HU and COVID-19-CT-Seg labels only.
    """
    out = Path(out_dir)
    per_case: dict[str, dict[str, Any]] = {}
    for image, label in find_volume_pairs(root):
        case_name = _case_name(image)
        case = load_case(image, label)
        lab = label_map(case)
        # the bundles read HU NIfTI with 0-3 labels: anything else (windowed, infection-only, DICOM) is converted
        if case.intensity_kind != "hu" or case.label_kind != "lungs+infection" or image.is_dir():
            image = save_nifti(case.hu(), case.affine, out / "volumes" / "images" / f"{case_name}.nii.gz")
            label = save_nifti(lab, case.affine, out / "volumes" / "labels" / f"{case_name}.nii.gz", np.uint8)
        per_case[case_name] = {
            "image": _rel(image, out),
            "label": _rel(label, out),
            "infected": int((lab == INFECTION).any()),
        }
        if echo:
            echo(f"{case_name}: {'converted' if str(image).startswith(str(out)) else 'referenced'}")
    splits = split_items(list(per_case), split, seed, strata={k: v["infected"] for k, v in per_case.items()})
    entries = {name: [per_case[c] for c in splits[name]] for name in SPLITS}
    result = PreparedData(out)
    result.datalists["datalist_3d"] = write_datalist(out / "datalist_3d.json", entries)
    result.counts["datalist_3d"] = {s: len(v) for s, v in entries.items()}
    return result


# ------------------------------------------------------------------------------------------------- slices


def _keep_slice(label2d: np.ndarray, min_lung_fraction: float) -> bool:
    """A slice is used when its lungs (labels 1-3) cover at least `min_lung_fraction` of it."""
    return float(np.count_nonzero(label2d)) >= min_lung_fraction * label2d.size


def _write_slice(
    out: Path, stem: str, hu2d: np.ndarray, label2d: np.ndarray, affine: np.ndarray, min_px: int
) -> dict[str, Any]:
    """Save one HU slice and its label as 2D NIfTI; returns its seg datalist entry."""
    image = save_nifti(hu2d.astype(np.float32), affine, out / "slices" / "images" / f"{stem}.nii.gz")
    label = save_nifti(label2d.astype(np.uint8), affine, out / "slices" / "labels" / f"{stem}.nii.gz", np.uint8)
    n_inf = int(np.count_nonzero(label2d == INFECTION))
    infected = int(n_inf >= max(min_px, 1))
    return {"image": _rel(image, out), "label": _rel(label, out), "infected": infected, "ambiguous": 0 < n_inf < min_px}


def _write_slice_datalists(
    out: Path, entries: dict[str, list[dict[str, Any]]], result: PreparedData, drop_ambiguous: bool = False
) -> None:
    """Write datalist.json (image/label/infected) and datalist_cls.json (image + label 0|1) for `entries`.

    With `drop_ambiguous`, slices holding some infection but less than the positive threshold are left out of
    the classifier list (they stay in the segmentation list).
    """
    cls = {s: [classifier_entry(e) for e in v if not (drop_ambiguous and e["ambiguous"])] for s, v in entries.items()}
    seg = {s: [{k: e[k] for k in ("image", "label", "infected")} for e in v] for s, v in entries.items()}
    result.datalists["datalist"] = write_datalist(out / "datalist.json", seg)
    result.datalists["datalist_cls"] = write_datalist(out / "datalist_cls.json", cls)
    result.counts["datalist"] = {s: len(v) for s, v in entries.items()}
    result.counts["datalist_cls"] = {s: len(v) for s, v in cls.items()}
    result.counts["datalist_cls_positive"] = {s: sum(e["label"] for e in v) for s, v in cls.items()}


def prepare_slices(
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    split: SplitSpec | None = None,
    seed: int = 0,
    min_lung_fraction: float = 0.01,
    min_infection_px: int = 1,
    stride: int = 1,
    drop_ambiguous: bool = False,
    echo: Echo | None = None,
) -> PreparedData:
    """Extract the lung-bearing axial slices of a COVID-19-CT-Seg folder as 2D HU NIfTI; split per case.

    Writes OUT/slices/{images,labels}/<case>_z###.nii.gz, OUT/datalist.json and OUT/datalist_cls.json. A slice is
    infected when it holds at least `min_infection_px` infection pixels (`drop_ambiguous` leaves slices with fewer
    but some out of the classifier list); every `stride`-th slice is used.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    out, min_px = Path(out_dir), min_infection_px
    per_case: dict[str, list[dict[str, Any]]] = {}
    infected: dict[str, int] = {}
    for image, label in find_volume_pairs(root):
        case_name = _case_name(image)
        case = load_case(image, label)
        hu, lab = case.hu(), label_map(case)
        per_case[case_name] = [
            _write_slice(out, f"{case_name}_z{z:03d}", hu[..., z], lab[..., z], slice_affine(case.affine, z), min_px)
            for z in range(0, hu.shape[2], stride)
            if _keep_slice(lab[..., z], min_lung_fraction)
        ]
        infected[case_name] = int((lab == INFECTION).any())
        if echo:
            echo(f"{case_name}: {len(per_case[case_name])} slices")
    splits = split_items(list(per_case), split, seed, strata=infected)
    entries = {name: [e for c in splits[name] for e in per_case[c]] for name in SPLITS}
    result = PreparedData(out)
    _write_slice_datalists(out, entries, result, drop_ambiguous)
    return result


def prepare_png_slices(
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    split: SplitSpec | None = None,
    seed: int = 0,
    min_infection_px: int = 1,
    echo: Echo | None = None,
) -> PreparedData:
    """Convert a MedSeg-style PNG folder to 2D HU NIfTI slices with 0-3 labels (automatic lungs); split per slice.

    Images are 0-255 windowed and become HU (io.windowed_to_hu); masks are infection-only and become label 3 on
    top of `lungmask.auto_lung_mask`. Writes OUT/slices/..., OUT/datalist.json and OUT/datalist_cls.json.
    """
    out = Path(out_dir)
    per_slice: dict[str, dict[str, Any]] = {}
    for image, mask in find_png_pairs(root):
        stem = _case_name(image)
        case = load_case(image, mask, label_kind="infection-only")
        hu, lab = case.hu(), label_map(case)
        if lab is None or hu.shape[2] != 1:
            raise CaseError(image, f"expected one slice with a mask, got shape {hu.shape}")
        per_slice[stem] = _write_slice(out, stem, hu[:, :, 0], lab[:, :, 0], case.affine, min_infection_px)
        if echo:
            echo(f"{stem}: {int(np.count_nonzero(lab == INFECTION))} infection px")
    splits = split_items(list(per_slice), split, seed, strata={k: v["infected"] for k, v in per_slice.items()})
    entries = {name: [per_slice[s] for s in splits[name]] for name in SPLITS}
    result = PreparedData(out)
    _write_slice_datalists(out, entries, result)
    return result


def prepare_any(
    source: str | os.PathLike[str], out_dir: str | os.PathLike[str], dims: int = 2, **kwargs: Any
) -> PreparedData:
    """Datalists from whatever `source` is: a PNG slice folder (2D only) or a COVID-19-CT-Seg folder (2D or 3D)."""
    base = Path(source)
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    if (base / "images").is_dir() and any((base / "images").glob("*.png")):
        if dims == 3:
            raise CaseError(base, "PNG slices cannot train a 3D model: give a folder of NIfTI volumes")
        kwargs.pop("min_lung_fraction", None)
        kwargs.pop("stride", None)
        return prepare_png_slices(base, out_dir, **kwargs)
    if dims == 3:
        kwargs = {k: v for k, v in kwargs.items() if k in ("split", "seed", "echo")}
        return prepare_volumes(base, out_dir, **kwargs)
    return prepare_slices(base, out_dir, **kwargs)


def parse_split(text: str) -> dict[str, float]:
    """`--split 0.6,0.2,0.2` (training, validation, test fractions or counts) as a split spec."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise ValueError(f"split needs three comma-separated values (training,validation,test), got {text!r}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"split values must be numbers, got {text!r}") from None
    return dict(zip(SPLITS, values, strict=True))


def write_datalist_file(
    source: str | os.PathLike[str],
    out_file: str | os.PathLike[str],
    dims: int = 2,
    split: SplitSpec | None = None,
    seed: int = 0,
    echo: Echo | None = None,
) -> PreparedData:
    """`cosingan-monai datalist`: the datalist of `source` (COVID-19-CT-Seg NIfTI or DICOM series, MedSeg PNG) at
    OUT_FILE, converted slices/volumes beside it; 2D also writes the classifier list OUT_FILE-stem`_cls.json`.

    Entries are relative to OUT_FILE's folder when they lie inside it, so the folder can be moved as a whole.
    """
    out = Path(out_file)
    if out.suffix != ".json":
        raise CaseError(out, "the datalist file must end in .json")
    prepared = prepare_any(source, out.parent, dims=dims, split=split, seed=seed, echo=echo)
    renamed = PreparedData(out.parent, counts=prepared.counts)
    cls_file = out.with_name(f"{out.stem}_cls.json")
    wanted = {"datalist_3d": out} if dims == 3 else {"datalist": out, "datalist_cls": cls_file}
    for name, target in wanted.items():
        if prepared.datalists[name] != target:
            os.replace(prepared.datalists[name], target)
        renamed.datalists[name] = target
    return renamed
