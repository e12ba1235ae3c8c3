"""The MONAI Label app builder: presets baked into the app's bundles, app label convention, studies, CLI, safety."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from monai.bundle import ConfigParser

from cosingan_monai.cli import main as cli_main
from cosingan_monai.core.errors import CaseError
from cosingan_monai.label import app_builder as la

REPO = Path(__file__).resolve().parents[1]
BUNDLES = la.SEG_BUNDLES


def preset_network(bundle: Path, preset: str | None) -> torch.nn.Module:
    """network_def of train.json (+ a preset overlay) built the way `monai.bundle run` would."""
    files = [str(bundle / "configs" / "train.json")]
    if preset is not None:
        files.append(str(bundle / "configs" / "presets" / f"{preset}.json"))
    parser = ConfigParser()
    parser.read_config(files)
    return parser.get_parsed_content("network_def", instantiate=True)


def make_run(root: Path, preset: str | None = "test") -> Path:
    """A run folder holding copies of the repo's segmenter bundles, each with a model.pt of the preset's network."""
    for name in BUNDLES:
        dst = root / "bundles" / name
        shutil.copytree(REPO / "bundles" / name, dst, ignore=shutil.ignore_patterns("models", "eval", "data"))
        (dst / "models").mkdir()
        torch.manual_seed(0)
        torch.save(preset_network(dst, preset).state_dict(), dst / "models" / "model.pt")
    return root


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file below root, to prove a folder was not modified."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One app built through the CLI from a test-preset run with 3 small phantom studies (2 labeled)."""
    root = tmp_path_factory.mktemp("label_app")
    run = make_run(root / "run")
    before = tree_digest(run)
    app_dir = root / "app"
    args = ["label-app", "--run", str(run), "--out", str(app_dir), "--cases", "3", "--labeled", "2"]
    args += ["--size", "48", "--slices", "8", "--seed", "7", "--port", "8123"]
    result = CliRunner().invoke(cli_main, args)
    assert result.exit_code == 0, result.output
    return {"run": run, "app": app_dir, "before": before, "output": result.output}


def test_cli_prints_loopback_server_command(built: dict) -> None:
    out = built["output"]
    line = next(x for x in out.splitlines() if "start_server" in x)
    for piece in ("--host 127.0.0.1", "--port 8123", "--conf models all", "--conf zoo_source github"):
        assert piece in line
    assert f"--app {built['app'].resolve()}" in line
    assert f"--studies {built['app'].resolve() / 'studies'}" in line
    assert "(2 labeled, 1 unlabeled)" in out


def test_run_folder_is_not_modified(built: dict) -> None:
    assert tree_digest(built["run"]) == built["before"]


def test_app_layout_and_provenance(built: dict) -> None:
    app = built["app"]
    assert (app / "main.py").read_text() == (REPO / "cosingan_monai" / "label" / "template" / "main.py").read_text()
    served = sorted(p.name for p in (app / "model").iterdir())
    assert served == sorted(f"{b}_segmentation" for b in BUNDLES)
    info = json.loads((app / "label_app.json").read_text())
    assert info["labels"] == {"lung": 1, "infection": 2}
    assert info["labeled"] == ["phantom_000", "phantom_001"] and info["unlabeled"] == ["phantom_002"]
    for name in BUNDLES:
        model = app / "model" / f"{name}_segmentation"
        assert info["models"][model.name]["preset"] == "test"
        assert not (model / "configs" / "presets").exists()
        src = built["run"] / "bundles" / name / "models" / "model.pt"
        assert (model / "models" / "model.pt").read_bytes() == src.read_bytes()
    assert not list(app.parent.glob(".app.tmp-*")), "the temporary build folder was left behind"


