"""`cosingan-monai pipeline` end to end in the test preset on a phantom case, resume, and bad-input refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from monai.bundle import ConfigParser
from PIL import Image

from cosingan_monai.cli import main
from cosingan_monai.phantom.generator import write_phantom_dataset
from cosingan_monai.pipeline import bundle_runner as bundles
from cosingan_monai.pipeline.case_prep import prepare_case, write_volume_anatomies
from cosingan_monai.pipeline.downstream import CLASSIFIER_EPOCHS
from cosingan_monai.pipeline.pipeline import PIPELINE_EPOCHS, PIPELINE_PRESETS, validation
from cosingan_monai.pipeline.report import OVERLAY_LISTS

DOWNSTREAM = ("covid_slice_classifier", "covid_seg_2d", "covid_seg_3d")


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, Path]:
    """One small phantom training case and two evaluation cases (one healthy), COVID-19-CT-Seg layout."""
    root = tmp_path_factory.mktemp("phantom")
    train = write_phantom_dataset(root / "train", cases=1, seed=0, size=64, slices=12, healthy_fraction=0.0)
    write_phantom_dataset(root / "eval", cases=2, seed=50, size=64, slices=12, healthy_fraction=0.5)
    return {"image": train[0][0], "label": train[0][1], "eval": root / "eval", "root": root}


@pytest.fixture(scope="module")
def finished_run(cases, tmp_path_factory) -> tuple[Path, str]:
    """A complete test-preset run with evaluation; returns (run folder, CLI output)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    args = [
        "pipeline",
        "--case",
        str(cases["image"]),
        "--preset",
        "test",
        "--out",
        str(out),
        "--eval",
        str(cases["eval"]),
    ]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_run_folder_has_everything(finished_run):
    out, output = finished_run
    for path in ("metrics.json", "report.md", "figures/samples.png", "run.json"):
        assert (out / path).is_file(), path
    assert list((out / "tensorboard").rglob("events.out.tfevents.*")), "no TensorBoard logs"
    assert (out / "bundles" / "cosingan_train" / "models" / "model.pt").is_file()
    for name in DOWNSTREAM:
        assert (out / "bundles" / name / "models" / "model.pt").is_file(), name
        assert (out / "bundles" / name / "models" / "model.ts").is_file(), name
    assert "report:" in output and "done in" in output


def test_report_shows_every_bundle_and_the_predictions(finished_run):
    """Training curves for every bundle that logged (GAN and downstream), one overlay per evaluated segmenter,
    held-out metrics named test_*, the environment; the console has one line per stage and no ckpt_export chatter."""
    out, output = finished_run
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("covid_seg_2d", "covid_seg_3d", "covid_slice_classifier"):
        assert metrics["evaluation"][name] and all(k.startswith("test_") for k in metrics["evaluation"][name]), name
    env = metrics["environment"]
    assert env["torch"] == torch.__version__ and env["seed"] == 0
    assert env["device"] == "cpu" or env["device"].startswith("cuda")
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Environment" in report and f"| monai | {env['monai']} |" in report
    for name in ("covid_seg_2d", "covid_seg_2d_baseline", "covid_seg_3d", "covid_slice_classifier"):
        figure = out / "figures" / f"overlay_{name}.png"
        assert figure.is_file() and Image.open(figure).size[1] > 400, name
        assert f"figures/overlay_{name}.png" in report
    from cosingan_monai.pipeline.figures import bundle_panels, read_scalars

    panels = bundle_panels(read_scalars(out / "tensorboard"))
    assert set(panels) == {p.name for p in (out / "tensorboard").iterdir()}
    for name in ("covid_seg_2d", "covid_seg_3d"):
        assert {"train_loss", "learning_rate", "validation"} <= set(panels[name]), name
    assert "validation" in panels["covid_slice_classifier"]  # it adopts the 2D segmenter: validated, not trained
    assert "ckpt_export" not in output and "exported to file" not in output
    for log in (out / "bundles").glob("*/logs/*.log"):
        text = log.read_text(encoding="utf-8", errors="replace")
        for noise in ("Not all config files", "deprecated name", "\r", "it/s]"):  # nor progress-bar fragments
            assert noise not in text, (log, noise)
    assert "[eval_covid_seg_2d] done in" in output and ", test_dice_infection " in output


