"""`cosingan-monai inspect`: correct numbers for good cases, clean 'error: <file>: <problem>' exits for bad ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cosingan_monai.cli import main


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, affine)
    img.set_data_dtype(data.dtype)
    nib.save(img, str(path))
    return path


@pytest.fixture
def seg_case(tmp_path: Path) -> Path:
    """A COVID-19-CT-Seg-style case: 80 lung voxels (slices 1-2) of which 10 infected (12.50 %, slice 2)."""
    hu = np.random.default_rng(0).integers(-1000, 400, (16, 12, 6)).astype(np.int16)
    hu[0, 0, 0] = -1024
    lab = np.zeros((16, 12, 6), np.uint8)
    lab[2:6, 2:7, 1:3] = 1  # 40 voxels, slices 1-2
    lab[9:13, 2:7, 1:3] = 2  # 40 voxels
    lab[9:11, 2:7, 2] = 3  # 10 voxels inside the right lung, slice 2
    aff = np.diag([-0.8, -0.8, 5.0, 1.0])  # stored LPS, like many DICOM-converted cases
    image = _nifti(tmp_path / "COVID-19-CT-Seg_20cases" / "case_01.nii.gz", hu, aff)
    _nifti(tmp_path / "Lung_and_Infection_Mask" / "case_01.nii.gz", lab, aff)
    return image


def run(*args: str) -> tuple[int, str]:
    """Invoke the CLI in-process; returns (exit code, stdout + stderr)."""
    result = CliRunner().invoke(main, ["inspect", *args])
    return result.exit_code, result.output


def test_inspect_good_case_text(seg_case: Path) -> None:
    """The readable report shows geometry, orientation, the layout-found label and the infection share of lung."""
    code, out = run("--case", str(seg_case))
    assert code == 0, out
    assert "16 x 12 x 6 (x, y, z)" in out
    assert "0.8 x 0.8 x 5 mm (header)" in out
    assert "LPS on disk -> RAS in memory" in out
    assert "label found by folder layout" in out and "Lung_and_Infection_Mask" in out
    assert "lung         slices 1-2 (2 slices) [from label]" in out
    assert "infection    slices 2 (1 slice)" in out
    assert "= 12.50 % of lung" in out
    assert "HU: min -1024," in out


def test_inspect_good_case_json(seg_case: Path) -> None:
    """--json prints machine-readable numbers matching the label."""
    code, out = run("--case", str(seg_case), "--json")
    assert code == 0, out
    s = json.loads(out)
    assert s["infection_percent_of_lung"] == pytest.approx(12.5)
    assert s["label_values"] == {"0": 16 * 12 * 6 - 80, "1": 40, "2": 30, "3": 10}
    assert s["lung_volume_ml"] == pytest.approx(80 * 0.8 * 0.8 * 5.0 / 1000)
    assert s["slices_with_lung"] == [[1, 2]] and s["slices_with_infection"] == [[2, 2]]
    assert s["original_orientation"] == "LPS" and s["intensity_kind"] == "hu"


def test_inspect_intensity_override(seg_case: Path) -> None:
    """--intensity windowed on HU data is refused with the file named, not silently accepted."""
    code, out = run("--case", str(seg_case), "--intensity", "windowed")
    assert code == 1
    assert f"error: {seg_case}: intensity='windowed' but values span" in out


def _hu(shape: tuple[int, int, int]) -> np.ndarray:
    return np.random.default_rng(0).integers(-1000, 400, shape).astype(np.int16)


def _truncated(tmp: Path) -> tuple[list[str], Path]:
    p = _nifti(tmp / "ct.nii.gz", _hu((30, 30, 20)), np.eye(4))
    p.write_bytes(p.read_bytes()[:400])
    return ["--case", str(p)], p


def _bad_label(tmp: Path) -> tuple[list[str], Path]:
    img = _nifti(tmp / "ct.nii.gz", _hu((8, 8, 2)), np.eye(4))
    lab = _nifti(tmp / "lab.nii.gz", np.full((8, 8, 2), 7, np.uint8), np.eye(4))
    return ["--case", str(img), "--label", str(lab)], lab


def _missing(tmp: Path) -> tuple[list[str], Path]:
    return ["--case", str(tmp / "absent.nii.gz")], tmp / "absent.nii.gz"


def _photo(tmp: Path) -> tuple[list[str], Path]:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3)).astype(np.uint8), "RGB").save(tmp / "p.png")
    return ["--case", str(tmp / "p.png")], tmp / "p.png"


@pytest.mark.parametrize(
    ("builder", "problem"),
    [
        (_truncated, "cannot be read as NIfTI"),
        (_bad_label, "label values [7]"),
        (_missing, "image does not exist"),
        (_photo, "not a grayscale CT"),
    ],
)
def test_inspect_bad_input_exits_cleanly(tmp_path: Path, builder, problem: str) -> None:
    """Bad input exits 1 with 'error: <file>: <problem>' and no traceback."""
    args, culprit = builder(tmp_path)
    code, out = run(*args)
    assert code == 1
    assert f"error: {culprit}: " in out and problem in out
    assert "Traceback" not in out


def test_inspect_bad_input_process_has_no_traceback(tmp_path: Path) -> None:
    """The real console process prints one error line on stderr and exits non-zero."""
    args, culprit = _truncated(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "cosingan_monai.cli", "inspect", *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith(f"error: {culprit}: cannot be read as NIfTI")
    assert "Traceback" not in proc.stderr and proc.stdout == ""


# ------------------------------------------------------------------------------------------------ real data


@pytest.mark.shared
def test_inspect_real_nifti_hu(shared_data: Path) -> None:
    """The TotalSegmentator example volume is HU, RAS, 122 x 101 x 30 at 3 mm."""
    code, out = run("--case", str(shared_data / "real-ct" / "totalseg_example_ct_sm.nii.gz"), "--json")
    assert code == 0, out
    s = json.loads(out)
    assert s["intensity_kind"] == "hu" and s["original_orientation"] == "RAS"
    assert s["shape"] == [122, 101, 30] and s["spacing_mm"] == [3.0, 3.0, 3.0]
    assert s["intensity"]["min"] == -1100.0 and s["intensity"]["max"] == 1207.0
    assert s["label"] is None


@pytest.mark.shared
def test_inspect_real_dicom_with_padding(shared_data: Path) -> None:
    """The DICOM chest slice is HU with -2048 padding, 0.625 mm pixels, stored LPS."""
    code, out = run("--case", str(shared_data / "real-ct" / "lungmask_chest_slice.dcm"), "--json")
    assert code == 0, out
    s = json.loads(out)
    assert s["intensity_kind"] == "hu" and s["intensity"]["min"] == -2048.0
    assert s["shape"] == [512, 512, 1] and s["spacing_mm"][:2] == [0.625, 0.625]
    assert s["original_orientation"] == "LPS"


@pytest.mark.shared
def test_inspect_real_medseg_windowed_infection_only(shared_data: Path) -> None:
    """A MedSeg slice is windowed, its palette mask infection-only (found by layout), infection % is consistent."""
    image = shared_data / "medseg100-dev" / "images" / "medseg_0003.png"
    mask = np.array(Image.open(shared_data / "medseg100-dev" / "masks" / "medseg_0003.png"))
    n_inf = int((mask == 1).sum())
    code, out = run("--case", str(image), "--json")
    assert code == 0, out
    s = json.loads(out)
    assert s["intensity_kind"] == "windowed" and s["label_kind"] == "infection-only"
    assert s["label"].endswith("masks/medseg_0003.png")
    assert s["label_values"]["1"] == n_inf
    assert s["infection_volume_ml"] == pytest.approx(n_inf * 0.75 * 0.75 * 5.0 / 1000)
    assert s["lung_source"] == "auto_lung_mask"
    pct = s["infection_percent_of_lung"]
    assert 0 < pct < 100
    assert pct == pytest.approx(100 * s["infection_volume_ml"] / s["lung_volume_ml"])
    code, text = run("--case", str(image))
    assert f"= {pct:.2f} % of lung" in text
