"""Static checks of the downstream bundles: metadata schema, network I/O, required ids, MONAI Label ids, presets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cosingan_monai.pipeline import bundle_runner as bundles

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "cosingan_monai" / "schema" / "meta_schema.json"
DOWNSTREAM = ("covid_slice_classifier", "covid_seg_2d", "covid_seg_3d")
SEG = ("covid_seg_2d", "covid_seg_3d")
CONFIGS = ("metadata", "train", "inference", "evaluate", "multi_gpu_train")


def _cfg(name: str, config: str) -> dict:
    return json.loads((REPO / "bundles" / name / "configs" / f"{config}.json").read_text())


def _parser(name: str, configs: tuple[str, ...], preset: str | None = None, **overrides):
    from monai.bundle import ConfigParser

    root = REPO / "bundles" / name
    parser = ConfigParser()
    parser.read_config([str(root / "configs" / f"{c}.json") for c in configs])
    parser.read_meta(str(root / "configs" / "metadata.json"))
    if preset is not None:
        workflow = "inference" if configs == ("inference",) else "train"
        for key, value in bundles.preset_overrides(root, workflow, preset).items():
            parser[key] = value
    for key, value in overrides.items():
        parser[key] = value
    return parser


@pytest.mark.parametrize("name", DOWNSTREAM)
def test_layout_is_model_zoo(name):
    root = REPO / "bundles" / name
    for config in CONFIGS:
        assert (root / "configs" / f"{config}.json").is_file(), config
    for extra in (
        "configs/logging.conf",
        "docs/README.md",
        "LICENSE",
        *(f"configs/presets/{p}.json" for p in bundles.PRESETS),
    ):
        assert (root / extra).is_file(), extra
    assert "Apache License" in (root / "LICENSE").read_text()


@pytest.mark.parametrize("name", DOWNSTREAM)
def test_self_contained_stock_monai_only(name):
    for path in (REPO / "bundles" / name).rglob("*.json"):
        text = path.read_text(encoding="utf-8")
        assert "cosingan_monai" not in text, path
        assert "$import scripts" not in text, path
    assert not (REPO / "bundles" / name / "scripts").exists()


@pytest.mark.parametrize("name", DOWNSTREAM)
def test_verify_metadata_offline(name, tmp_path):
    from monai.bundle import verify_metadata

    meta = REPO / "bundles" / name / "configs" / "metadata.json"
    verify_metadata(meta_file=str(meta), filepath=str(SCHEMA))  # raises on any violation
    # the schema has teeth: a metadata without network_data_format, or with a non-integer channel count, fails
    broken = json.loads(meta.read_text())
    del broken["network_data_format"]
    (tmp_path / "a.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="network_data_format"):
        verify_metadata(meta_file=str(tmp_path / "a.json"), filepath=str(SCHEMA))
    broken = json.loads(meta.read_text())
    broken["network_data_format"]["outputs"]["pred"]["num_channels"] = "three"
    (tmp_path / "b.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError):
        verify_metadata(meta_file=str(tmp_path / "b.json"), filepath=str(SCHEMA))


@pytest.mark.parametrize("name", (*DOWNSTREAM, "cosingan_train", "cosingan_sample"))
def test_metadata_uses_no_deprecated_ids(name):
    """MONAI renames deprecated metadata ids with a warning on every run; the bundles use the current names."""
    from monai.bundle.utils import DEPRECATED_ID_MAPPING

    meta = _cfg(name, "metadata")
    assert not set(DEPRECATED_ID_MAPPING) & set(meta), name
    assert set(DEPRECATED_ID_MAPPING.values()) <= set(meta), name
    assert meta["schema"].endswith("meta_schema_20240725.json")


@pytest.mark.parametrize("name", DOWNSTREAM)
def test_verify_net_in_out(name):
    from monai.bundle import verify_net_in_out

    root = REPO / "bundles" / name
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(root / "configs" / "metadata.json"),
        config_file=str(root / "configs" / "inference.json"),
        device="cpu",
        n=2,
    )


@pytest.mark.parametrize("name", SEG)
def test_seg_metadata_channels_for_monai_label(name):
    meta = _cfg(name, "metadata")["network_data_format"]
    assert meta["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "lung", "2": "infection"}
    assert meta["inputs"]["image"]["num_channels"] == 1
    assert len(meta["inputs"]["image"]["spatial_shape"]) == (2 if name == "covid_seg_2d" else 3)


@pytest.mark.parametrize("name", DOWNSTREAM)
def test_required_ids_and_monai_label_ids(name):
    train, infer = _cfg(name, "train"), _cfg(name, "inference")
    for key in ("bundle_root", "device", "dataset_dir", "datalist", "output_dir", "tensorboard_dir", "amp"):
        assert key in train, key
    assert train["amp"] == infer["amp"] == "$torch.cuda.is_available()"
    assert train["train"]["trainer"]["amp"] == "@amp"
    for key in ("network_def", "network", "preprocessing", "postprocessing", "inferer", "device", "bundle_root"):
        assert key in infer, key
    for key in ("dataset", "dataloader", "handlers", "trainer", "inferer"):
        assert key in train["train"], key
    assert "data" in train["train"]["dataset"] and "data" in train["validate"]["dataset"]
    # the network of training and inference is the same definition
    assert train["network_def"] == infer["network_def"]


@pytest.mark.parametrize("name", DOWNSTREAM)
def test_config_workflow_properties_all_defined(name, tmp_path):
    """ConfigWorkflow.check_properties raises KeyError on a missing required id (docs/design.md); none is missing."""
    from monai.bundle import ConfigWorkflow

    root = REPO / "bundles" / name / "configs"
    entry = {"image": "missing.nii.gz", "label": 0 if name == "covid_slice_classifier" else "missing_label.nii.gz"}
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [entry], "validation": [entry], "test": [entry]}))
    for workflow, files in (
        ("train", ["train.json"]),
        ("infer", ["inference.json"]),
        ("train", ["train.json", "evaluate.json"]),
    ):
        wf = ConfigWorkflow(
            config_file=[str(root / f) for f in files],
            meta_file=str(root / "metadata.json"),
            logging_file=False,
            workflow_type=workflow,
            bundle_root=str(tmp_path),
            datalist=str(datalist),
            cache_rate=0,
        )
        wf.initialize()
        assert wf.check_properties() == [], (workflow, files)


@pytest.mark.parametrize("name", DOWNSTREAM)
def test_checkpoint_saver_keeps_best_key_metric_as_model_pt(name):
    handlers = _cfg(name, "train")["validate"]["handlers"]
    saver = next(h for h in handlers if h["_target_"] == "CheckpointSaver")
    assert saver["save_key_metric"] is True and saver["key_metric_filename"] == "model.pt"
    assert saver["save_dir"] == "@ckpt_dir"
    targets = [h["_target_"] for h in _cfg(name, "train")["train"]["handlers"]]
    assert {"ValidationHandler", "StatsHandler", "TensorBoardStatsHandler"} <= set(targets)
    writers = [
        h.get("summary_writer")
        for h in _cfg(name, "train")["train"]["handlers"] + handlers
        if "TensorBoard" in h["_target_"]
    ]
    assert writers and set(writers) == {"@writer"}  # one shared SummaryWriter per run


@pytest.mark.parametrize("name", DOWNSTREAM)
def test_full_preset_equals_train_json_defaults(name):
    """train.json alone is the full preset (CONVENTIONS.md): full.json must not change anything."""
    train = _cfg(name, "train")
    full = json.loads((REPO / "bundles" / name / "configs" / "presets" / "full.json").read_text())
    assert full, "full.json documents the full sizes"
    for key, value in full.items():
        assert train[key] == value, key


@pytest.mark.parametrize("name", DOWNSTREAM)
@pytest.mark.parametrize("preset", bundles.PRESETS)
def test_presets_apply_to_every_config(name, preset):
    """Preset ids exist in train.json and inference.json, so an overlay works with each config (no train# ids)."""
    overlay = json.loads((REPO / "bundles" / name / "configs" / "presets" / f"{preset}.json").read_text())
    for config in ("train", "inference"):
        kept = bundles.preset_overrides(REPO / "bundles" / name, config if config == "train" else "inference", preset)
        if config == "train":
            assert kept == overlay
        assert all(not k.startswith("train#") for k in kept)
    parser = _parser(name, ("inference",), preset)
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, torch.nn.Module)
    assert parser.get_parsed_content("image_size") == overlay.get("image_size", _cfg(name, "train")["image_size"])