def test_every_stage_line_names_its_key_metric(finished_run):
    """One summary line per stage with its key metric: the trainings their best validation key metric (as in the
    TensorBoard hparams), the GAN its final reconstruction loss, the evaluations their held-out figure."""
    out, output = finished_run
    lines = {line.split("]")[0][1:]: line for line in output.splitlines() if "] done in" in line}
    want = {
        "validate": "lung_slices",
        "select": "train_slice",
        "train_gan": "final_rec",
        "conditions": "negatives",
        "sample": "synthetic_slices",
        "train_covid_seg_2d": "best_val_mean_dice",
        "train_covid_seg_2d_baseline": "best_val_mean_dice",
        "train_covid_seg_3d": "best_val_mean_dice",
        "train_covid_slice_classifier": "best_val_auc",
        "realism": "summary_score",
        "prepare_eval": "eval_cases",
        "eval_covid_seg_2d": "test_dice_infection",
        "eval_covid_seg_3d": "test_dice_infection",
        "eval_covid_slice_classifier": "test_auc",
    }
    assert set(want) <= set(lines), sorted(lines)
    for stage, key in want.items():
        manifest = json.loads((out / "manifests" / f"{stage}.json").read_text())
        value = manifest["metrics"][key]
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        assert lines[stage].endswith(f" s, {key} {shown}"), lines[stage]
    metrics = {stage: json.loads((out / "manifests" / f"{stage}.json").read_text())["metrics"] for stage in want}
    assert 0.0 <= metrics["train_covid_seg_2d"]["best_val_mean_dice"] <= 1.0
    assert 0.0 <= metrics["train_covid_slice_classifier"]["best_val_auc"] <= 1.0
    assert metrics["train_gan"]["final_rec"] > 0.0 and metrics["prepare_eval"]["eval_cases"] == 2


def test_tensorboard_has_metrics_learning_rate_and_hparams_of_every_bundle(finished_run):
    """Each downstream segmenter's folder holds train loss, learning rate, val_* and the evaluation's test_* scalars
    (the classifier, which adopts the 2D segmenter, val_* and test_*), and an hparams session (learning rate, batch
    size, epochs, seed; best key metric); the GAN's its per-scale learning rates, final losses and config."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    out, _ = finished_run
    keys = {"covid_slice_classifier": "auc", "covid_seg_2d": "mean_dice", "covid_seg_3d": "mean_dice"}
    for name in (*keys, "cosingan_train"):
        acc = EventAccumulator(str(out / "tensorboard" / name), size_guidance={"scalars": 0})
        acc.Reload()
        scalars = set(acc.Tags()["scalars"])
        info = plugin_data_pb2.HParamsPluginData.FromString(
            acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        ).session_start_info
        if name == "cosingan_train":
            assert {"scale0/lr_g", "scale0/lr_d", "scale0/rec", "hparam/final_rec"} <= scalars, scalars
            assert {"lr_g", "iters_per_scale", "max_size", "seed"} <= set(info.hparams)
            continue
        key = keys[name]
        # the classifier adopts the 2D segmenter (0 epochs): validated and tested, but no training curves of its own
        trained = set() if name == "covid_slice_classifier" else {"train_loss", "learning_rate"}
        assert trained | {f"val_{key}", f"test_{key}", f"hparam/best_val_{key}"} <= scalars, name
        assert {"learning_rate", "batch_size", "max_epochs", "seed"} <= set(info.hparams), name
        assert [e.value for e in acc.Scalars(f"test_{key}")] == pytest.approx(
            [json.loads((out / "metrics.json").read_text())["evaluation"][name][f"test_{key}"]]
        )


def test_realism_of_the_synthetic_set_is_reported(finished_run):
    """Stage `realism` scores the synthetic set against the case's real slices (metrics/realism.py), with the
    real-slice baseline as the real-trained segmenter, into metrics.json, realism/, report.md and the console."""
    out, output = finished_run
    figures = json.loads((out / "metrics.json").read_text())["realism"]
    assert 0.0 < figures["summary_score"] <= 1.0
    assert figures["lung_laplacian_ratio"] > 0.0 and figures["body_gradient_ratio"] > 0.0
    assert -1100.0 < figures["real_lung_mean_hu"] < -300.0  # the phantom's healthy lung, in HU
    full = json.loads((out / "realism" / "realism.json").read_text())
    assert "covid_seg_2d_baseline" in (full["segmenter"]["note"] or "")
    assert full["segmenter"]["lung_dice_synthetic"] is not None
    assert (out / "manifests" / "realism.json").is_file()
    assert "## Realism of the synthetic set" in (out / "report.md").read_text(encoding="utf-8")
    assert "lung texture ratio" in output and "[realism] done in" in output


def test_metrics_json_has_numbers(finished_run):
    out, _ = finished_run
    metrics = json.loads((out / "metrics.json").read_text())
    evaluation = metrics["evaluation"]
    for name in (*DOWNSTREAM, "covid_seg_2d_baseline"):
        values = [v for v in evaluation[name].values() if isinstance(v, float)]
        assert values and all(np.isfinite(values)), (name, evaluation[name])
    lung_dice = [v for k, v in evaluation["covid_seg_2d"].items() if "dice" in k and "lung" in k]
    assert lung_dice and 0.0 <= lung_dice[0] <= 1.0
    assert metrics["timings_s"]["train_gan"] > 0


def test_run_bundles_load_their_weights_from_their_own_configs(finished_run):
    """The preset and overrides of the training are baked into each copy: inference.json alone builds its network."""
    out, _ = finished_run
    for name in DOWNSTREAM:
        bundle = out / "bundles" / name
        parser = ConfigParser()
        parser.read_config(str(bundle / "configs" / "inference.json"))
        assert parser["bundle_root"] == str(bundle.resolve())
        net = parser.get_parsed_content("network_def")
        state = torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
        net.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
        test_preset = json.loads((bundle / "configs" / "presets" / "test.json").read_text())
        assert parser["image_size"] == test_preset["image_size"], name
        train = json.loads((bundle / "configs" / "train.json").read_text())
        assert train["datalist"] == json.loads((bundle / "logs" / "train_args.json").read_text())["datalist"]
    # the shipped bundles are untouched
    assert (
        json.loads((bundles.BUNDLES_DIR / "covid_seg_2d" / "configs" / "inference.json").read_text())["bundle_root"]
        == "."
    )


def _monai_bundle(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`python -m monai.bundle ARGS` in folder `cwd`; fails the test with the output's tail on a non-zero exit."""
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc


