"""Case I/O: read a CT image (+ label) from NIfTI, DICOM or PNG, validate it, and hold it in RAS; atomic writers.

Every user-input problem raises `CaseError(path, problem)` naming the file, never a bare reader exception.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np

from cosingan_monai.core.constants import WINDOW_HU
from cosingan_monai.core.errors import CaseError
from cosingan_monai.core.files import atomic_write_path

IntensityKind = Literal["hu", "windowed"]
LabelKind = Literal["lungs+infection", "infection-only"]

#: PNG slices carry no geometry: assume this voxel size (mm) unless `spacing=` says otherwise.
PNG_SPACING: tuple[float, float, float] = (0.75, 0.75, 5.0)
#: An image value beyond +-this is no CT intensity (HU or windowed): a corrupt voxel or a wrong scaling.
MAX_ABS_INTENSITY = 1e5
#: Image and label affines may differ by this much (mm) and still be the same grid (float32 header round-off).
AFFINE_ATOL_MM = 1e-2

LABEL_VALUES: dict[str, frozenset[int]] = {
    "lungs+infection": frozenset({0, 1, 2, 3}),
    "infection-only": frozenset({0, 1}),
}
LABEL_MEANING: dict[str, str] = {
    "lungs+infection": "0 background, 1 left lung, 2 right lung, 3 infection",
    "infection-only": "0 background, 1 infection; lungs found automatically",
}
NIFTI_SUFFIXES = (".nii.gz", ".nii")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
PNG_SUFFIXES = (".png",)
#: Radiological display (rows towards posterior, columns towards patient left) stacked along superior.
PNG_AXCODES: tuple[str, str, str] = ("P", "L", "S")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Case:
    """One CT case in memory: image (x, y, z) RAS float32 and optional raw label (x, y, z) uint8."""

    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    original_axcodes: tuple[str, ...]
    intensity_kind: IntensityKind
    label_kind: LabelKind | None
    image_path: Path
    label_path: Path | None
    spacing_source: Literal["header", "assumed", "override"] = "header"
    notes: list[str] = field(default_factory=list)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along x, y, z (column norms of the affine)."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (x, y, z)."""
        return tuple(int(s) for s in self.image.shape)  # type: ignore[return-value]

    def hu(self) -> np.ndarray:
        """The image in HU float32 whatever its intensity kind (HU images are returned as is: do not modify)."""
        if self.intensity_kind == "hu":
            return self.image
        return windowed_to_hu(self.image).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------------- conversions


def windowed_to_hu(x: Any) -> Any:
    """Map a windowed 0-255 intensity to HU (0 -> -1250, 255 -> 250, linear); works on scalars, arrays, tensors."""
    lo, hi = WINDOW_HU
    return x * ((hi - lo) / 255.0) + lo


def hu_to_windowed(x: Any) -> Any:
    """Map HU to the 0-255 display window (-1250 -> 0, 250 -> 255, linear, not clipped or rounded)."""
    lo, hi = WINDOW_HU
    return (x - lo) * (255.0 / (hi - lo))


def ras_to_display(slice2d: np.ndarray) -> np.ndarray:
    """A RAS (x, y) slice as a radiological display image (rows, cols): patient right on the left, anterior up."""
    arr = np.asarray(slice2d)
    if arr.ndim != 2:
        raise ValueError(f"ras_to_display expects a 2D (x, y) slice, got shape {arr.shape}")
    return np.ascontiguousarray(arr.T[::-1, ::-1])


def display_to_ras(png2d: np.ndarray) -> np.ndarray:
    """A radiological display image (rows, cols) as a RAS (x, y) slice; inverse of `ras_to_display`."""
    arr = np.asarray(png2d)
    if arr.ndim != 2:
        raise ValueError(f"display_to_ras expects a 2D (rows, cols) image, got shape {arr.shape}")
    return np.ascontiguousarray(arr[::-1, ::-1].T)


def slice_affine(affine: np.ndarray, z: int) -> np.ndarray:
    """The affine of axial slice z of a volume as its own (x, y, 1) image: same axes, origin moved to that slice."""
    out = np.array(affine, dtype=np.float64, copy=True)
    out[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, float(z)]) + affine[:3, 3]
    return out


# --------------------------------------------------------------------------------------------- atomic writes