@pytest.mark.parametrize("name", DOWNSTREAM)
def test_strong_aug_switch_chooses_transform_list(name):
    light = [type(t).__name__ for t in _parser(name, ("train",), "test").get_parsed_content("train#random_transforms")]
    strong = [
        type(t).__name__
        for t in _parser(name, ("train",), "test", strong_aug=True).get_parsed_content("train#random_transforms")
    ]
    assert len(strong) > len(light)
    elastic = "Rand3DElasticd" if name == "covid_seg_3d" else "Rand2DElasticd"
    for needed in (
        "RandFlipd",
        "RandAffined",
        elastic,
        "RandScaleIntensityd",
        "RandShiftIntensityd",
        "RandGaussianNoised",
        "RandAdjustContrastd",
        "RandGaussianSmoothd",
        "RandGaussianSharpend",
    ):
        assert needed in strong, needed
    assert elastic not in light


@pytest.mark.parametrize("name", SEG)
def test_seg_labels_mapped_and_nsd_tolerances_in_mm(name):
    parser = _parser(name, ("train",), "test")
    maps = [
        t for t in parser.get_parsed_content("train#deterministic_transforms") if type(t).__name__ == "MapLabelValued"
    ]
    assert len(maps) == 1
    assert list(maps[0].mapper.orig_labels) == [1, 2, 3] and list(maps[0].mapper.target_labels) == [1, 1, 2]
    pixdim = parser.get_parsed_content("pixdim_mm")
    assert parser.get_parsed_content("nsd_tolerance_px") == pytest.approx([1.0 / pixdim, 3.0 / pixdim])
    metrics = parser.get_parsed_content("validate#additional_metrics")
    assert metrics["val_nsd_lung"].metric_fn.class_thresholds == pytest.approx([1.0 / pixdim])
    assert metrics["val_nsd_infection"].metric_fn.class_thresholds == pytest.approx([3.0 / pixdim])