def test_run_bundle_works_on_its_own_from_another_folder(finished_run, tmp_path):
    """MONAI's own commands, given only the trained copy's configs, from an unrelated folder: inference writes a
    label map per case, evaluate reproduces the pipeline's test metrics, ckpt_export gives the eager network's
    outputs."""
    out, _ = finished_run
    bundle = (out / "bundles" / "covid_seg_2d").resolve()
    configs = bundle / "configs"
    eval_list = out / "data" / "eval" / "eval_datalist.json"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cases = json.loads(eval_list.read_text())["test"]

    pred = tmp_path / "pred"
    _monai_bundle(
        ["run", "--config_file", str(configs / "inference.json"), "--datalist", str(eval_list)]
        + ["--output_dir", str(pred)],
        elsewhere,
    )
    written = sorted(pred.glob("*_seg.nii.gz"))
    assert len(written) == len(cases)
    first = nib.load(written[0])
    assert first.shape[:2] == nib.load(cases[0]["image"]).shape[:2]
    assert set(np.unique(np.asarray(first.dataobj))) <= {0, 1, 2}

    evaluated = tmp_path / "eval"
    files = str([str(configs / "train.json"), str(configs / "evaluate.json")])
    _monai_bundle(
        ["run", "--config_file", files, "--eval_datalist", str(eval_list), "--output_dir", str(evaluated)], elsewhere
    )
    standalone = bundles.read_metrics(evaluated)
    recorded = json.loads((out / "metrics.json").read_text())["evaluation"]["covid_seg_2d"]
    assert standalone and set(standalone) <= set(recorded)
    for key, value in standalone.items():
        assert value == pytest.approx(recorded[key], abs=1e-4), key

    exported = tmp_path / "model.ts"
    _monai_bundle(
        ["ckpt_export", "network_def", "--filepath", str(exported), "--ckpt_file", str(bundle / "models" / "model.pt")]
        + ["--meta_file", str(configs / "metadata.json"), "--config_file", str(configs / "inference.json")],
        elsewhere,
    )
    parser = ConfigParser()
    parser.read_config(str(configs / "inference.json"))
    net = parser.get_parsed_content("network_def")
    state = torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(state.get("model", state))
    net.eval()
    x = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert float((torch.jit.load(str(exported))(x) - net(x)).abs().max()) < 1e-4
    assert not list(elsewhere.iterdir())  # nothing was written to the working folder


def test_synthetic_samples_exist_with_previews(finished_run):
    out, _ = finished_run
    synthetic = out / "data" / "synthetic"
    datalist = json.loads((synthetic / "datalist.json").read_text())
    entry = datalist["training"][0]
    image = nib.load(synthetic / entry["image"]).get_fdata()
    label = np.asarray(nib.load(synthetic / entry["label"]).dataobj)
    assert image.shape[:2] == label.shape[:2]
    assert image.min() >= -1300 and image.max() <= 3100  # HU
    assert list((synthetic / "previews").glob("*.png"))
    assert Image.open(out / "figures" / "samples.png").size[0] > 200