def save_nifti(
    array: np.ndarray, affine: np.ndarray, path: str | os.PathLike[str], dtype: np.dtype | type | None = None
) -> Path:
    """Write `array` with `affine` as NIfTI (.nii or .nii.gz by name) atomically; returns the path."""
    final = Path(path)
    if not final.name.endswith(NIFTI_SUFFIXES):
        raise ValueError(f"{final}: a NIfTI file name must end in .nii or .nii.gz")
    data = np.asarray(array)
    if dtype is not None:
        data = data.astype(dtype)
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
    img.set_data_dtype(data.dtype)
    suffix = next(s for s in NIFTI_SUFFIXES if final.name.endswith(s))
    with atomic_write_path(final, keep_suffix=suffix) as tmp:  # name.tmp-<pid>.nii.gz: nib.save sees the format
        nib.save(img, tmp)
    return final


def save_png(display_uint8: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write a 2D uint8 display image (rows, cols) as grayscale PNG atomically; returns the path."""
    from PIL import Image

    arr = np.asarray(display_uint8)
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise ValueError(f"save_png expects a 2D uint8 array, got shape {arr.shape} dtype {arr.dtype}")
    final = Path(path)
    with atomic_write_path(final) as tmp:
        Image.fromarray(arr, mode="L").save(tmp, format="PNG")
    return final


# ------------------------------------------------------------------------------------------------- readers


@dataclass
class _Volume:
    """What a reader returns: data (x, y, z) in RAS, its RAS affine, and where the geometry came from."""

    data: np.ndarray
    affine: np.ndarray
    axcodes: tuple[str, ...]
    spacing_source: Literal["header", "assumed", "override"]


def _name_ext(path: Path) -> tuple[str, str]:
    """Split a file name into stem and (possibly double) extension, e.g. ("case", ".nii.gz")."""
    name = path.name
    for suffix in (*NIFTI_SUFFIXES, *DICOM_SUFFIXES, *ITK_SUFFIXES, *PNG_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    return path.stem, path.suffix


def _to_3d(data: np.ndarray, path: Path) -> np.ndarray:
    """Squeeze trailing singleton dims (4D with one volume) and lift 2D to (x, y, 1); reject anything else."""
    if data.ndim > 3:
        extra = data.shape[3:]
        if int(np.prod(extra)) != 1:
            raise CaseError(path, f"is {data.ndim}D with shape {data.shape}; expected one 2D or 3D volume")
        data = data.reshape(data.shape[:3])
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise CaseError(path, f"is {data.ndim}D with shape {data.shape}; expected a 2D slice or a 3D volume")
    if min(data.shape[:2]) < 2:
        raise CaseError(path, f"has shape {data.shape}; a CT slice needs at least 2 x 2 pixels in-plane")
    return data


def _canonical(data: np.ndarray, affine: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Reorient (data, affine) to the closest canonical RAS with nibabel; also return the original axcodes."""
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise CaseError(path, f"has a degenerate or non-finite affine:\n{np.array2string(affine, precision=4)}")
    axcodes = tuple(str(c) for c in nib.aff2axcodes(affine))
    if data.dtype == bool:
        data = data.astype(np.uint8)
    # Only the reoriented array and affine are used, never the header, so its dtype is just a placeholder that
    # stops nibabel refusing int64 arrays.
    canon = nib.as_closest_canonical(nib.Nifti1Image(data, affine, dtype=np.float32))
    return np.asanyarray(canon.dataobj), canon.affine.copy(), axcodes


def _read_nifti(path: Path, as_float: bool) -> _Volume:
    """Read a NIfTI file with nibabel (scaling applied; float32 for images, stored type for labels), reorient to RAS."""
    try:
        img = nib.load(str(path))
        data = img.get_fdata(dtype=np.float32) if as_float else np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # nibabel raises many types (ImageFileError, EOFError, zlib.error, OSError, ...)
        raise CaseError(path, f"cannot be read as NIfTI ({type(exc).__name__}: {exc})") from exc
    data, affine, axcodes = _canonical(_to_3d(data, path), affine, path)
    return _Volume(data, affine, axcodes, "header")


def _sitk_to_volume(image: Any, path: Path, slice_thickness: float | None) -> _Volume:
    """Convert a SimpleITK image (LPS world, (z, y, x) array) to RAS (x, y, z) data and affine."""
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(path, f"has {image.GetNumberOfComponentsPerPixel()} components per pixel: not a grayscale CT")
    dim = image.GetDimension()
    if dim not in (2, 3):
        raise CaseError(path, f"is {dim}D; expected a 2D slice or a 3D volume")
    data = sitk.GetArrayFromImage(sitk.Cast(image, sitk.sitkFloat32)).T  # (z, y, x) -> (x, y, z)
    lps = np.eye(4)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    lps[:dim, :dim] = direction @ np.diag(spacing)
    lps[:dim, 3] = image.GetOrigin()
    if dim == 3 and data.shape[2] == 1 and slice_thickness:
        lps[:3, 2] *= slice_thickness / spacing[2]  # a lone slice has no z spacing: ITK says 1, the header knows
    if dim == 2:
        lps[:3, 2] = np.cross(lps[:3, 0], lps[:3, 1])
        lps[:3, 2] *= (slice_thickness or 1.0) / np.linalg.norm(lps[:3, 2])
    data, affine, axcodes = _canonical(_to_3d(data, path), _LPS_TO_RAS @ lps, path)
    return _Volume(data, affine, axcodes, "header")


def _read_itk_file(path: Path) -> _Volume:
    """Read one DICOM (or NRRD/MHA) file with SimpleITK; DICOM rescale slope/intercept are applied by GDCM."""
    import SimpleITK as sitk

    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        thickness = None
        if reader.HasMetaDataKey("0018|0050"):
            with contextlib.suppress(ValueError):
                thickness = float(reader.GetMetaData("0018|0050").strip()) or None
        image = reader.Execute()
    except RuntimeError as exc:
        raise CaseError(path, f"cannot be read by SimpleITK ({_short_message(exc)})") from exc
    return _sitk_to_volume(image, path, thickness)


def _read_dicom_series(folder: Path) -> _Volume:
    """Read the single DICOM series in `folder` with SimpleITK's GDCM series reader."""
    import SimpleITK as sitk

    try:
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as exc:
        raise CaseError(folder, f"cannot be scanned for DICOM series ({_short_message(exc)})") from exc
    if not series:
        raise CaseError(folder, "holds no DICOM series and no PNG slices")
    if len(series) > 1:
        raise CaseError(folder, f"holds {len(series)} DICOM series ({', '.join(series)}); give a folder with one")
    try:
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])
        if len(files) == 1:  # a lone slice: the file reader also picks up its slice thickness
            return _read_itk_file(Path(files[0]))
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        image = reader.Execute()
    except RuntimeError as exc:
        raise CaseError(folder, f"DICOM series cannot be read ({_short_message(exc)})") from exc
    return _sitk_to_volume(image, folder, None)