@pytest.mark.parametrize("name", BUNDLES)
def test_app_configs_fit_the_weights_and_preset(built: dict, name: str) -> None:
    """MONAI Label reads inference.json/train.json alone: they must carry the preset and load model.pt strictly."""
    model = built["app"] / "model" / f"{name}_segmentation"
    preset = json.loads((REPO / "bundles" / name / "configs" / "presets" / "test.json").read_text())
    weights = torch.load(model / "models" / "model.pt", weights_only=True)
    for config in ("inference.json", "train.json"):
        parser = ConfigParser()
        parser.read_config(str(model / "configs" / config))
        net = parser.get_parsed_content("network_def", instantiate=True)
        net.load_state_dict(weights, strict=True)
        for key, value in preset.items():
            parent = key.rpartition("#")[0] or key
            if key in la.APP_TRAIN_OVERRIDES and config == "train.json":
                assert parser.get(key) == la.APP_TRAIN_OVERRIDES[key], (config, key)
            elif config == "train.json" or parser.get(parent) is not None:
                assert parser.get(key) == value, (config, key)
        if config == "train.json":
            assert parser.get("val_interval") == 1  # MONAI Label's short runs must validate, or no model.pt
    inference = json.loads((model / "configs" / "inference.json").read_text())
    original = json.loads((REPO / "bundles" / name / "configs" / "inference.json").read_text())
    assert set(inference) == set(original), "ids absent from inference.json must not be added by the preset"


@pytest.mark.parametrize("name", BUNDLES)
def test_train_label_maps_read_app_labels(built: dict, name: str) -> None:
    """The datastore holds 0 bg / 1 lung / 2 infection, so every MapLabelValued in the app's train.json is identity."""
    train = (built["app"] / "model" / f"{name}_segmentation" / "configs" / "train.json").read_text()
    maps = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if str(node.get("_target_", "")).endswith("MapLabelValued"):
                maps.append(node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(train))
    source = (REPO / "bundles" / name / "configs" / "train.json").read_text()
    assert len(maps) == source.count("MapLabelValued")
    for m in maps:
        assert m["orig_labels"] == m["target_labels"] == [1, 2]


def test_studies_hold_phantoms_in_app_labels(built: dict) -> None:
    app = built["app"]
    studies = sorted(p.name for p in (app / "studies").glob("*.nii.gz"))
    assert studies == ["phantom_000.nii.gz", "phantom_001.nii.gz", "phantom_002.nii.gz"]
    finals = sorted(p.name for p in (app / "studies" / "labels" / "final").glob("*.nii.gz"))
    assert finals == ["phantom_000.nii.gz", "phantom_001.nii.gz"]
    for name in finals:
        truth = np.asarray(nib.load(app / "phantom" / "Lung_and_Infection_Mask" / name).dataobj)
        label_img = nib.load(app / "studies" / "labels" / "final" / name)
        label = np.asarray(label_img.dataobj)
        assert set(np.unique(label).tolist()) == {0, 1, 2}
        np.testing.assert_array_equal(label == 1, np.isin(truth, (1, 2)))
        np.testing.assert_array_equal(label == 2, truth == 3)
        src = nib.load(app / "phantom" / "COVID-19-CT-Seg_20cases" / name)
        img = nib.load(app / "studies" / name)
        np.testing.assert_allclose(img.affine, src.affine, atol=1e-4)
        np.testing.assert_array_equal(np.asarray(img.dataobj), np.asarray(src.dataobj))
        np.testing.assert_allclose(label_img.affine, src.affine, atol=1e-4)


def test_to_app_labels() -> None:
    ctseg = np.array([[0, 1, 2, 3]], dtype=np.uint8)
    np.testing.assert_array_equal(la.to_app_labels(ctseg), [[0, 1, 1, 2]])


def test_existing_out_is_refused_then_replaced_with_force(built: dict, tmp_path: Path) -> None:
    target = tmp_path / "app"
    shutil.copytree(built["app"], target)
    (target / "marker").write_text("x")
    with pytest.raises(CaseError, match="not empty"):
        la.build_label_app(built["run"], target, cases=1, labeled=1, size=32, slices=4)
    app = la.build_label_app(built["run"], target, force=True, cases=1, labeled=0, size=32, slices=4)
    assert not (target / "marker").exists()
    assert app.unlabeled == ["phantom_000"] and app.labeled == []
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(CaseError, match="not an app written by label-app"):
        la.build_label_app(built["run"], foreign, force=True, cases=1, labeled=1, size=32, slices=4)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_studies_folder_in_ctseg_layout(built: dict, tmp_path: Path) -> None:
    """--studies: volumes are found outside label folders, labels by io.find_label, and converted to app values."""
    src = built["app"] / "phantom"
    before = tree_digest(src)
    pairs = la.scan_studies(src)
    assert [(i.name, lab.parent.name if lab else None) for i, lab in pairs] == [
        ("phantom_000.nii.gz", "Lung_and_Infection_Mask"),
        ("phantom_001.nii.gz", "Lung_and_Infection_Mask"),
        ("phantom_002.nii.gz", "Lung_and_Infection_Mask"),
    ]
    app = la.build_label_app(built["run"], tmp_path / "app", studies=src)
    assert app.labeled == ["phantom_000", "phantom_001", "phantom_002"]
    assert tree_digest(src) == before
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaseError, match="no NIfTI volumes"):
        la.scan_studies(tmp_path / "empty")