def test_synthetic_volumes_render_the_case_label_volume_by_default(finished_run):
    out, _ = finished_run
    case = np.asarray(nib.load(out / "data" / "case" / "label.nii.gz").dataobj)
    anatomies = sorted((out / "data" / "conditions" / "volumes" / "labels").glob("anatomy_*.nii.gz"))
    assert len(anatomies) == PIPELINE_PRESETS["test"]["volumes"] == 2
    assert all((np.asarray(nib.load(a).dataobj) == case).all() for a in anatomies)  # --volume-warp 0
    synthetic = out / "data" / "synthetic"
    datalist = json.loads((synthetic / "datalist_3d.json").read_text())
    entries = datalist["training"] + datalist["validation"]
    labels = [np.asarray(nib.load(synthetic / e["label"]).dataobj) for e in entries]
    assert len(labels) == 2 and (labels[0] == labels[1]).all() and (labels[0] == 3).any()
    assert json.loads((out / "run.json").read_text())["inputs"]["--volume-warp"] == 0.0


def test_volume_warp_writes_other_anatomies(cases, tmp_path):
    prepared = prepare_case(cases["image"], cases["label"])
    entries = write_volume_anatomies(prepared, 3, seed=0, out_dir=tmp_path, strength=1.0)
    labels = [np.asarray(nib.load(e["label"]).dataobj) for e in entries]
    bodies = [np.asarray(nib.load(e["body"]).dataobj) > 0 for e in entries]
    assert [e["source"] for e in entries] == ["case", "case warped 1", "case warped 2"]
    assert (labels[0] == prepared.label).all()
    for lab, body in zip(labels[1:], bodies[1:], strict=True):
        assert (lab != prepared.label).mean() > 0.005 and body[lab > 0].all()


def _resume_after_kill(
    finished_run, cases, tmp_path, killed: tuple[str, ...], remove: tuple[str, ...] = ()
) -> tuple[Path, dict[str, int], str]:
    """Copy the finished run, delete the manifests of the `killed` stages (a run killed in them leaves none) and the
    `remove` paths (their unfinished results), resume it; returns (run folder, manifest mtimes before, CLI output)."""
    out, _ = finished_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    manifests = run / "manifests"
    before = {p.name: p.stat().st_mtime_ns for p in manifests.glob("*.json")}
    for stage in killed:
        (manifests / f"{stage}.json").unlink()
    for rel in remove:
        shutil.rmtree(run / rel) if (run / rel).is_dir() else (run / rel).unlink()
    args = ["pipeline", "--case", str(cases["image"]), "--preset", "test", "--out", str(run)]
    result = CliRunner().invoke(main, [*args, "--eval", str(cases["eval"]), "--resume"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return run, before, result.output


def _unchanged_except(run: Path, before: dict[str, int], redone: set[str]) -> None:
    """Every manifest but the `redone` stages' keeps its mtime; those were written again."""
    for name, mtime in before.items():
        now = (run / "manifests" / name).stat().st_mtime_ns
        assert now > mtime if name.removesuffix(".json") in redone else now == mtime, name


def test_resume_skips_finished_stages(finished_run, cases, tmp_path):
    # simulate a run killed during its last stage: that stage left no manifest and no results
    last = "eval_covid_seg_2d_baseline"
    run, before, output = _resume_after_kill(
        finished_run, cases, tmp_path, (last,), remove=("eval/covid_seg_2d_baseline", "metrics.json")
    )
    assert "[train_gan] already finished" in output
    assert f"[{last}] started" in output
    _unchanged_except(run, before, {last})
    assert json.loads((run / "metrics.json").read_text())["evaluation"]["covid_seg_2d_baseline"]


def test_existing_run_is_not_overwritten(finished_run, cases):
    out, _ = finished_run
    before = (out / "metrics.json").read_bytes()
    result = CliRunner().invoke(
        main, ["pipeline", "--case", str(cases["image"]), "--preset", "test", "--out", str(out)]
    )
    assert result.exit_code != 0
    assert "--resume" in result.output and "--force" in result.output
    assert (out / "metrics.json").read_bytes() == before


def _bad_case(cases, tmp_path, kind: str) -> list[str]:
    """CLI arguments for one kind of bad case."""
    image, label = cases["image"], cases["label"]
    if kind == "shape":
        lab = nib.load(label)
        bad = tmp_path / "label.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(lab.dataobj)[:-4], lab.affine), bad)
        return ["--case", str(image), "--label", str(bad)]
    if kind == "no-lung":  # an image whose lungs are filled with soft tissue, and an empty label
        img, lab = nib.load(image), nib.load(label)
        hu = np.asarray(img.dataobj).astype(np.float32)
        hu[np.asarray(lab.dataobj) > 0] = 40.0
        bad_image, bad_label = tmp_path / "image.nii.gz", tmp_path / "label.nii.gz"
        nib.save(nib.Nifti1Image(hu, img.affine), bad_image)
        nib.save(nib.Nifti1Image(np.zeros(lab.shape, np.uint8), lab.affine), bad_label)
        return ["--case", str(bad_image), "--label", str(bad_label)]
    rgb = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), mode="RGB").save(rgb)
    mask = tmp_path / "mask.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(mask)
    return ["--case", str(rgb), "--label", str(mask)]