def test_seg2d_inference_uses_slice_inferer_and_monai_label_workaround():
    parser = _parser("covid_seg_2d", ("inference",), "test")
    inferer = parser.get_parsed_content("inferer")
    assert type(inferer).__name__ == "SliceInferer" and inferer.spatial_dim == 2
    names = [t["_target_"] for t in _cfg("covid_seg_2d", "inference")["preprocessing"]["transforms"]]
    i = names.index("Spacingd")
    assert names[i - 2 : i] == ["CopyItemsd", "DeleteItemsd"] and names[i + 1 : i + 3] == ["CopyItemsd", "DeleteItemsd"]
    assert names[-2] == "DivisiblePadd"


@pytest.mark.parametrize("name", DOWNSTREAM)
def test_spacingd_survives_monai_label_image_path(name, tmp_path):
    """MONAI Label passes a string `image_path`; MONAI 1.6 Spacingd alone fails on it, our preprocessing does not."""
    import nibabel as nib
    import numpy as np

    path = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.full((40, 40, 3), -800, np.float32), np.diag([2.0, 2.0, 5.0, 1.0])), path)
    pre = _parser(name, ("inference",), "test").get_parsed_content("preprocessing")
    out = pre({"image": str(path), "image_path": str(path)})
    item = out[0] if isinstance(out, list) else out
    assert item["image_path"] == str(path)
    assert float(item["image"].max()) == pytest.approx((-800 + 1250) / 1500, abs=1e-4)


