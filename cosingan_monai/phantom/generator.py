"""Synthetic chest CT phantom with COVID-19-CT-Seg labels: the project's embedded default data.

Why: the pipeline, tests and demo need a chest CT with lung/infection labels that ships with the code (the real
data sets have unknown or restrictive licences). `phantom_anatomy` paints a parametric chest in millimetres,
`phantom_trees` adds vessel and airway trees, `phantom_lesions` adds COVID-like lesions; this module adds the
scanner (partial-volume blur, correlated noise) and writes data sets. Every random choice comes from one
`np.random.default_rng(seed)`, so a seed always gives the same case.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from cosingan_monai.core.constants import INFECTION, LEFT_LUNG, RIGHT_LUNG
from cosingan_monai.data.io import save_nifti
from cosingan_monai.phantom.anatomy import (
    Grid,
    Scene,
    Tissue,
    mark_spine,
    paint_abdomen,
    paint_body_wall,
    paint_heart_and_mediastinum,
    paint_lungs,
    paint_spine,
    paint_table,
    sample_anatomy,
    smooth_field,
)
from cosingan_monai.phantom.lesions import add_lesions
from cosingan_monai.phantom.trees import paint_lumens, paint_trees

__all__ = ["PhantomCase", "Tissue", "make_phantom_case", "write_phantom_dataset"]

IMAGE_DIR, LABEL_DIR = "COVID-19-CT-Seg_20cases", "Lung_and_Infection_Mask"
LUNG_DIR, INFECTION_DIR = "Lung_Mask", "Infection_Mask"
BLUR_MM = 0.9  # in-plane Gaussian sigma of the scanner's point-spread (partial volume)


@dataclass
class PhantomCase:
    """One synthetic chest CT: HU image and label map in RAS (x, y, z), their affine, and how it was made."""

    image: np.ndarray  # float32 HU, (x, y, z)
    label: np.ndarray  # uint8: 0 background, 1 left lung, 2 right lung, 3 infection
    affine: np.ndarray  # 4x4 RAS, diagonal spacing
    healthy: bool
    seed: int
    tissue: np.ndarray | None = field(default=None, repr=False)  # uint8 `Tissue` map before blur/noise

    @property
    def infection_fraction(self) -> float:
        """Infected share of the lung volume (0 for a healthy case)."""
        lung = np.count_nonzero(self.label)
        return float(np.count_nonzero(self.label == INFECTION) / lung) if lung else 0.0


def make_phantom_case(seed: int, size: int = 256, slices: int = 48, healthy: bool = False) -> PhantomCase:
    """Synthesize one chest CT (HU) with lung/infection labels; deterministic for `seed`."""
    if size < 32:
        raise ValueError(f"phantom size must be at least 32 pixels, got {size}")
    if slices < 1:
        raise ValueError(f"phantom slices must be at least 1, got {slices}")
    rng = np.random.default_rng(seed)
    grid = Grid(size, slices)
    anatomy = sample_anatomy(rng)
    fields = {name: smooth_field(rng, grid, cell) for name, cell in (("shape", 14.0), ("ret", 5.0), ("tex", 2.6))}
    fields["med"] = smooth_field(rng, grid, 9.0)
    fields["fine"] = smooth_field(rng, grid, 3.0)
    scene = Scene(grid, anatomy, fields)
    paint_body_wall(scene)
    paint_abdomen(scene)
    mark_spine(scene)
    paint_heart_and_mediastinum(scene)
    paint_spine(scene)
    paint_lungs(scene)
    lumens = paint_trees(scene, rng)
    label = np.zeros(grid.shape, np.uint8)
    label[scene.masks["left"]] = LEFT_LUNG
    label[scene.masks["right"]] = RIGHT_LUNG
    if not healthy:
        label[add_lesions(scene, rng)] = INFECTION
    paint_lumens(scene, lumens)
    paint_table(scene)
    image = _scanner(scene.hu, grid, anatomy.noise_std, rng)
    return PhantomCase(image, label, grid.affine(), bool(healthy), int(seed), scene.tissue)


def _scanner(hu: np.ndarray, grid: Grid, noise_std: float, rng: np.random.Generator) -> np.ndarray:
    """Partial-volume blur plus slightly correlated Gaussian noise of `noise_std` HU, clipped to the CT range."""
    image = ndimage.gaussian_filter(hu, (BLUR_MM / grid.sp, BLUR_MM / grid.sp, 0.0))
    noise = ndimage.gaussian_filter(rng.standard_normal(grid.shape).astype(np.float32), (0.7, 0.7, 0.0))
    image += noise * (noise_std / (noise[::4, ::4, ::2].std() + 1e-6))  # subsampled std: same value, 30x faster
    return np.clip(image, -1024.0, 3071.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# dataset writer


def _is_healthy(index: int, healthy_fraction: float) -> bool:
    """Case `index` is healthy when it crosses a multiple of 1/healthy_fraction (stable when cases are added)."""
    return math.floor((index + 1) * healthy_fraction) > math.floor(index * healthy_fraction)


def write_phantom_dataset(
    out_dir: str | Path,
    cases: int,
    seed: int,
    size: int = 256,
    slices: int = 48,
    healthy_fraction: float = 0.2,
    on_case: Callable[[int, Path, Path, dict], None] | None = None,
    workers: int = 1,
) -> list[tuple[Path, Path]]:
    """Write `cases` phantoms in the COVID-19-CT-Seg layout (HU int16 images, uint8 masks); returns (image, label).

    Case i uses seed + i and is healthy when `_is_healthy(i, healthy_fraction)`, so adding cases never changes
    earlier ones; cases whose four files exist are kept (resume). `on_case(i, image, label, info)` reports each case,
    in case order. `workers` > 1 generates cases in that many processes: each case depends on its own seed only, so
    the files are the same as with one.
    """
    if cases < 0:
        raise ValueError(f"cases must be >= 0, got {cases}")
    if not 0.0 <= healthy_fraction <= 1.0:
        raise ValueError(f"healthy_fraction must be in [0, 1], got {healthy_fraction}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out_dir)
    dirs = {name: out / name for name in (IMAGE_DIR, LABEL_DIR, LUNG_DIR, INFECTION_DIR)}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    jobs = [
        _CaseJob(
            i,
            seed + i,
            size,
            slices,
            _is_healthy(i, healthy_fraction),
            {k: d / f"phantom_{i:03d}.nii.gz" for k, d in dirs.items()},
        )
        for i in range(cases)
    ]
    if workers > 1 and cases > 1:
        # spawn: fresh interpreters, safe whatever threads the parent runs (a progress bar, torch)
        with ProcessPoolExecutor(min(workers, cases), mp_context=multiprocessing.get_context("spawn")) as pool:
            infos = pool.map(_write_case, jobs)  # yields in case order as they finish
            return [_reported(job, info, on_case) for job, info in zip(jobs, infos, strict=True)]
    return [_reported(job, _write_case(job), on_case) for job in jobs]


@dataclass(frozen=True)
class _CaseJob:
    """One phantom case to write (or keep): its index, seed, size, health and its four file paths."""

    index: int
    seed: int
    size: int
    slices: int
    healthy: bool
    paths: dict[str, Path]


def _write_case(job: _CaseJob) -> dict:
    """Generate and write one case, or keep it when its four files exist; returns its report info."""
    img_path, lab_path = job.paths[IMAGE_DIR], job.paths[LABEL_DIR]
    info: dict = {"index": job.index, "seed": job.seed, "healthy": job.healthy}
    if all(p.is_file() for p in job.paths.values()):
        label = _load_label(lab_path)
        if label.shape != (job.size, job.size, job.slices):
            raise ValueError(
                f"{lab_path}: existing case has shape {label.shape}, not the requested "
                f"{(job.size, job.size, job.slices)}; write to another folder or delete it"
            )
        info["skipped"] = True
        info.update(_label_stats(label))
        return info
    case = make_phantom_case(job.seed, size=job.size, slices=job.slices, healthy=job.healthy)
    lung_mask = _lung_sides(case.label)
    hu16 = np.clip(np.rint(case.image), -32768, 32767).astype(np.int16)
    save_nifti(lung_mask.astype(np.uint8), case.affine, job.paths[LUNG_DIR], dtype=np.uint8)
    save_nifti((case.label == INFECTION).astype(np.uint8), case.affine, job.paths[INFECTION_DIR], dtype=np.uint8)
    save_nifti(hu16, case.affine, img_path, dtype=np.int16)
    save_nifti(case.label, case.affine, lab_path, dtype=np.uint8)  # written last: marks the case complete
    info["skipped"] = False
    info.update(_label_stats(case.label))
    return info


def _reported(job: _CaseJob, info: dict, on_case: Callable[[int, Path, Path, dict], None] | None) -> tuple[Path, Path]:
    """Report a written or kept case to `on_case`; returns its (image, label) paths."""
    image, label = job.paths[IMAGE_DIR], job.paths[LABEL_DIR]
    if on_case is not None:
        on_case(job.index, image, label, info)
    return image, label


def _lung_sides(label: np.ndarray) -> np.ndarray:
    """Lung_Mask values (1 left, 2 right) everywhere in the lungs, infection included (nearest lung side)."""
    inf = label == INFECTION
    lung = np.where(inf, 0, label)
    if not inf.any():
        return lung.astype(np.uint8)
    idx = ndimage.distance_transform_edt(lung == 0, return_distances=False, return_indices=True)
    filled = lung[tuple(idx)]
    return np.where(inf, filled, lung).astype(np.uint8)


def _load_label(path: Path) -> np.ndarray:
    """Read an existing label volume (to report on a kept case)."""
    import nibabel as nib

    return np.asarray(nib.load(str(path)).dataobj, dtype=np.uint8)


def _label_stats(label: np.ndarray) -> dict:
    """Shape and infected percentage of the lung, for the per-case report."""
    lung = int(np.count_nonzero(label))
    inf = int(np.count_nonzero(label == INFECTION))
    return {"shape": tuple(int(s) for s in label.shape), "infection_pct": 100.0 * inf / lung if lung else 0.0}