def test_preset_matched_from_weights(tmp_path: Path) -> None:
    """Without a record, the preset is the one whose network fits model.pt; a tie that matters is an error."""
    run = make_run(tmp_path / "run", preset=None)  # weights of train.json alone = the full preset's network
    for name in BUNDLES:
        bundle = run / "bundles" / name
        presets = bundle / "configs" / "presets"
        for overlay in presets.glob("*.json"):  # keep only test (other network) and full
            if overlay.stem not in ("test", "full"):
                overlay.unlink()
        settings = la.bundle_settings(bundle)
        assert (settings.preset, settings.source) == ("full", "matched")
        assert la.bundle_settings(make_run(tmp_path / f"run_{name}", "test") / "bundles" / name).preset == "test"
        with pytest.raises(CaseError, match="weights fit the network of no preset"):
            la.bundle_settings(bundle, "test")
        with pytest.raises(CaseError, match="no preset 'huge'"):
            la.bundle_settings(bundle, "huge")
        (presets / "wide.json").write_text(json.dumps({"image_size": 96}))  # same network, other inference
        with pytest.raises(CaseError, match=r"weights fit presets \['full', 'wide'\]; pass --preset"):
            la.bundle_settings(bundle)
        given = la.bundle_settings(bundle, "wide")
        assert (given.preset, given.source, given.overrides) == ("wide", "given", {"image_size": 96})


def test_recorded_run_settings_are_baked(tmp_path: Path) -> None:
    """A run recorded by bundles.run_bundle (logs/train_args.json) wins over matching; run paths are dropped."""
    from cosingan_monai.pipeline.bundle_runner import preset_overrides

    run = make_run(tmp_path / "run", preset="test")
    bundle = run / "bundles" / BUNDLES[0]
    args = {"config_file": ["x"], "bundle_root": "/elsewhere", "datalist": "/elsewhere/d.json", "device": "cuda:0"}
    args |= preset_overrides(bundle, "train", "test") | {"learning_rate": 0.0123, "train#trainer#max_epochs": 99}
    (bundle / "logs").mkdir()
    (bundle / "logs" / "train_args.json").write_text(json.dumps(args))
    (bundle / "logs" / "train_preset.txt").write_text("test\n")
    settings = la.bundle_settings(bundle)
    assert (settings.preset, settings.source) == ("test", "recorded")
    assert settings.overrides["learning_rate"] == 0.0123
    assert not set(settings.overrides) & {
        "config_file",
        "bundle_root",
        "datalist",
        "device",
        "train#trainer#max_epochs",
    }
    app = la.build_label_app(run, tmp_path / "app", cases=1, labeled=1, size=32, slices=4)
    train = json.loads((app.models[la.app_model_name(BUNDLES[0])] / "configs" / "train.json").read_text())
    assert train["learning_rate"] == 0.0123 and train["bundle_root"] != "/elsewhere"
    args["network_def#channels"] = [4, 8, 16, 32, 64]
    (bundle / "logs" / "train_args.json").write_text(json.dumps(args))
    with pytest.raises(CaseError, match="weights do not fit the network recorded"):
        la.bundle_settings(bundle)


def test_bad_runs_fail_with_the_file_named(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_main, ["label-app", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "a")])
    assert result.exit_code == 1 and "nope: run folder does not exist" in result.output
    run = make_run(tmp_path / "run")
    ckpt = run / "bundles" / BUNDLES[0] / "models" / "model.pt"
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(CaseError, match="not a readable PyTorch checkpoint") as err:
        la.build_label_app(run, tmp_path / "app")
    assert err.value.path == ckpt
    ckpt.unlink()
    result = CliRunner().invoke(cli_main, ["label-app", "--run", str(run), "--out", str(tmp_path / "a")])
    assert result.exit_code == 1 and f"{ckpt}: missing" in result.output
    assert not (tmp_path / "a").exists()