@pytest.mark.parametrize("name", SEG)
def test_tensorboard_images_in_radiological_display(name):
    """The validation images (val/image, val/label, val/prediction; a stock TensorBoardStatsHandler with the bundle's
    `tensorboard_images` writer) show RAS (x, y) slices as the report does (data.io.ras_to_display): patient right on
    the image's left, anterior at the top; the 3D bundle shows the axial slice with the most infection.
    tests/test_tensorboard.py reads them back from a training's event file."""
    import numpy as np

    from cosingan_monai.data.io import ras_to_display

    parser = _parser(name, ("train",))
    handlers = _cfg(name, "train")["validate"]["handlers"]
    assert not any(h["_target_"] == "TensorBoardImageHandler" for h in handlers)  # its tags are input_0_HW_0, ...
    assert sum(h.get("epoch_event_writer") == "@tensorboard_images" for h in handlers) == 1
    views = parser.get_parsed_content("tensorboard_views")
    shape = (5, 7, 3) if name == "covid_seg_3d" else (5, 7)
    ras = torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(1, *shape)
    label = torch.zeros(3, *shape)
    label[0] = 1
    label[0, 0, 0], label[1, 0, 0], label[2, 4, 6] = 0, 1, 1  # lung at x=y=0, infection at the far corner
    label[0, 4, 6] = 0
    if name == "covid_seg_3d":
        label[2, 4, 6, :] = 0
        label[0, 4, 6, :] = 1
        label[:, 4, 6, 1] = torch.tensor([0.0, 0.0, 1.0])  # infection only at z=1: the slice shown
    image, truth, pred = views({"image": ras, "label": label, "pred": label})
    z = 1 if name == "covid_seg_3d" else None
    want = ras_to_display(ras[0].numpy() if z is None else ras[0, ..., z].numpy())
    np.testing.assert_array_equal(image.numpy(), want)
    classes = label.argmax(0).numpy() if z is None else label.argmax(0)[..., z].numpy()
    np.testing.assert_array_equal(truth.numpy(), ras_to_display(classes) / 2.0)
    np.testing.assert_array_equal(pred.numpy(), truth.numpy())
    assert truth[0, 0] == 1.0 and truth[-1, -1] == 0.5  # infection (x, y max): top left; lung (x, y min): bottom right


@pytest.mark.parametrize("name", DOWNSTREAM)
def test_logs_hold_no_progress_bar_and_one_loss_line_per_epoch(name):
    """The ignite ProgressBar is for a console only (a log file would hold its fragments); train loss per epoch."""
    handlers = _cfg(name, "train")["train"]["handlers"]
    bar = next(h for h in handlers if h["_target_"] == "ignite.handlers.ProgressBar")
    assert bar["_disabled_"] == "$not sys.stdout.isatty()"
    stats = next(h for h in handlers if h["_target_"] == "StatsHandler")
    parser = _parser(name, ("train",))
    index = handlers.index(stats)
    event_filter = parser.get_parsed_content(f"train#handlers#{index}#iteration_log")

    class _State:
        epoch_length = 4

    class _Engine:
        state = _State()

    assert [it for it in range(1, 13) if event_filter(_Engine(), it)] == [4, 8, 12]
    assert any(h.get("tag_name") == "learning_rate" for h in handlers)


@pytest.mark.parametrize("preset", ["demo", "full"])
def test_gan_progress_bar_only_on_a_terminal(preset, monkeypatch):
    """cosingan_train's per-scale bar follows the console, like the downstream bundles' ProgressBar: under the
    pipeline (stdout a file) it is off, so logs/train.log holds no bar updates; the test preset turns it off always."""
    import io
    import sys

    monkeypatch.setattr(sys, "stdout", io.StringIO())  # not a tty, as under the pipeline's subprocess
    assert _parser("cosingan_train", ("train",), preset).get_parsed_content("progress") is False
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert _parser("cosingan_train", ("train",), preset).get_parsed_content("progress") is True
    assert _parser("cosingan_train", ("train",), "test").get_parsed_content("progress") is False