def _short_message(exc: BaseException) -> str:
    """The last non-empty line of an exception message (ITK messages run to many lines; the last says what)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def _png_array(path: Path, role: Literal["image", "label"]) -> np.ndarray:
    """Read one PNG as a 2D display array: palette labels give indices, gray-valued RGB is accepted."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode == "P" and role == "label":
                return np.array(img)  # palette indices are the label values
            if mode in ("P", "PA"):
                img = img.convert("RGBA")
                mode = "RGBA"
            arr = np.array(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CaseError(path, f"cannot be read as PNG ({type(exc).__name__}: {exc})") from exc
    if mode in ("RGB", "RGBA", "LA"):
        arr = arr[..., :-1] if mode in ("RGBA", "LA") else arr
        if arr.ndim == 3 and arr.shape[-1] > 1 and not all(np.array_equal(arr[..., 0], arr[..., c]) for c in (1, 2)):
            raise CaseError(path, f"is a true-colour {mode} picture, not a grayscale CT {role}")
        arr = arr[..., 0]
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.ndim != 2:
        raise CaseError(path, f"PNG has unexpected shape {arr.shape} (mode {mode})")
    return arr


def _natural_key(name: str) -> list[Any]:
    """Sort key that orders slice_2 before slice_10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _read_png(path: Path, role: Literal["image", "label"]) -> _Volume:
    """Read a PNG slice, or a folder of PNG slices stacked along z, as RAS (x, y, z) with the assumed spacing."""
    files = [path]
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.suffix.lower() == ".png"), key=lambda p: _natural_key(p.name))
    slices = []
    for f in files:
        ras = display_to_ras(_png_array(f, role))
        if slices and ras.shape != slices[0].shape:
            raise CaseError(f, f"slice shape {ras.T.shape} differs from {files[0].name}'s {slices[0].T.shape}")
        slices.append(ras)
    data = np.stack(slices, axis=-1)
    return _Volume(data, np.diag([*PNG_SPACING, 1.0]), PNG_AXCODES, "assumed")


def _is_dicom_file(path: Path) -> bool:
    """True if the file has a DICOM suffix or the DICM magic at byte 128."""
    if path.name.lower().endswith(DICOM_SUFFIXES):
        return True
    with path.open("rb") as fh:
        fh.seek(128)
        return fh.read(4) == b"DICM"


def _read_any(path: Path, role: Literal["image", "label"]) -> _Volume:
    """Dispatch on the input's type (NIfTI, DICOM file/series, NRRD/MHA, PNG/PNG folder) and read it."""
    if not path.exists():
        raise CaseError(path, f"{role} does not exist")
    if path.is_dir():
        if any(p.suffix.lower() == ".png" for p in path.iterdir()):
            return _read_png(path, role)
        return _read_dicom_series(path)
    if path.stat().st_size == 0:
        raise CaseError(path, "file is empty (0 bytes)")
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return _read_nifti(path, as_float=role == "image")
    if name.endswith(PNG_SUFFIXES):
        return _read_png(path, role)
    if name.endswith(ITK_SUFFIXES) or _is_dicom_file(path):
        return _read_itk_file(path)
    raise CaseError(
        path, "unsupported format: give NIfTI (.nii/.nii.gz), DICOM (file or series folder), PNG (file or folder)"
    )


# ---------------------------------------------------------------------------------------------- validation


def _apply_spacing(vol: _Volume, spacing: Sequence[float] | None) -> None:
    """Rescale the affine's axes to `spacing` (mm) in place, e.g. for PNGs whose real pixel size is known."""
    if spacing is None:
        return
    if len(spacing) != 3 or any(not np.isfinite(s) or s <= 0 for s in spacing):
        raise ValueError(f"spacing must be three positive numbers (mm), got {spacing!r}")
    norms = np.linalg.norm(vol.affine[:3, :3], axis=0)
    vol.affine[:3, :3] = vol.affine[:3, :3] / norms * np.asarray(spacing, dtype=np.float64)
    vol.spacing_source = "override"


def detect_intensity(image: np.ndarray, path: Path) -> IntensityKind:
    """Tell HU from windowed 0-255: any value < -500 means HU; values within [0, 255] (max > 1) mean windowed."""
    lo, hi = float(image.min()), float(image.max())
    if lo < -500:
        return "hu"
    if lo >= 0 and hi <= 255 and hi > 1:
        return "windowed"
    raise CaseError(
        path,
        f"cannot tell whether intensities are HU or windowed 0-255 (range {lo:g}..{hi:g}); "
        "pass intensity='hu' or 'windowed' (--intensity)",
    )


def _show_values(values: Sequence[float], limit: int = 12) -> str:
    """Format a list of values for a message, eliding after `limit` of them."""
    shown = ", ".join(f"{v:g}" for v in list(values)[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}] ({len(values)} values)"


def detect_label_kind(values: Sequence[int], path: Path) -> LabelKind:
    """Values within {0,1} -> infection-only (MedSeg); within {0,1,2,3} -> lungs+infection; else CaseError."""
    present = set(int(v) for v in values)
    if present <= LABEL_VALUES["infection-only"]:
        return "infection-only"
    if present <= LABEL_VALUES["lungs+infection"]:
        return "lungs+infection"
    bad = sorted(present - LABEL_VALUES["lungs+infection"])
    raise CaseError(
        path,
        f"label values {_show_values(bad)} are outside both conventions "
        "(lungs+infection {0,1,2,3}, infection-only {0,1})",
    )


def _check_image(data: np.ndarray, path: Path) -> None:
    """Reject NaN/inf, constant images, implausible intensities (|value| > MAX_ABS_INTENSITY) and label maps."""
    finite = np.isfinite(data)
    if not finite.all():
        raise CaseError(path, f"image has {int((~finite).sum())} NaN/inf voxels")
    lo, hi = float(data.min()), float(data.max())
    if lo == hi:
        raise CaseError(path, f"image is constant (every voxel is {lo:g})")
    if max(-lo, hi) > MAX_ABS_INTENSITY:
        where = tuple(int(i) for i in np.unravel_index(int(np.argmax(np.abs(data))), data.shape))
        value = data[where]
        raise CaseError(
            path,
            f"implausible intensity {value:g} at voxel (x, y, z) = {where}: |HU| > {MAX_ABS_INTENSITY:g} is no CT "
            "value (HU images lie within about -1024..3071, windowed ones within 0-255)",
        )
    if lo >= 0 and (hi <= 3 or hi == 255):
        kept = (data == 0) | (data == 255) if hi == 255 else data == np.round(data)
        if kept.all():
            values = sorted(int(v) for v in np.unique(data))
            raise CaseError(
                path,
                f"looks like a label map, not a CT image (its only values are {values}); give the CT image as "
                "--case and this file as --label",
            )


def _label_uint8(data: np.ndarray, path: Path) -> np.ndarray:
    """Check the label holds finite non-negative integers < 256 and return it as uint8."""
    arr = np.asarray(data)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise CaseError(path, "label has NaN/inf values")
        if not np.array_equal(arr, np.round(arr)):
            raise CaseError(path, "label has non-integer values: is this an image rather than a label map?")
    elif arr.dtype.kind not in "iub":
        raise CaseError(path, f"label has unsupported data type {arr.dtype}")
    values = np.unique(arr)
    bad = values[(values < 0) | (values > 255)]
    if bad.size:
        raise CaseError(path, f"label values outside 0..255: {_show_values(bad.tolist())}")
    return arr.astype(np.uint8)


def _same_grid(img: _Volume, lab: _Volume, image_path: Path, label_path: Path) -> None:
    """The label must share the image's shape and affine (after both are reoriented to RAS)."""
    if img.data.shape != lab.data.shape:
        raise CaseError(label_path, f"label shape {lab.data.shape} differs from image shape {img.data.shape} (RAS)")
    diff = float(np.abs(img.affine - lab.affine).max())
    if diff > AFFINE_ATOL_MM:
        raise CaseError(
            label_path,
            f"label affine differs from the image's ({image_path.name}) by up to {diff:.4g} mm "
            f"(tolerance {AFFINE_ATOL_MM} mm):\nimage\n{np.array2string(img.affine, precision=4)}\n"
            f"label\n{np.array2string(lab.affine, precision=4)}",
        )


def _left_right_swapped(label: np.ndarray) -> bool:
    """True if label 1's mean x exceeds label 2's: in RAS the left lung (1) must have the lower x."""
    centres = []
    for value in (1, 2):
        profile = (label == value).sum(axis=(1, 2))
        if profile.sum() == 0:
            return False
        centres.append(float((profile * np.arange(profile.size)).sum() / profile.sum()))
    return centres[0] > centres[1]


def load_case(
    image: str | os.PathLike[str],
    label: str | os.PathLike[str] | None = None,
    *,
    intensity: Literal["auto", "hu", "windowed"] = "auto",
    label_kind: Literal["auto", "lungs+infection", "infection-only"] = "auto",
    spacing: Sequence[float] | None = None,
) -> Case:
    """Read, validate and reorient a CT case (image + optional label) to RAS; bad input raises CaseError."""
    image_path = Path(image)
    if intensity not in ("auto", "hu", "windowed"):
        raise ValueError(f"intensity must be 'auto', 'hu' or 'windowed', got {intensity!r}")
    if label_kind not in ("auto", "lungs+infection", "infection-only"):
        raise ValueError(f"label_kind must be 'auto', 'lungs+infection' or 'infection-only', got {label_kind!r}")

    img = _read_any(image_path, "image")
    _apply_spacing(img, spacing)
    data = np.asarray(img.data, dtype=np.float32)
    _check_image(data, image_path)
    kind: IntensityKind = detect_intensity(data, image_path) if intensity == "auto" else intensity
    if kind == "windowed" and (data.min() < 0 or data.max() > 255):
        raise CaseError(image_path, f"intensity='windowed' but values span {data.min():g}..{data.max():g}, not 0-255")

    notes: list[str] = []
    if img.spacing_source == "assumed":
        notes.append(f"PNG has no geometry: assumed spacing {PNG_SPACING} mm (override with spacing= / --spacing)")
    case = Case(data, None, img.affine, img.axcodes, kind, None, image_path, None, img.spacing_source, notes)
    if label is None:
        return case

    label_path = Path(label)
    lab = _read_any(label_path, "label")
    _apply_spacing(lab, spacing)
    _same_grid(img, lab, image_path, label_path)
    lab_data = _label_uint8(lab.data, label_path)
    values = np.unique(lab_data).tolist()
    lkind: LabelKind
    if label_kind == "auto":
        lkind = detect_label_kind(values, label_path)
    else:
        lkind = label_kind
        bad = sorted(set(values) - LABEL_VALUES[lkind])
        if bad:
            problem = f"label values {_show_values(bad)} are not allowed for {lkind} ({LABEL_MEANING[lkind]})"
            raise CaseError(label_path, problem)
    if lkind == "lungs+infection" and values == [0]:
        raise CaseError(label_path, "lung mask is empty: no voxel has label 1, 2 or 3")
    if values == [0]:
        notes.append("label is all background: treated as infection-only with no infection")
    if lkind == "lungs+infection" and _left_right_swapped(lab_data):
        notes.append(
            "label 1 (left lung) lies to the patient's right of label 2 (right lung): swapped labels, a wrong header "
            "orientation, or not a COVID-19-CT-Seg label map (MedSeg NIfTI masks use 1 ground-glass, 2 consolidation)"
        )
    case.label, case.label_kind, case.label_path = lab_data, lkind, label_path
    return case


# ---------------------------------------------------------------------------------------------- find_label

# (folder the image sits in, lower-case) -> sibling folders that may hold its label, in order of preference
_LABEL_DIRS: dict[str, tuple[str, ...]] = {
    "covid-19-ct-seg_20cases": ("Lung_and_Infection_Mask", "Infection_Mask"),
    "images": ("masks", "labels"),
    "imagestr": ("labelsTr",),
    "imagests": ("labelsTs",),
}
# MedSeg's NIfTI releases (tr_im/tr_mask, rp_im/rp_msk) are deliberately not matched: their masks use
# 1 ground-glass, 2 consolidation, 3 effusion, which would be misread as lungs+infection (see data/README.md).


def find_label(image_path: str | os.PathLike[str]) -> Path | None:
    """Find the label of an image in the COVID-19-CT-Seg, MedSeg PNG, MosMedData or imagesTr/labelsTr layouts."""
    path = Path(image_path)
    stem, ext = _name_ext(path)
    parent = path.parent
    candidates: list[Path] = []
    for sibling in _LABEL_DIRS.get(parent.name.lower(), ()):
        folder = parent.parent / sibling
        candidates.append(folder / path.name)
        if parent.name.lower().startswith("images") and re.search(r"_\d{4}$", stem):
            candidates.append(folder / f"{stem[:-5]}{ext}")  # nnU-Net channel suffix: case_0000 -> case
    for sibling in ("Lung_and_Infection_Mask", "Infection_Mask"):  # COVID-19-CT-Seg with a renamed image folder
        candidates.append(parent.parent / sibling / path.name)
    if path.is_dir() and path.name.lower() == "images":
        candidates.append(parent / "masks")  # a folder of PNG slices
    for ancestor in path.parents:  # MosMedData: studies/CT-1/study_0255.nii.gz -> masks/study_0255_mask.nii.gz
        if ancestor.name.lower() == "studies":
            candidates.append(ancestor.parent / "masks" / f"{stem}_mask{ext}")
            break
    resolved = path.resolve()
    for cand in candidates:
        if cand.exists() and cand.resolve() != resolved:
            return cand
    return None


def pair_with_labels(images: Sequence[Path], missing: str) -> list[tuple[Path, Path]]:
    """(image, label) for each image by `find_label`; CaseError naming the first image without one (`missing` says
    where its label was expected)."""
    pairs = []
    for image in images:
        label = find_label(image)
        if label is None:
            raise CaseError(image, missing)
        pairs.append((image, label))
    return pairs
