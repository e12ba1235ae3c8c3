"""Case I/O: round trips through NIfTI/DICOM/PNG in RAS, validation errors, detection, find_label, atomic writes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from cosingan_monai.core.errors import CaseError
from cosingan_monai.data import io
from cosingan_monai.data.cases import label_map, summarize
from cosingan_monai.data.io import find_label, load_case

# ------------------------------------------------------------------------------------------------ helpers


def hu_volume(shape: tuple[int, ...] = (12, 10, 4), seed: int = 0) -> np.ndarray:
    """Integer-valued HU noise with air, so intensity detection says HU."""
    return np.random.default_rng(seed).integers(-1024, 1500, shape).astype(np.int16)


def lung_label(shape: tuple[int, int, int] = (12, 10, 4)) -> np.ndarray:
    """Left lung (1) at low x, right lung (2) at high x, infection (3) inside the right lung on slices 1-2."""
    lab = np.zeros(shape, np.uint8)
    lab[1:5, 2:8, :] = 1  # 4*6*4 = 96 voxels
    lab[7:11, 2:8, :] = 2  # 96 voxels
    lab[8:10, 3:5, 1:3] = 3  # 2*2*2 = 8 voxels
    return lab


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write a NIfTI with nibabel directly (not through the code under test)."""
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    img.set_data_dtype(data.dtype)
    nib.save(img, str(path))
    return path


def write_dicom_series(folder: Path, lps_xyz: np.ndarray, spacing: tuple[float, float, float]) -> Path:
    """Write an int16 volume (x, y, z in LPS index order) as a one-file-per-slice CT DICOM series with SimpleITK."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    vol = sitk.GetImageFromArray(np.ascontiguousarray(lps_xyz.T).astype(np.int16))
    vol.SetSpacing(spacing)
    vol.SetOrigin((10.0, -20.0, 30.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.77"
    for k in range(vol.GetDepth()):
        sl = vol[:, :, k]
        tags = {
            "0008|0060": "CT",
            "0020|000d": f"{uid}.1",
            "0020|000e": f"{uid}.2",
            "0008|0018": f"{uid}.3.{k + 1}",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:g}" for v in vol.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0018|0050": f"{spacing[2]:g}",
            "0028|1052": "0",
            "0028|1053": "1",
        }
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IM{k:03d}.dcm"))
        writer.Execute(sl)
    return folder


def palette_png(path: Path, indices: np.ndarray) -> Path:
    """Write a palette (mode P) PNG whose indices are the label values, like MedSeg masks."""
    img = Image.fromarray(indices.astype(np.uint8), mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 12))
    img.save(path)
    return path


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ round trips


def test_nifti_non_ras_is_reoriented_and_values_kept(tmp_path: Path) -> None:
    """An LPS-stored volume comes back as RAS with the array flipped on x and y and the spacing intact."""
    data = hu_volume()
    lab = lung_label()
    affine = np.diag([-0.7, -0.8, 2.5, 1.0])
    affine[:3, 3] = [5.0, 6.0, -7.0]
    img_p = write_nifti(tmp_path / "ct.nii.gz", data, affine)
    # the label is stored in RAS already: same physical grid, different storage order
    lab_ras = lab[::-1, ::-1, :].copy()
    ras_affine = nib.as_closest_canonical(nib.Nifti1Image(data, affine)).affine
    lab_p = write_nifti(tmp_path / "lab.nii.gz", lab_ras, ras_affine)

    case = load_case(img_p, lab_p)
    assert case.original_axcodes == ("L", "P", "S")
    assert case.image.dtype == np.float32 and case.label.dtype == np.uint8
    np.testing.assert_array_equal(case.image, data[::-1, ::-1, :].astype(np.float32))
    np.testing.assert_array_equal(case.label, lab_ras)
    assert case.spacing == pytest.approx((0.7, 0.8, 2.5))
    assert nib.aff2axcodes(case.affine) == ("R", "A", "S")
    # the world position of voxel (0,0,0) is preserved by the reorientation
    corner_world = affine @ np.array([data.shape[0] - 1, data.shape[1] - 1, 0, 1])
    np.testing.assert_allclose(case.affine[:, 3], corner_world)
    assert case.intensity_kind == "hu" and case.label_kind == "lungs+infection"


def test_nifti_2d_and_singleton_4d_become_xyz1(tmp_path: Path) -> None:
    """A 2D NIfTI and a 4D NIfTI holding one volume both load as (x, y, 1) / (x, y, z)."""
    d2 = hu_volume((12, 10))
    case = load_case(write_nifti(tmp_path / "s.nii", d2))
    assert case.shape == (12, 10, 1)
    np.testing.assert_array_equal(case.image[:, :, 0], d2)
    d4 = hu_volume((12, 10, 3, 1))
    assert load_case(write_nifti(tmp_path / "v.nii.gz", d4)).shape == (12, 10, 3)


def test_dicom_series_hu_spacing_and_orientation(tmp_path: Path) -> None:
    """A SimpleITK-written DICOM series reads back in HU with its spacing, LPS storage reported, RAS in memory."""
    lps = hu_volume((12, 10, 5), seed=3)
    folder = write_dicom_series(tmp_path / "series", lps, (0.7, 0.8, 2.5))
    case = load_case(folder)
    assert case.original_axcodes == ("L", "P", "S")
    assert case.spacing == pytest.approx((0.7, 0.8, 2.5))
    np.testing.assert_array_equal(case.image, lps[::-1, ::-1, :].astype(np.float32))
    assert case.intensity_kind == "hu"
    # LPS origin (10, -20, 30) is RAS (-10, 20, 30) at the old voxel (0,0,0), now at (nx-1, ny-1, 0)
    world = case.affine @ np.array([11, 9, 0, 1])
    np.testing.assert_allclose(world[:3], [-10.0, 20.0, 30.0], atol=1e-4)


def test_single_dicom_file_takes_slice_thickness(tmp_path: Path) -> None:
    """One DICOM slice file loads as (x, y, 1) with z spacing from SliceThickness, not ITK's default 1."""
    folder = write_dicom_series(tmp_path / "one", hu_volume((12, 10, 1), seed=4), (0.6, 0.6, 5.0))
    case = load_case(next(folder.iterdir()))
    assert case.shape == (12, 10, 1)
    assert case.spacing == pytest.approx((0.6, 0.6, 5.0))


