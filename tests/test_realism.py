"""Realism metrics: known values on hand-made slices; identical, blurred and painted sets; the realism CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy import ndimage as ndi

from cosingan_monai.cli import main
from cosingan_monai.core.files import write_json
from cosingan_monai.data.io import find_label, save_nifti
from cosingan_monai.metrics import realism as R
from cosingan_monai.metrics.realism_io import BundleSegmenter, case_slices, run_realism

N = 128


def textured_slice(seed: int, n: int = N) -> tuple[np.ndarray, np.ndarray]:
    """A chest-like HU slice with correlated lung/lesion/body texture and vessels, and its label map."""
    rng = np.random.default_rng(seed)
    x, y = np.mgrid[0:n, 0:n] / n
    body = ((x - 0.5) / 0.44) ** 2 + ((y - 0.5) / 0.36) ** 2 < 1
    left = ((x - 0.32) / 0.13) ** 2 + ((y - 0.5) / 0.22) ** 2 < 1
    right = ((x - 0.68) / 0.13) ** 2 + ((y - 0.5) / 0.22) ** 2 < 1
    cx, cy = 0.68 + rng.uniform(-0.03, 0.03), 0.5 + rng.uniform(-0.08, 0.08)
    lesion = right & (((x - cx) / 0.09) ** 2 + ((y - cy) / 0.12) ** 2 < 1)

    def texture(sigma: float, sd: float) -> np.ndarray:
        f = ndi.gaussian_filter(rng.normal(0, 1, (n, n)), sigma)
        return f / f.std() * sd

    vessels = ndi.gaussian_filter((rng.random((n, n)) < 0.01).astype(float), 0.8) * 3000
    hu = -1000.0 + rng.normal(0, 10, (n, n))
    hu[body] = (40 + texture(1.5, 40) + texture(0.7, 15))[body]
    hu[left | right] = (-820 + texture(1.0, 40) + texture(3.0, 30) + vessels)[left | right]
    hu[lesion] = (-420 + texture(1.2, 90) + vessels)[lesion]
    label = np.zeros((n, n), np.uint8)
    label[left], label[right], label[lesion] = 1, 2, 3
    return hu.astype(np.float32), label


def painted(hu: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The painted control: each region filled with its mean HU plus white Gaussian noise of its sd."""
    s = R.analysis_slice(hu, label, size=hu.shape[0])
    out = -1000.0 + rng.normal(0, 10, hu.shape)
    for mask in R.region_masks(s).values():
        out[mask] = rng.normal(hu[mask].mean(), hu[mask].std(), int(mask.sum()))
    return out.astype(np.float32), label


@pytest.fixture(scope="module")
def real_set() -> list[tuple[np.ndarray, np.ndarray]]:
    return [textured_slice(i) for i in range(6)]


@pytest.fixture(scope="module")
def identical(real_set) -> R.RealismReport:
    return R.compare_sets(real_set, [(h.copy(), lab.copy()) for h, lab in real_set])


