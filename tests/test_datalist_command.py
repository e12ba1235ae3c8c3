"""`cosingan-monai datalist` on the three source layouts: COVID-19-CT-Seg NIfTI, DICOM series, MedSeg PNG."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from test_datalists import _write_png_case
from test_io import write_dicom_series

from cosingan_monai.cli import main
from cosingan_monai.data.io import load_case
from cosingan_monai.phantom.generator import write_phantom_dataset


@pytest.fixture(scope="module")
def ctseg(tmp_path_factory) -> Path:
    """Five small phantoms in the COVID-19-CT-Seg layout, two of them healthy."""
    root = tmp_path_factory.mktemp("ctseg")
    write_phantom_dataset(root, cases=5, seed=21, size=40, slices=6, healthy_fraction=0.4)
    return root


def _run(*args: str) -> str:
    result = CliRunner().invoke(main, ["datalist", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _entries(datalist: Path) -> dict[str, list[dict]]:
    return json.loads(datalist.read_text())


def test_datalist_3d_from_ctseg_split_per_case(ctseg, tmp_path):
    out = tmp_path / "lists" / "ct3d.json"
    output = _run("--source", str(ctseg), "--out", str(out), "--dims", "3", "--split", "3,1,1", "--seed", "2")
    lists = _entries(out)
    assert {k: len(v) for k, v in lists.items()} == {"training": 3, "validation": 1, "test": 1}
    assert f"{out}: training 3, validation 1, test 1" in output
    images = [e["image"] for v in lists.values() for e in v]
    assert len(set(images)) == 5
    for entry in lists["training"]:
        assert nib.load(out.parent / entry["image"]).shape == nib.load(out.parent / entry["label"]).shape
    # held-out cases see both classes (2 healthy among 5, stratified)
    assert {lists["validation"][0]["infected"], lists["test"][0]["infected"]} == {0, 1}
    # same seed, same split; another seed, another split
    again = tmp_path / "again" / "ct3d.json"
    _run("--source", str(ctseg), "--out", str(again), "--dims", "3", "--split", "3,1,1", "--seed", "2")
    assert _entries(again) == lists
    other = tmp_path / "other" / "ct3d.json"
    splits = []
    for seed in range(4):
        _run("--source", str(ctseg), "--out", str(other), "--dims", "3", "--split", "3,1,1", "--seed", str(seed))
        splits.append(sorted(e["image"] for e in _entries(other)["test"]))
    assert len({tuple(s) for s in splits}) > 1


def test_datalist_2d_from_ctseg_writes_seg_and_cls_lists(ctseg, tmp_path):
    out = tmp_path / "slices.json"
    _run("--source", str(ctseg), "--out", str(out), "--split", "0.6,0.2,0.2")
    seg, cls = _entries(out), _entries(tmp_path / "slices_cls.json")
    cases = {s: {Path(e["image"]).name.split("_z")[0] for e in v} for s, v in seg.items()}
    assert [len(cases[s]) for s in ("training", "validation", "test")] == [3, 1, 1]
    assert not cases["training"] & (cases["validation"] | cases["test"])
    assert [len(v) for v in cls.values()] == [len(v) for v in seg.values()]
    entry = seg["training"][0]
    image = nib.load(tmp_path / entry["image"])
    assert image.ndim in (2, 3) and image.shape[:2] == (40, 40)
    assert not (tmp_path / "datalist.json").exists()  # renamed to --out, no stray copy


def test_datalist_from_dicom_series(tmp_path):
    """A COVID-19-CT-Seg layout whose images are DICOM series folders: converted to HU NIfTI with the labels."""
    pairs = write_phantom_dataset(tmp_path / "nifti", cases=3, seed=5, size=32, slices=4, healthy_fraction=0.0)
    src = tmp_path / "dicom"
    (src / "Lung_and_Infection_Mask").mkdir(parents=True)
    truth = {}
    for image, label in pairs:
        name = image.name.removesuffix(".nii.gz")
        ras = np.asarray(nib.load(image).dataobj).astype(np.int16)
        series = write_dicom_series(src / "COVID-19-CT-Seg_20cases" / name, ras[::-1, ::-1, :], (1.0, 1.0, 2.0))
        lab = np.asarray(nib.load(label).dataobj).astype(np.uint8)  # on the series' grid (its RAS affine)
        nib.save(nib.Nifti1Image(lab, load_case(series).affine), src / "Lung_and_Infection_Mask" / label.name)
        truth[name] = ras
    out = tmp_path / "out" / "dicom3d.json"
    _run("--source", str(src), "--out", str(out), "--dims", "3", "--split", "1,1,1")
    lists = _entries(out)
    assert sum(len(v) for v in lists.values()) == 3
    for entries in lists.values():
        entry = entries[0]
        path = out.parent / entry["image"]
        assert path.name.endswith(".nii.gz")
        name = path.name.removesuffix(".nii.gz")
        np.testing.assert_allclose(np.asarray(nib.load(path).dataobj), truth[name], atol=0.5)


def test_datalist_from_medseg_png(tmp_path):
    src = tmp_path / "medseg"
    for i in range(5):
        _write_png_case(src, f"s{i}", 60 + i)
    out = tmp_path / "out" / "medseg.json"
    _run("--source", str(src), "--out", str(out), "--split", "3,1,1")
    seg = _entries(out)
    assert {k: len(v) for k, v in seg.items()} == {"training": 3, "validation": 1, "test": 1}
    lab = np.asarray(nib.load(out.parent / seg["test"][0]["label"]).dataobj)
    assert set(np.unique(lab)) <= {0, 1, 2, 3} and (lab > 0).any()


def test_datalist_refusals_name_the_problem(ctseg, tmp_path):
    png = tmp_path / "png"
    _write_png_case(png, "a", 1)
    cases = [
        (["--source", str(png), "--out", str(tmp_path / "x.json"), "--dims", "3"], "cannot train a 3d model"),
        (["--source", str(ctseg), "--out", str(tmp_path / "x.json"), "--split", "0.5,0.5"], "three"),
        (["--source", str(ctseg), "--out", str(tmp_path / "x.txt")], "must end in .json"),
        (["--source", str(tmp_path / "png" / "images"), "--out", str(tmp_path / "x.json")], "no nifti volumes"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, ["datalist", *args])
        assert result.exit_code != 0, args
        assert message in result.output.lower(), result.output
        assert "Traceback" not in result.output