def test_png_slice_orientation_round_trip(tmp_path: Path) -> None:
    """A RAS slice saved through ras_to_display/save_png loads back identical, with the assumed spacing."""
    ras = np.random.default_rng(1).integers(0, 256, (12, 10)).astype(np.uint8)
    path = io.save_png(io.ras_to_display(ras), tmp_path / "slice.png")
    assert np.array(Image.open(path)).shape == (10, 12)  # rows = y, cols = x
    case = load_case(path)
    assert case.shape == (12, 10, 1)
    np.testing.assert_array_equal(case.image[:, :, 0], ras.astype(np.float32))
    assert case.intensity_kind == "windowed"
    assert case.spacing == pytest.approx(io.PNG_SPACING) and case.spacing_source == "assumed"
    assert case.original_axcodes == ("P", "L", "S")
    assert any("assumed spacing" in n for n in case.notes)
    assert load_case(path, spacing=(0.5, 0.5, 1.0)).spacing == pytest.approx((0.5, 0.5, 1.0))


def test_display_convention_left_lung_on_image_right_anterior_up() -> None:
    """Patient left (low x) shows on the image's right; anterior (high y) shows at the top."""
    ras = np.zeros((6, 4), np.uint8)
    ras[0, 3] = 1  # x=0: the patient's left-most column (RAS x grows to the right); y=3: most anterior
    disp = io.ras_to_display(ras)
    assert disp.shape == (4, 6)
    assert disp[0, 5] == 1  # top row (anterior), right-most column (patient left)
    np.testing.assert_array_equal(io.display_to_ras(disp), ras)