def boxes(n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A slice skeleton: body 40 HU filling a frame, two rectangular lungs (label 1, 2) of -800 HU; hu, label."""
    hu = np.full((n, n), -1000.0)
    hu[4:-4, 4:-4] = 40.0
    label = np.zeros((n, n), np.uint8)
    label[10:30, 12:52], label[34:54, 12:52] = 1, 2
    hu[label > 0] = -800.0
    return hu, label


# ------------------------------------------------------------------------------------------- resampling


def test_resampling_area_for_images_and_nearest_for_labels():
    img = np.arange(64, dtype=np.float32).reshape(8, 8)
    small = R.resample_image(img, 2)
    assert small.shape == (2, 2)
    np.testing.assert_allclose(small, img.reshape(2, 4, 2, 4).mean(axis=(1, 3)))  # exact block means
    np.testing.assert_allclose(R.resample_image(img, 6).mean(), img.mean(), rtol=1e-6)  # area keeps the mean
    lab = np.zeros((8, 8), np.uint8)
    lab[4:, :] = 3
    assert set(np.unique(R.resample_label(lab, 3)).tolist()) == {0, 3}
    assert R.resample_label(lab, 4)[2:, :].min() == 3 and R.resample_label(lab, 4)[:2].max() == 0
    s = R.analysis_slice(np.repeat(np.repeat(img, 4, 0), 4, 1), np.repeat(np.repeat(lab, 4, 0), 4, 1), 16, (1, 2))
    assert s.hu.shape == s.label.shape == (16, 16) and s.spacing == (2.0, 4.0)
    with pytest.raises(ValueError, match="one shape"):
        R.analysis_slice(img, lab[:4])


# ----------------------------------------------------------------------------------- hand-made known values


def test_constant_regions_give_w1_equal_to_hu_difference_and_contrast():
    hu, label = boxes()
    real_hu, syn_hu = hu.copy(), hu.copy()
    lesion = (slice(14, 24), slice(20, 40))
    label_l = label.copy()
    label_l[lesion] = 3
    real_hu[lesion], syn_hu[lesion] = -400.0, -500.0
    syn_hu[label_l == 1], syn_hu[label_l == 2] = -700.0, -700.0
    rep = R.compare_sets([(real_hu, label_l)], [(syn_hu, label_l)], size=64)
    lung = rep.regions["healthy_lung"]
    assert lung.hu_w1 == pytest.approx(100.0)  # W1 of two constants = |a - b|
    assert rep.regions["lesion"].hu_w1 == pytest.approx(100.0)
    assert rep.regions["body"].hu_w1 == pytest.approx(0.0)
    assert lung.mean_hu_real == pytest.approx(-800) and lung.mean_hu_synthetic == pytest.approx(-700)
    assert rep.contrast.real == pytest.approx(400.0) and rep.contrast.synthetic == pytest.approx(200.0)
    assert rep.contrast.ratio == pytest.approx(0.5) and rep.contrast.score == pytest.approx(0.5)
    # constants: no texture at all in either set, so texture ratios are 0/0 = 1 and distances 0
    assert lung.laplacian_real == 0 and lung.laplacian_ratio == 1.0 and lung.psd_distance == 0.0
    assert lung.glcm_distance == 0.0
    # W1 component: exp(-100 / max(sd_real = 0, 10 HU floor))
    assert lung.component_scores()["hu_w1"] == pytest.approx(math.exp(-10.0))


def test_ramp_gradient_and_checkerboard_laplacian_known_values():
    hu, label = boxes()
    x = np.arange(64, dtype=float)[:, None] * np.ones((1, 64))
    lung = label > 0
    ramp = hu.copy()
    ramp[lung] = (-900 + 10 * x)[lung]  # slope 10 HU/px along x
    steep = hu.copy()
    steep[lung] = (-1100 + 20 * x)[lung]
    checker = hu.copy()
    sign = np.where((np.add.outer(np.arange(64), np.arange(64)) % 2) == 0, 1.0, -1.0)
    checker[lung] = (-800 + 50 * sign)[lung]
    assert R.gradient_magnitude(ramp)[12:28, 14:50] == pytest.approx(10.0)
    assert R.abs_laplacian(ramp)[12:28, 14:50] == pytest.approx(0.0, abs=1e-9)
    assert R.abs_laplacian(checker)[12:28, 14:50] == pytest.approx(400.0)  # 8 * 50
    assert R.gradient_magnitude(checker)[12:28, 14:50] == pytest.approx(0.0, abs=1e-9)

    rep = R.compare_sets([(ramp, label)], [(steep, label)], size=64)
    m = rep.regions["healthy_lung"]
    assert m.gradient_real == pytest.approx(10.0) and m.gradient_synthetic == pytest.approx(20.0)
    assert m.gradient_ratio == pytest.approx(2.0) and m.laplacian_ratio == 1.0  # 0 / 0
    assert m.component_scores()["gradient"] == pytest.approx(0.5)  # q(2) = 1/2

    rep = R.compare_sets([(ramp, label)], [(checker, label)], size=64)
    m = rep.regions["healthy_lung"]
    assert m.laplacian_real == pytest.approx(0.0, abs=1e-9) and m.laplacian_synthetic == pytest.approx(400.0)
    assert m.laplacian_ratio is None and m.component_scores()["laplacian"] == 0.0  # real 0, synthetic not


def test_scaled_copy_has_known_ratios_spectrum_and_w1(real_set):
    c = -800.0
    scaled = [(c + 2 * (h - c), lab) for h, lab in real_set]
    rep = R.compare_sets(real_set, scaled)
    m = rep.regions["healthy_lung"]
    assert m.laplacian_ratio == pytest.approx(2.0) and m.gradient_ratio == pytest.approx(2.0)
    assert m.gradient_sd_ratio == pytest.approx(2.0)
    assert m.psd_distance == pytest.approx(math.log(4.0), abs=1e-6)  # power x4 at every frequency
    lung_values = np.concatenate([h[(lab == 1) | (lab == 2)] for h, lab in real_set]).astype(float)
    assert m.hu_w1 == pytest.approx(np.mean(np.abs(lung_values - c)), rel=1e-6)  # monotone map: W1 = E|v' - v|
    assert rep.contrast.ratio == pytest.approx(2.0)


def test_spectrum_glcm_and_ratio_helpers_known_values():
    flat = np.full((3, 12, 12), -800.0)
    assert R.radial_power_spectra(flat) == pytest.approx(0.0)
    spec = np.array([1.0, 2.0, 4.0])
    assert R.psd_distance(spec, spec) == 0.0
    assert R.psd_distance(spec, 4 * spec) == pytest.approx(math.log(4))
    real = {"contrast": np.array([1.0, 1.0]), "homogeneity": np.array([0.5, 0.5]), "energy": np.array([0.2, 0.2])}
    real["correlation"] = np.array([0.8, 0.8])
    syn = dict(real, contrast=np.array([3.0, 3.0]))
    assert R.glcm_distance(real, real) == 0.0
    assert R.glcm_distance(real, syn) == pytest.approx(0.5 / 4)  # |1 - 3| / (1 + 3), one feature of four
    assert R.ratio(0.0, 0.0) == 1.0 and R.ratio(1.0, 0.0) is None and R.ratio(3.0, 4.0) == 0.75
    assert R.ratio_score(0.25) == 0.25 and R.ratio_score(4.0) == 0.25 and R.ratio_score(-1.0) == 0.0


def test_diversity_known_value_with_explicit_and_hashed_groups():
    hu, label = boxes()
    sign = np.where((np.add.outer(np.arange(64), np.arange(64)) % 2) == 0, 1.0, -1.0)
    lung = label > 0

    def with_texture(amplitude: float) -> tuple[np.ndarray, np.ndarray]:
        out = hu.copy()
        out[lung] = (-800 + amplitude * sign)[lung]
        return out, label

    real = [with_texture(25), with_texture(-25)]  # differ by 50 HU at every lung pixel
    other_label = label.copy()
    other_label[10:30, 12:20] = 0
    syn = [with_texture(50), with_texture(-50), (with_texture(50)[0], other_label)]  # first two: 100 HU apart
    m = R.diversity_metric(
        [R.analysis_slice(h, lab, 64) for h, lab in real], [R.analysis_slice(h, lab, 64) for h, lab in syn]
    )
    assert m.real == pytest.approx(50.0) and m.synthetic == pytest.approx(100.0)
    assert m.ratio == pytest.approx(2.0) and m.score == pytest.approx(0.5)
    assert (m.count_real, m.count_synthetic) == (1, 1)  # hashing found the one shared mask
    rep = R.compare_sets(real, syn, size=64, groups=[[0, 1], [2]])
    assert rep.diversity.ratio == pytest.approx(2.0)
    collapsed = R.compare_sets(real, [with_texture(50), with_texture(50)], size=64)
    assert collapsed.diversity.synthetic == 0.0 and collapsed.diversity.score == 0.0
    assert R.compare_sets(real, syn[:1], size=64).diversity.ratio is None  # no shared mask: unavailable
    with pytest.raises(ValueError, match="outside"):
        R.compare_sets(real, syn, size=64, groups=[[0, 5]])


def test_segmenter_dice_known_values():
    hu, label = boxes()
    label = label.copy()
    label[14:24, 20:40] = 3
    slices = [(hu, label)]
    assert R.segmenter_dice(lambda h: label, slices) == {"lung": 1.0, "infection": 1.0}
    zero = R.segmenter_dice(lambda h: np.zeros_like(label), slices)
    assert zero == {"lung": 0.0, "infection": 0.0}
    half = label.copy()
    half[34:54, 12:52] = 0  # miss the right lung (800 of 1600 lung px)
    half[half == 3] = 1  # and call the infection lung
    assert R.segmenter_dice(lambda h: half, slices) == pytest.approx({"lung": 2 * 800 / 2400, "infection": 0.0})
    got = []
    R.segmenter_dice(lambda h, sp: got.append(sp) or label, [R.analysis_slice(hu, label, 64, (2.0, 2.0))], True)
    assert got == [(2.0, 2.0)]
    with pytest.raises(ValueError, match="shape"):
        R.segmenter_dice(lambda h: label[:10], slices)
    rep = R.compare_sets(slices, slices, size=64, segmenter=lambda h: half)
    assert rep.segmenter.lung_dice_real == pytest.approx(2 / 3) and rep.segmenter.score == pytest.approx(1.0)
    assert R.compare_sets(slices, slices, size=64).segmenter.note.startswith("no segmenter")


# ------------------------------------------------------------------------------------- identical / blurred / painted


def test_identical_sets_score_exactly_one(identical):
    for name, m in identical.regions.items():
        assert m.hu_w1 == 0.0, name
        assert m.laplacian_ratio == m.gradient_ratio == m.gradient_sd_ratio == 1.0, name
        assert m.glcm_distance == 0.0, name
        assert m.psd_distance in (0.0, None), name
        assert m.score == 1.0, name
    assert identical.regions["healthy_lung"].psd_distance == 0.0
    assert identical.contrast.ratio == 1.0
    assert identical.summary_score == 1.0
    d = identical.to_dict()
    assert d["summary_score"] == 1.0 and d["diversity"]["ratio"] is None and "diversity" in d["diversity"]["note"]
    assert "| healthy_lung |" in identical.to_markdown() and "**Summary score 1.000**" in identical.to_markdown()


def test_blurred_copy_scores_clearly_worse(real_set, identical):
    blurred = [(ndi.gaussian_filter(h, 1.5), lab) for h, lab in real_set]
    rep = R.compare_sets(real_set, blurred)
    for name in ("healthy_lung", "lesion"):
        assert rep.regions[name].laplacian_ratio < 0.5, name
        assert rep.regions[name].gradient_ratio < 0.8, name
    assert rep.regions["healthy_lung"].psd_distance > 2.0
    assert rep.summary_score < identical.summary_score - 0.3


def test_painted_control_is_worse_than_an_independent_real_like_set(real_set):
    rng = np.random.default_rng(0)
    paint = R.compare_sets(real_set, [painted(h, lab, rng) for h, lab in real_set])
    other = R.compare_sets(real_set, [textured_slice(100 + i) for i in range(6)])
    for name in ("healthy_lung", "body"):
        p, o = paint.regions[name], other.regions[name]
        assert p.psd_distance > 1.0 and p.psd_distance > 5 * o.psd_distance, name
        assert p.glcm_distance > 0.2 and p.glcm_distance > 5 * o.glcm_distance, name
        assert p.laplacian_ratio > 2.0, name  # white noise: far too much fine texture
    assert paint.summary_score < other.summary_score - 0.15
    assert other.summary_score > 0.85


def test_missing_lungs_and_regions_are_reported():
    hu, label = boxes()
    with pytest.raises(ValueError, match="no lung"):
        R.compare_sets([(hu, np.zeros_like(label))], [(hu, label)], size=64)
    rep = R.compare_sets([(hu, label)], [(hu, label)], size=64)
    les = rep.regions["lesion"]
    assert les.score is None and "no lesion" in les.note
    assert rep.components["region:lesion"] is None and rep.summary_score == 1.0


# ------------------------------------------------------------------------------------------------ files and CLI


def write_set(folder: Path, slices: list[tuple[np.ndarray, np.ndarray]], names: list[str]) -> Path:
    """Write (hu, label) slices as 2D NIfTI into folder/images and folder/labels (1.5 mm pixels)."""
    affine = np.diag([1.5, 1.5, 5.0, 1.0])
    for (hu, label), name in zip(slices, names, strict=True):
        save_nifti(hu.astype(np.float32), affine, folder / "images" / f"{name}.nii.gz", dtype=np.float32)
        save_nifti(label.astype(np.uint8), affine, folder / "labels" / f"{name}.nii.gz", dtype=np.uint8)
    return folder


def write_sample_folder(folder: Path, seeds: list[int]) -> Path:
    """A folder laid out like `cosingan-monai sample` output: two samples per condition, datalist with `source`."""
    entries, slices, names = [], [], []
    for k, seed in enumerate(seeds):
        label = textured_slice(seed, 64)[1]
        for j in range(2):
            name = f"syn_{2 * k + j:04d}"
            slices.append((textured_slice(1000 + 10 * seed + j, 64)[0], label))
            names.append(name)
            entries.append({"image": f"images/{name}.nii.gz", "label": f"labels/{name}.nii.gz", "source": f"c{k}"})
    write_set(folder, slices, names)
    write_json(folder / "datalist.json", {"training": entries, "validation": [], "test": []})
    return folder


def test_cli_end_to_end_writes_json_and_markdown(tmp_path):
    real = write_set(tmp_path / "real", [textured_slice(i, 64) for i in range(4)], [f"r{i}" for i in range(4)])
    syn = write_sample_folder(tmp_path / "syn", [7, 8])
    out = tmp_path / "out"
    args = ["realism", "--real", str(real), "--synthetic", str(syn), "--out", str(out), "--size", "64"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "| healthy_lung |" in result.output and "Summary score" in result.output
    doc = json.loads((out / "realism.json").read_text())
    assert (out / "realism.md").read_text(encoding="utf-8") in result.output
    assert doc["n_real"] == 4 and doc["n_synthetic"] == 4 and doc["size"] == 64
    assert doc["settings"]["synthetic_groups"] == "datalist source"
    assert doc["diversity"]["count_synthetic"] == 2 and doc["diversity"]["ratio"] > 0.3
    assert 0.5 < doc["summary_score"] < 1.0
    assert doc["segmenter"]["lung_dice_synthetic"] is None and "no segmenter" in doc["segmenter"]["note"]
    assert not list(out.glob("*.tmp-*"))

    dl = tmp_path / "real_list.json"  # the same real set as a datalist gives the same numbers
    items = [{"image": f"real/images/r{i}.nii.gz", "label": f"real/labels/r{i}.nii.gz"} for i in range(4)]
    write_json(dl, {"training": items[:3], "validation": items[3:]})
    again, _ = run_realism(dl, syn, size=64)
    assert again.summary_score == pytest.approx(doc["summary_score"])

    # a training list repeats files to fill its steps: each file is one slice, not a group of identical samples
    listed = json.loads((syn / "datalist.json").read_text())["training"]
    cycled = tmp_path / "cycled.json"
    write_json(
        cycled, {"training": [dict(e, image=str(syn / e["image"]), label=str(syn / e["label"])) for e in listed * 3]}
    )
    repeated, _ = run_realism(real, cycled, size=64)
    assert repeated.n_synthetic == 4 and repeated.diversity.count_synthetic == 2
    assert repeated.diversity.ratio == pytest.approx(doc["diversity"]["ratio"])


def test_cli_bad_inputs_name_the_file(tmp_path):
    real = write_set(tmp_path / "real", [textured_slice(i, 64) for i in range(2)], ["r0", "r1"])
    bad = write_set(tmp_path / "bad", [textured_slice(5, 64)], ["s0"])
    save_nifti(np.zeros((32, 32), np.uint8), np.diag([3.0, 3.0, 5.0, 1.0]), bad / "labels" / "s0.nii.gz")
    cases = {
        str(bad): "s0.nii.gz",  # label grid does not match its image
        str(tmp_path / "nothing"): "does not exist",
        str(tmp_path / "real" / "labels"): "want images/",
    }
    (tmp_path / "empty" / "images").mkdir(parents=True)
    cases[str(tmp_path / "empty")] = "no NIfTI"
    solid = np.where(boxes()[1] > 0, 40.0, boxes()[0])  # all-zero label = infection-only: no lung found in solid
    nolung = write_set(tmp_path / "nolung", [(solid, np.zeros((64, 64), np.uint8))], ["z"])
    cases[str(nolung)] = "no lung"
    (tmp_path / "broken" / "images").mkdir(parents=True)
    (tmp_path / "broken" / "labels").mkdir()
    (tmp_path / "broken" / "images" / "x.nii.gz").write_bytes(b"not a nifti")
    (tmp_path / "broken" / "labels" / "x.nii.gz").write_bytes(b"not a nifti")
    cases[str(tmp_path / "broken")] = "x.nii.gz"
    for syn, expected in cases.items():
        result = CliRunner().invoke(main, ["realism", "--real", str(real), "--synthetic", syn, "--size", "64"])
        assert result.exit_code == 1, (syn, result.output)
        assert result.output.startswith("error: ") and expected in result.output, (syn, result.output)
        assert "Traceback" not in result.output


class _ThresholdNet(torch.nn.Module):
    """A stand-in segmenter on [0, 1]-windowed input: 1 lung for HU in (-950, -650), 2 infection in (-650, -350)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lung = ((x > 0.2) & (x < 0.4)).float()
        infection = ((x >= 0.4) & (x < 0.6)).float()
        return torch.cat([1 - lung - infection, lung, infection], dim=1)


def test_cli_segmenter_bundle_reports_dice(tmp_path):
    bundle = tmp_path / "seg"
    (bundle / "models").mkdir(parents=True)
    (bundle / "configs" / "presets").mkdir(parents=True)
    torch.jit.script(_ThresholdNet()).save(str(bundle / "models" / "model.ts"))
    write_json(bundle / "configs" / "inference.json", {"image_size": 512, "fov_mm": 96.0})
    write_json(bundle / "configs" / "presets" / "demo.json", {"image_size": 64})
    (bundle / "logs").mkdir()
    (bundle / "logs" / "train_preset.txt").write_text("demo\n")
    seg = BundleSegmenter(bundle)
    assert seg.image_size == 64 and "demo preset" in seg.note
    hu, label = boxes()
    pred = seg(hu, (1.5, 1.5))  # 64 px of 1.5 mm = the 96 mm field of view at 64 px: no resampling
    assert pred.shape == hu.shape and set(np.unique(pred).tolist()) <= {0, 1, 3}
    assert R.dice(pred > 0, label > 0) == 1.0

    real = write_set(tmp_path / "real", [textured_slice(i, 64) for i in range(3)], ["a", "b", "c"])
    result = CliRunner().invoke(
        main, ["realism", "--real", str(real), "--synthetic", str(real), "--size", "64", "--segmenter", str(bundle)]
    )
    assert result.exit_code == 0, result.output
    doc = run_realism(real, real, size=64, segmenter=bundle)[0].to_dict()["segmenter"]
    assert 0.5 < doc["lung_dice_real"] <= 1.0 and doc["lung_dice_synthetic"] == doc["lung_dice_real"]
    assert doc["score"] == 1.0 and "covid_seg_2d bundle" in doc["note"]
    (bundle / "models" / "model.ts").write_bytes(b"garbage")
    result = CliRunner().invoke(
        main, ["realism", "--real", str(real), "--synthetic", str(real), "--segmenter", str(bundle)]
    )
    assert result.exit_code == 1 and "model.ts" in result.output and "TorchScript" in result.output


# --------------------------------------------------------------------------------------------------- real data


@pytest.mark.shared
def test_medseg_blurred_and_painted_copies_score_worse(shared_data):
    folder = shared_data / "medseg100-dev"
    real = []
    for image in sorted((folder / "images").glob("*.png"))[:6]:
        real += case_slices(image, find_label(image), 128)
    identical = R.compare_sets(real, real)
    rng = np.random.default_rng(0)
    blurred = R.compare_sets(real, [(ndi.gaussian_filter(s.hu, 1.5), s.label) for s in real])
    paint = R.compare_sets(real, [painted(s.hu, s.label, rng) for s in real])
    assert identical.summary_score == 1.0
    lung_b, lung_p = blurred.regions["healthy_lung"], paint.regions["healthy_lung"]
    assert lung_b.laplacian_ratio < 0.3 and lung_b.psd_distance > 2.0
    assert blurred.summary_score < 0.7
    assert lung_p.psd_distance > 0.5 and lung_p.glcm_distance > 0.1
    assert paint.summary_score < 0.85
    assert -800 < lung_b.mean_hu_real < -500  # real healthy lung, HU from the windowed PNGs
