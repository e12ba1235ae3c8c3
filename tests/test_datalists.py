"""Datalists for the downstream bundles: deterministic splits, slice extraction, volume and PNG conversion."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from cosingan_monai.core.errors import CaseError
from cosingan_monai.data import datalists
from cosingan_monai.data.io import hu_to_windowed, ras_to_display, save_nifti
from cosingan_monai.phantom.generator import make_phantom_case, write_phantom_dataset


@pytest.fixture(scope="module")
def ctseg(tmp_path_factory) -> Path:
    """Four small phantoms in the COVID-19-CT-Seg layout, two of them healthy."""
    root = tmp_path_factory.mktemp("ctseg")
    write_phantom_dataset(root, cases=4, seed=11, size=48, slices=8, healthy_fraction=0.5)
    return root


def _load(datalist: Path) -> dict:
    return json.loads(datalist.read_text())


def test_split_counts_fractions_and_counts():
    assert datalists.split_counts(10) == {"training": 6, "validation": 2, "test": 2}
    assert datalists.split_counts(70, {"training": 42, "validation": 8, "test": 20}) == {
        "training": 42,
        "validation": 8,
        "test": 20,
    }
    assert datalists.split_counts(5, {"test": 1.0}) == {"training": 0, "validation": 0, "test": 5}
    with pytest.raises(ValueError, match="need 30 items"):
        datalists.split_counts(20, {"training": 10, "validation": 10, "test": 10})
    with pytest.raises(ValueError, match="unknown split"):
        datalists.split_counts(5, {"train": 0.5})
    with pytest.raises(ValueError, match="no training item"):
        datalists.split_counts(2, {"training": 0.1, "test": 0.9})


def test_split_items_deterministic_disjoint_and_stratified():
    items = [f"case{i:02d}" for i in range(12)]
    a = datalists.split_items(items, seed=3)
    assert a == datalists.split_items(list(reversed(items)), seed=3)  # order of the input does not matter
    assert a != datalists.split_items(items, seed=4)
    flat = a["training"] + a["validation"] + a["test"]
    assert sorted(flat) == items and len(set(flat)) == 12
    strata = {item: int(item[-2:]) < 3 for item in items}  # 3 rare positives out of 12
    for seed in range(10):
        s = datalists.split_items(items, {"training": 8, "validation": 2, "test": 2}, seed, strata=strata)
        assert any(strata[i] for i in s["test"]) and not all(strata[i] for i in s["test"])


def test_prepare_slices_from_ctseg(ctseg, tmp_path):
    out = tmp_path / "prep"
    res = datalists.prepare_slices(ctseg, out, split={"training": 2, "validation": 1, "test": 1}, seed=0)
    seg, cls = _load(res.datalists["datalist"]), _load(res.datalists["datalist_cls"])
    assert set(seg) >= set(datalists.SPLITS) and res.counts["datalist"] == {k: len(v) for k, v in seg.items()}
    cases = {s: {Path(e["image"]).name.split("_z")[0] for e in v} for s, v in seg.items()}
    assert all(len(cases[s]) == n for s, n in (("training", 2), ("validation", 1), ("test", 1)))
    assert not (cases["training"] & cases["test"]) and not (cases["training"] & cases["validation"])
    # held-out splits hold one healthy and one infected case between them (stratified)
    assert {max(e["infected"] for e in seg[s]) for s in ("validation", "test")} == {0, 1}

    source = {p.name.split(".")[0]: p for p in (ctseg / "COVID-19-CT-Seg_20cases").glob("*.nii.gz")}
    entry = [e for e in seg["training"] if e["infected"]][-1]
    assert not entry["image"].endswith("_z000.nii.gz")
    stem = Path(entry["image"]).name.split(".")[0]
    case_name, z = stem.split("_z")
    vol = nib.load(source[case_name])
    lab_vol = np.asarray(nib.load(ctseg / "Lung_and_Infection_Mask" / source[case_name].name).dataobj)
    img2d, lab2d = nib.load(out / entry["image"]), nib.load(out / entry["label"])
    assert img2d.shape == vol.shape[:2] and img2d.get_data_dtype() == np.float32
    np.testing.assert_allclose(img2d.get_fdata(), np.asarray(vol.dataobj)[:, :, int(z)], atol=0.5)
    np.testing.assert_array_equal(np.asarray(lab2d.dataobj), lab_vol[:, :, int(z)])
    # the slice keeps its place in space: its origin is voxel (0, 0, z) of the volume
    np.testing.assert_allclose(img2d.affine[:3, 3], (vol.affine @ [0, 0, int(z), 1])[:3], atol=1e-4)
    np.testing.assert_allclose(img2d.affine[:3, :3], vol.affine[:3, :3], atol=1e-6)
    # every kept slice has lungs; classifier labels agree with the slice labels
    for split in datalists.SPLITS:
        for s_entry, c_entry in zip(seg[split], cls[split], strict=True):
            lab = np.asarray(nib.load(out / s_entry["label"]).dataobj)
            assert np.count_nonzero(lab) >= 0.01 * lab.size
            assert c_entry == {"image": s_entry["image"], "label": int((lab == 3).any()), "mask": s_entry["label"]}


def test_prepare_slices_positive_threshold_and_ambiguous(ctseg, tmp_path):
    loose = datalists.prepare_slices(ctseg, tmp_path / "a", seed=0)
    strict = datalists.prepare_slices(ctseg, tmp_path / "b", seed=0, min_infection_px=40, drop_ambiguous=True)
    n_pos = lambda r: sum(r.counts["datalist_cls_positive"].values())  # noqa: E731
    assert n_pos(strict) < n_pos(loose)
    assert sum(strict.counts["datalist_cls"].values()) < sum(strict.counts["datalist"].values())
    for split, entries in _load(strict.datalists["datalist_cls"]).items():
        for e in entries:
            lab = np.asarray(nib.load(tmp_path / "b" / e["image"].replace("images", "labels")).dataobj)
            n = int((lab == 3).sum())
            assert (n >= 40) if e["label"] else (n == 0), (split, e, n)


def test_prepare_volumes_references_hu_and_converts_windowed(tmp_path):
    root = tmp_path / "src"
    write_phantom_dataset(root, cases=3, seed=5, size=40, slices=6, healthy_fraction=0.34)
    # make case 2 a 0-255 windowed export, as half of the real COVID-19-CT-Seg cases are
    img_path = root / "COVID-19-CT-Seg_20cases" / "phantom_002.nii.gz"
    img = nib.load(img_path)
    hu = img.get_fdata()
    save_nifti(np.clip(np.rint(hu_to_windowed(hu)), 0, 255).astype(np.uint8), img.affine, img_path, np.uint8)
    res = datalists.prepare_volumes(root, tmp_path / "out", split={"training": 1, "validation": 1, "test": 1})
    dl = _load(res.datalists["datalist_3d"])
    entries = {Path(e["image"]).name: e for v in dl.values() for e in v}
    assert len(entries) == 3
    assert Path(entries["phantom_000.nii.gz"]["image"]).is_absolute()  # referenced in place
    conv = entries["phantom_002.nii.gz"]
    assert not Path(conv["image"]).is_absolute()  # written under out/, relative to the datalist
    out_hu = nib.load(tmp_path / "out" / conv["image"]).get_fdata()
    assert out_hu.min() < -1000 and np.abs(out_hu - np.clip(hu, -1250, 250)).max() < 6.0  # 1 grey level ~ 5.9 HU
    lab = np.asarray(nib.load(tmp_path / "out" / conv["label"]).dataobj)
    assert set(np.unique(lab)) <= {0, 1, 2, 3} and conv["infected"] == int((lab == 3).any())


def _write_png_case(folder: Path, stem: str, seed: int) -> np.ndarray:
    """A MedSeg-style pair from a phantom slice: windowed 0-255 display PNG and an infection-only mask."""
    case = make_phantom_case(seed, size=96, slices=3)
    hu, lab = case.image[:, :, 1], case.label[:, :, 1]
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(ras_to_display(np.clip(np.rint(hu_to_windowed(hu)), 0, 255).astype(np.uint8))).save(
        folder / "images" / f"{stem}.png"
    )
    Image.fromarray(ras_to_display((lab == 3).astype(np.uint8))).save(folder / "masks" / f"{stem}.png")
    return lab


def test_prepare_png_slices_hu_and_automatic_lungs(tmp_path):
    src = tmp_path / "medseg"
    truth = {f"s{i}": _write_png_case(src, f"s{i}", 40 + i) for i in range(4)}
    res = datalists.prepare_png_slices(src, tmp_path / "out", split={"training": 2, "validation": 1, "test": 1})
    seg = _load(res.datalists["datalist"])
    assert sum(len(v) for v in seg.values()) == 4
    for entries in seg.values():
        for e in entries:
            stem = Path(e["image"]).name.split(".")[0]
            image, label = nib.load(tmp_path / "out" / e["image"]), nib.load(tmp_path / "out" / e["label"])
            assert image.shape == truth[stem].shape
            assert image.get_fdata().min() < -1000  # HU, not 0-255
            np.testing.assert_allclose(np.linalg.norm(image.affine[:3, :3], axis=0), [0.75, 0.75, 5.0])
            lab = np.asarray(label.dataobj)
            np.testing.assert_array_equal(lab == 3, truth[stem] == 3)  # infection exactly where the mask said
            lungs_true, lungs_auto = truth[stem] > 0, lab > 0
            dice = 2 * (lungs_true & lungs_auto).sum() / (lungs_true.sum() + lungs_auto.sum())
            assert dice > 0.8, (stem, dice)
            assert e["infected"] == int((truth[stem] == 3).any())


def test_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(CaseError, match="does not exist"):
        datalists.find_volume_pairs(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaseError, match="no NIfTI volumes"):
        datalists.find_volume_pairs(tmp_path / "empty")
    src = tmp_path / "png"
    _write_png_case(src, "a", 1)
    (src / "masks" / "a.png").unlink()
    with pytest.raises(CaseError, match=r"a\.png.*has no mask"):
        datalists.find_png_pairs(src)
    vol = tmp_path / "ct" / "COVID-19-CT-Seg_20cases"
    vol.mkdir(parents=True)
    save_nifti(np.zeros((8, 8, 2), np.float32), np.eye(4), vol / "x.nii.gz")
    with pytest.raises(CaseError, match=r"x\.nii\.gz: has no label"):
        datalists.find_volume_pairs(tmp_path / "ct")
    with pytest.raises(CaseError, match="cannot train a 3D model"):
        datalists.prepare_any(src, tmp_path / "o", dims=3)


def test_write_datalist_is_atomic_and_complete(tmp_path):
    path = datalists.write_datalist(tmp_path / "d.json", {"training": [{"image": "a"}]})
    assert _load(path) == {"training": [{"image": "a"}], "validation": [], "test": []}
    assert [p.name for p in tmp_path.iterdir()] == ["d.json"]  # no temp file left behind


def test_mixed_lists_keep_lesion_free_copies_for_the_classifier_only(tmp_path):
    """The segmenter's list leaves out lesion-free copies (they teach "faint lesion = lung"); the classifier's keeps
    them as negatives; the real slice is repeated to the share of each list; share 0 adds none."""
    from cosingan_monai.data.datalists import mix_real_slices

    lab = np.zeros((8, 8, 1), np.uint8)
    lab[2:6, 2:6] = 1
    lab[3, 3] = 3
    real_label = tmp_path / "real_label.nii.gz"
    nib.save(nib.Nifti1Image(lab, np.eye(4)), str(real_label))
    real = [{"image": str(tmp_path / "real.nii.gz"), "label": str(real_label)}]

    def entry(i: int, removed: int) -> dict:
        return {"image": f"i{i}.nii.gz", "label": f"l{i}.nii.gz", "infected": 1 - removed, "lesion_removed": removed}

    synthetic = tmp_path / "syn" / "datalist.json"
    synthetic.parent.mkdir()
    training = [entry(i, i % 2) for i in range(12)]  # 6 infected, 6 lesion-free copies
    synthetic.write_text(json.dumps({"training": training, "validation": [entry(20, 0), entry(21, 1)]}))
    lists = mix_real_slices(synthetic, real, 0.25, tmp_path / "mixed")
    seg = json.loads(lists["datalist"].read_text())
    cls = json.loads(lists["datalist_cls"].read_text())
    seg_real = [e for e in seg["training"] if e.get("source", "").startswith("real ")]
    # 6 infected + round(0.25 * 6 / 0.75) = 2 real, cycled to the classifier list's 16 entries (the same steps)
    assert len(seg["training"]) == 16 and len(seg_real) == 4
    assert seg["training"][:8] == seg["training"][8:]
    assert not any(e.get("lesion_removed") for e in seg["training"] + seg["validation"])
    assert len(seg["validation"]) == 1 and seg["validation"][0]["image"].endswith("i20.nii.gz")
    assert len(cls["training"]) == 12 + 4 and sum(e["label"] == 0 for e in cls["training"]) == 6  # 0.25 * 12 / 0.75
    assert len(cls["validation"]) == 2
    for doc in (seg, cls):  # one key set per list: MONAI's default collate refuses mixed dictionaries
        assert len({frozenset(e) for e in doc["training"] + doc["validation"]}) == 1
    none = json.loads(mix_real_slices(synthetic, real, 0.0, tmp_path / "none")["datalist"].read_text())
    assert len(none["training"]) == 12 and all(Path(e["image"]).is_absolute() for e in none["training"])
    assert len({e["image"] for e in none["training"]}) == 6