def test_png_folder_natural_order_and_palette_label(tmp_path: Path) -> None:
    """PNG folders stack slices along z in natural order; palette labels give their indices."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    slices = [np.full((12, 10), 40 * (k + 1), np.uint8) for k in range(3)]
    for s in slices:
        s[0, 0] = 255  # not constant
    for k, name in enumerate(["s_1.png", "s_2.png", "s_10.png"]):
        io.save_png(io.ras_to_display(slices[k]), images / name)
        lab = np.zeros((12, 10), np.uint8)
        lab[2 + k, 3] = 1
        palette_png(masks / name, io.ras_to_display(lab))
    case = load_case(images, masks)
    assert case.shape == (12, 10, 3)
    assert [float(case.image[5, 5, k]) for k in range(3)] == [40.0, 80.0, 120.0]
    assert case.label_kind == "infection-only"
    assert [tuple(np.argwhere(case.label[:, :, k])[0]) for k in range(3)] == [(2, 3), (3, 3), (4, 3)]


def test_gray_rgb_png_accepted(tmp_path: Path) -> None:
    """An RGB PNG whose channels are equal is a grayscale CT and loads as its gray values."""
    gray = np.random.default_rng(2).integers(0, 256, (10, 12)).astype(np.uint8)
    Image.fromarray(np.stack([gray] * 3, axis=-1), mode="RGB").save(tmp_path / "g.png")
    case = load_case(tmp_path / "g.png")
    np.testing.assert_array_equal(case.image[:, :, 0], io.display_to_ras(gray).astype(np.float32))


# ------------------------------------------------------------------------------------------------ bad inputs


def _good(tmp: Path, name: str = "ct.nii.gz", shape: tuple[int, int, int] = (12, 10, 4)) -> Path:
    return write_nifti(tmp / name, hu_volume(shape))


def _truncated(tmp: Path) -> tuple[Path, None]:
    p = _good(tmp)
    blob = p.read_bytes()
    p.write_bytes(blob[: len(blob) // 2])
    return p, None


def _random(tmp: Path, name: str) -> tuple[Path, None]:
    p = tmp / name
    p.write_bytes(np.random.default_rng(0).bytes(2000))
    return p, None


def _image_only(tmp: Path, data: np.ndarray, name: str = "ct.nii.gz") -> tuple[Path, None]:
    return write_nifti(tmp / name, data), None


def _with_label(tmp: Path, lab: np.ndarray, affine: np.ndarray | None = None) -> tuple[Path, Path]:
    return _good(tmp), write_nifti(tmp / "lab.nii.gz", lab, affine)


def _nan(tmp: Path) -> tuple[Path, None]:
    d = hu_volume().astype(np.float32)
    d[3, 3, 1] = np.nan
    return _image_only(tmp, d)


def _rgb(tmp: Path) -> tuple[Path, None]:
    rgb = np.random.default_rng(0).integers(0, 256, (10, 12, 3)).astype(np.uint8)
    Image.fromarray(rgb, mode="RGB").save(tmp / "photo.png")
    return tmp / "photo.png", None


def _png_folder_mixed(tmp: Path) -> tuple[Path, None]:
    (tmp / "pngs").mkdir()
    io.save_png(np.full((10, 12), 50, np.uint8), tmp / "pngs" / "a.png")
    io.save_png(np.full((11, 12), 60, np.uint8), tmp / "pngs" / "b.png")
    return tmp / "pngs", None


def _empty_dir(tmp: Path) -> tuple[Path, None]:
    (tmp / "nothing").mkdir()
    return tmp / "nothing", None


def _shifted_affine() -> np.ndarray:
    aff = np.eye(4)
    aff[0, 3] = 1.0
    return aff


BAD_CASES: dict[str, tuple[Callable[[Path], tuple[Path, Path | None]], dict, str, str]] = {
    # name: (builder, load_case kwargs, which file the error must name, substring of the problem)
    "missing": (lambda t: (t / "nope.nii.gz", None), {}, "image", "does not exist"),
    "empty-file": (lambda t: ((t / "e.nii.gz").touch() or t / "e.nii.gz", None), {}, "image", "empty (0 bytes)"),
    "truncated-nifti": (_truncated, {}, "image", "cannot be read as NIfTI"),
    "random-nifti": (lambda t: _random(t, "r.nii.gz"), {}, "image", "cannot be read as NIfTI"),
    "random-png": (lambda t: _random(t, "r.png"), {}, "image", "cannot be read as PNG"),
    "random-dicom": (lambda t: _random(t, "r.dcm"), {}, "image", "cannot be read by SimpleITK"),
    "unsupported": (lambda t: _random(t, "r.txt"), {}, "image", "unsupported format"),
    "4d-two-volumes": (lambda t: _image_only(t, hu_volume((12, 10, 4, 2))), {}, "image", "4D"),
    "1d": (lambda t: _image_only(t, hu_volume((50,))), {}, "image", "1D"),
    "nan": (_nan, {}, "image", "NaN/inf"),
    "constant": (lambda t: _image_only(t, np.full((12, 10, 4), -1000, np.int16)), {}, "image", "constant"),
    "ambiguous-intensity": (
        lambda t: _image_only(t, np.random.default_rng(0).random((12, 10, 4)).astype(np.float32)),
        {},
        "image",
        "cannot tell whether intensities are HU or windowed",
    ),
    "windowed-override-out-of-range": (lambda t: (_good(t), None), {"intensity": "windowed"}, "image", "not 0-255"),
    "true-colour-png": (_rgb, {}, "image", "not a grayscale CT"),
    "png-folder-mixed-shapes": (_png_folder_mixed, {}, "label_or_b", "differs"),
    "empty-folder": (_empty_dir, {}, "image", "no DICOM series and no PNG slices"),
    "shape-mismatch": (lambda t: _with_label(t, lung_label((12, 10, 5))), {}, "label", "differs from image shape"),
    "affine-mismatch": (lambda t: _with_label(t, lung_label(), _shifted_affine()), {}, "label", "affine differs"),
    "label-bad-values": (lambda t: _with_label(t, lung_label() * 2), {}, "label", "[4, 6]"),
    "label-non-integer": (
        lambda t: _with_label(t, lung_label().astype(np.float32) * 0.5),
        {},
        "label",
        "non-integer",
    ),
    "infection-only-with-2": (
        lambda t: _with_label(t, lung_label()),
        {"label_kind": "infection-only"},
        "label",
        "[2, 3]",
    ),
    "empty-lungs": (
        lambda t: _with_label(t, np.zeros((12, 10, 4), np.uint8)),
        {"label_kind": "lungs+infection"},
        "label",
        "lung mask is empty",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_CASES))
def test_bad_input_raises_case_error_naming_file(tmp_path: Path, name: str) -> None:
    """Every bad input raises CaseError whose message starts with the offending file and states the problem."""
    builder, kwargs, which, problem = BAD_CASES[name]
    image, label = builder(tmp_path)
    with pytest.raises(CaseError) as info:
        load_case(image, label, **kwargs)
    err = info.value
    expected = {"image": image, "label": label}.get(which)
    if expected is None:  # png-folder-mixed-shapes names the offending slice inside the folder
        expected = image / "b.png"
    assert err.path == Path(expected)
    assert str(err).startswith(f"{expected}: ")
    assert problem in err.problem, err.problem


def test_left_right_swap_is_noted(tmp_path: Path) -> None:
    """A lungs+infection label whose 1 lies at higher x than its 2 loads, with a note; the right way round, none."""
    image, label = _with_label(tmp_path, lung_label()[::-1].copy())
    assert any("left lung" in n for n in load_case(image, label).notes)
    image, label = _with_label(tmp_path, lung_label())
    assert not any("left lung" in n for n in load_case(image, label).notes)


def test_all_zero_label_is_infection_only_without_infection(tmp_path: Path) -> None:
    """An all-background label is accepted as infection-only (no lesion) and noted, not rejected."""
    image, label = _with_label(tmp_path, np.zeros((12, 10, 4), np.uint8))
    case = load_case(image, label)
    assert case.label_kind == "infection-only"
    assert int(case.label.sum()) == 0
    assert any("all background" in n for n in case.notes)


def test_inputs_unchanged(tmp_path: Path) -> None:
    """Loading and summarizing never writes to the input files or their folders."""
    image, label = _with_label(tmp_path, lung_label())
    write_dicom_series(tmp_path / "dcm", hu_volume((12, 10, 3)), (1.0, 1.0, 2.0))
    before = tree_digest(tmp_path)
    summarize(load_case(image, label))
    load_case(tmp_path / "dcm")
    assert tree_digest(tmp_path) == before


# ------------------------------------------------------------------------------------------------ detection


def test_intensity_detection_and_override(tmp_path: Path) -> None:
    """Integer 0-255 data is windowed, data with air below -500 is HU; overrides win; hu() converts windowed."""
    win = np.random.default_rng(0).integers(0, 256, (12, 10, 4)).astype(np.uint8)
    win[0, 0, 0], win[1, 0, 0] = 0, 255
    p = write_nifti(tmp_path / "w.nii.gz", win)
    case = load_case(p)
    assert case.intensity_kind == "windowed"
    hu = case.hu()
    assert hu.dtype == np.float32
    assert float(hu[0, 0, 0]) == pytest.approx(-1250.0) and float(hu[1, 0, 0]) == pytest.approx(250.0)
    assert load_case(p, intensity="hu").intensity_kind == "hu"
    assert load_case(p, intensity="hu").hu() is not None
    np.testing.assert_array_equal(load_case(p, intensity="hu").hu(), win.astype(np.float32))
    assert load_case(_good(tmp_path, "h.nii.gz")).intensity_kind == "hu"


def test_window_conversions_are_inverse() -> None:
    """windowed_to_hu maps 0 -> -1250, 255 -> 250 linearly and hu_to_windowed undoes it."""
    x = np.linspace(0, 255, 11)
    assert io.windowed_to_hu(0) == pytest.approx(-1250) and io.windowed_to_hu(255) == pytest.approx(250)
    assert io.windowed_to_hu(127.5) == pytest.approx(-500)
    np.testing.assert_allclose(io.hu_to_windowed(io.windowed_to_hu(x)), x)


@pytest.mark.parametrize(
    ("values", "kind"),
    [({0, 1}, "infection-only"), ({0, 1, 2}, "lungs+infection"), ({0, 3}, "lungs+infection"), ({0}, "infection-only")],
)
def test_label_kind_detection(values: set[int], kind: str) -> None:
    """Values within {0,1} mean infection-only, within {0..3} lungs+infection."""
    assert io.detect_label_kind(sorted(values), Path("x")) == kind


# ------------------------------------------------------------------------------------------------ find_label


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


@pytest.mark.parametrize(
    ("image", "labels", "expected"),
    [
        # COVID-19-CT-Seg: Lung_and_Infection_Mask preferred over Infection_Mask
        (
            "COVID-19-CT-Seg_20cases/coronacases_001.nii.gz",
            ["Lung_and_Infection_Mask/coronacases_001.nii.gz", "Infection_Mask/coronacases_001.nii.gz"],
            "Lung_and_Infection_Mask/coronacases_001.nii.gz",
        ),
        (
            "COVID-19-CT-Seg_20cases/radiopaedia_4_85506_1.nii.gz",
            ["Infection_Mask/radiopaedia_4_85506_1.nii.gz"],
            "Infection_Mask/radiopaedia_4_85506_1.nii.gz",
        ),
        ("medseg/images/medseg_0003.png", ["medseg/masks/medseg_0003.png"], "medseg/masks/medseg_0003.png"),
        ("Task/imagesTr/case_007.nii.gz", ["Task/labelsTr/case_007.nii.gz"], "Task/labelsTr/case_007.nii.gz"),
        ("Task/imagesTr/case_007_0000.nii.gz", ["Task/labelsTr/case_007.nii.gz"], "Task/labelsTr/case_007.nii.gz"),
        (
            "MosMed/studies/CT-1/study_0255.nii.gz",
            ["MosMed/masks/study_0255_mask.nii.gz"],
            "MosMed/masks/study_0255_mask.nii.gz",
        ),
        # MedSeg NIfTI masks use other classes (1 ground-glass, 2 consolidation, 3 effusion): never auto-matched
        ("medseg_nii/tr_im.nii.gz", ["medseg_nii/tr_mask.nii.gz"], None),
        ("loose/ct.nii.gz", ["loose/other.nii.gz"], None),
    ],
)
def test_find_label_layouts(tmp_path: Path, image: str, labels: list[str], expected: str | None) -> None:
    """find_label follows each supported dataset layout and returns None when nothing matches."""
    img = _touch(tmp_path / image)
    for lab in labels:
        _touch(tmp_path / lab)
    found = find_label(img)
    assert found == (None if expected is None else tmp_path / expected)


# ------------------------------------------------------------------------------------------------ writers


def test_atomic_write_replaces_on_success_and_cleans_on_error(tmp_path: Path) -> None:
    """The temp file sits beside the target, becomes the target on success and vanishes on error."""
    target = tmp_path / "sub" / "out.bin"
    with io.atomic_write_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith("out.bin.tmp-")
        tmp.write_bytes(b"one")
    assert target.read_bytes() == b"one"
    with pytest.raises(RuntimeError), io.atomic_write_path(target) as tmp:
        tmp.write_bytes(b"two")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"one"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]


def test_save_nifti_round_trip_gz_and_dtype(tmp_path: Path) -> None:
    """save_nifti writes a real gzip NIfTI with the requested dtype and affine."""
    data = lung_label()
    affine = np.diag([0.7, 0.8, 2.5, 1.0])
    path = io.save_nifti(data, affine, tmp_path / "lab.nii.gz", dtype=np.uint8)
    assert path.read_bytes()[:2] == b"\x1f\x8b"  # really gzip-compressed
    img = nib.load(str(path))
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), data)
    np.testing.assert_allclose(img.affine, affine)
    plain = io.save_nifti(data.astype(np.float32), affine, tmp_path / "x.nii")
    assert nib.load(str(plain)).get_data_dtype() == np.float32
    with pytest.raises(ValueError, match="must end in"):
        io.save_nifti(data, affine, tmp_path / "x.png")


# ------------------------------------------------------------------------------------------------ summarize


def test_summarize_lungs_and_infection(tmp_path: Path) -> None:
    """Slices, volumes and infection % of lung are computed from the label: 8 / 192 voxels = 4.1667 %."""
    lab = lung_label()
    aff = np.diag([0.5, 0.5, 2.0, 1.0])
    case = load_case(write_nifti(tmp_path / "ct.nii.gz", hu_volume(), aff), write_nifti(tmp_path / "l.nii", lab, aff))
    s = summarize(case)
    assert s["shape"] == [12, 10, 4] and s["spacing_mm"] == [0.5, 0.5, 2.0] and s["n_slices"] == 4
    assert s["label_kind"] == "lungs+infection" and s["lung_source"] == "label"
    assert s["label_values"] == {"0": 480 - 192, "1": 96, "2": 96 - 8, "3": 8}
    assert s["slices_with_lung"] == [[0, 3]] and s["slices_with_infection"] == [[1, 2]]
    assert s["infection_percent_of_lung"] == pytest.approx(100 * 8 / 192)
    assert s["lung_volume_ml"] == pytest.approx(192 * 0.5 * 0.5 * 2.0 / 1000)
    assert s["infection_volume_ml"] == pytest.approx(8 * 0.5 / 1000)
    assert s["intensity"]["min"] == float(hu_volume().min())


def test_label_map_converts_infection_only(tmp_path: Path) -> None:
    """An infection-only label becomes 3 on top of the automatic lung mask (COVID-19-CT-Seg convention)."""
    hu = np.full((40, 40, 1), 40, np.int16)  # soft tissue body ...
    hu[6:18, 8:32] = -850  # ... with a left lung (low x)
    hu[22:34, 8:32] = -850  # ... and a right lung
    inf = np.zeros((40, 40, 1), np.uint8)
    inf[26:30, 14:20] = 1
    aff = np.diag([4.0, 4.0, 5.0, 1.0])
    case = load_case(write_nifti(tmp_path / "ct.nii.gz", hu, aff), write_nifti(tmp_path / "l.nii.gz", inf, aff))
    lmap = label_map(case)
    assert lmap.dtype == np.uint8 and set(np.unique(lmap).tolist()) <= {0, 1, 2, 3}
    np.testing.assert_array_equal(lmap == 3, inf == 1)
    s = summarize(case)
    assert s["lung_source"] == "auto_lung_mask"
    assert s["infection_percent_of_lung"] == pytest.approx(100 * 24 / int((lmap > 0).sum()))


@pytest.mark.shared
def test_real_lobes_left_lung_has_lower_x_even_when_stored_lps(shared_data: Path, tmp_path: Path) -> None:
    """TotalSegmentator lobes as a 1/2 label: left lung at low x in RAS, also after storing both files as LPS."""
    ct = nib.load(str(shared_data / "real-ct" / "totalseg_example_ct_sm.nii.gz"))
    seg = np.asanyarray(nib.load(str(shared_data / "real-ct" / "totalseg_example_seg.nii.gz")).dataobj)
    lab = np.zeros(seg.shape, np.uint8)
    lab[(seg == 10) | (seg == 11)] = 1  # left upper/lower lobes
    lab[(seg >= 12) & (seg <= 14)] = 2  # right upper/middle/lower lobes
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = [s - 1 for s in seg.shape[:2]]
    lps_affine = ct.affine @ flip  # same world grid, stored with x and y reversed
    hu = np.asarray(ct.dataobj)
    for name, img, lbl, aff in [("ras", hu, lab, ct.affine), ("lps", hu[::-1, ::-1], lab[::-1, ::-1], lps_affine)]:
        case = load_case(
            write_nifti(tmp_path / f"{name}_ct.nii.gz", np.ascontiguousarray(img), aff),
            write_nifti(tmp_path / f"{name}_lab.nii.gz", np.ascontiguousarray(lbl), aff),
        )
        assert "".join(case.original_axcodes) == ("RAS" if name == "ras" else "LPS")
        np.testing.assert_array_equal(case.label, lab)
        assert case.label_kind == "lungs+infection"
        assert not any("left lung" in n for n in case.notes)
        xs = [np.nonzero(case.label == v)[0].mean() for v in (1, 2)]
        assert xs[0] < xs[1]