@pytest.mark.parametrize(
    ("kind", "message"),
    [("shape", "shape"), ("no-lung", "lung"), ("rgb", "grayscale")],
    ids=["shape", "no-lung", "rgb"],
)
def test_bad_cases_stop_before_training(cases, tmp_path, kind, message):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["pipeline", *_bad_case(cases, tmp_path, kind), "--preset", "test", "--out", str(out)]
    )
    assert result.exit_code != 0
    assert message in result.output.lower()
    assert "Traceback" not in result.output
    assert not out.exists()  # nothing was started


@pytest.mark.parametrize("preset", ["test", "demo", "full"])
@pytest.mark.parametrize("name", DOWNSTREAM)
def test_pipeline_schedule_validates_the_last_epoch(preset, name):
    """A bundle saves model.pt only when it validates, so the pipeline's epochs must end on a validation epoch."""
    source = bundles.bundle_source(name)
    values = {
        **bundles.read_json(source / "configs" / "train.json"),
        **bundles.preset_overrides(source, "train", preset),
    }
    epochs = PIPELINE_EPOCHS.get(preset, {}).get(name, values["max_epochs"])
    if name == "covid_slice_classifier":
        epochs = CLASSIFIER_EPOCHS  # started from the 2D segmenter; 0 = adopt it and validate once
    interval = validation(preset).get("val_interval", values["val_interval"])
    assert epochs % interval == 0, f"{name} ({preset}): {epochs} epochs, validated every {interval}"


def test_classifier_adopts_the_2d_segmenter_trained_on_the_same_set(finished_run):
    """The classifier's map U-Net holds the 2D segmenter's trained weights (CLASSIFIER_EPOCHS = 0), and it was
    validated once, which saved it and logged its synthetic-validation AUC."""
    out, output = finished_run
    seg = torch.load(out / "bundles" / "covid_seg_2d" / "models" / "model.pt", weights_only=True)
    cls = torch.load(out / "bundles" / "covid_slice_classifier" / "models" / "model.pt", weights_only=True)
    assert set(cls) == {f"0.{k}" for k in seg}
    assert all(torch.equal(cls[f"0.{k}"], v) for k, v in seg.items())
    args = json.loads((out / "bundles" / "covid_slice_classifier" / "logs" / "train_args.json").read_text())
    assert args["max_epochs"] == 0 and args["pretrained_map"].endswith("covid_seg_2d/models/model.pt")
    assert output.index("[train_covid_slice_classifier] started") > output.index("[train_covid_seg_2d] done")
    assert "best_val_auc" in output.split("[train_covid_slice_classifier] done")[1].splitlines()[0]


def test_resume_redoes_only_the_killed_parallel_stage(finished_run, cases, tmp_path):
    """The downstream trainings run side by side: resuming one of them leaves its siblings and their evaluations."""
    out, _ = finished_run
    overlays = {name: sorted((out / "eval" / name / "overlay").glob("*_seg.nii.gz")) for name in OVERLAY_LISTS}
    assert all(len(files) >= 1 for files in overlays.values()), overlays
    run, before, output = _resume_after_kill(finished_run, cases, tmp_path, ("train_covid_seg_3d",))
    assert "[train_covid_seg_3d] started" in output and "[eval_covid_seg_3d] started" in output
    assert "[train_covid_seg_2d] already finished" in output
    assert "[eval_covid_seg_2d] already finished" in output
    _unchanged_except(run, before, {"train_covid_seg_3d", "eval_covid_seg_3d"})
    # the report's overlay predictions belong to the evaluation stage: the retrained 3D model's are made again
    for name, files in overlays.items():
        for old in files:
            new = run / old.relative_to(out)
            assert new.is_file() and (new.stat().st_mtime_ns > old.stat().st_mtime_ns) == (name == "covid_seg_3d"), new
