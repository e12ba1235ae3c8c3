"""The cosingan_train and cosingan_sample bundles run through `python -m monai.bundle run` in the test preset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from gan_helpers import SAMPLE_BUNDLE, TRAIN_BUNDLE

from cosingan_monai.networks import CoSinGAN


def _bundle_run(bundle: Path, workflow: str, root: Path, **overrides) -> subprocess.CompletedProcess:
    configs = bundle / "configs"
    cmd = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", str(configs / f"{workflow}.json"),
        "--args_file", str(configs / "presets" / "test.json"),  # preset as args: no config-root warning
        "--meta_file", str(configs / "metadata.json"),
        "--logging_file", str(configs / "logging.conf"),
        "--bundle_root", str(root),
    ]  # fmt: skip
    for key, value in overrides.items():
        cmd += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=root.parent, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for noise in ("Not all config files", "deprecated name"):  # presets as --args_file, current metadata ids
        assert noise not in proc.stdout + proc.stderr, noise
    return proc


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory) -> Path:
    from cosingan_monai.phantom.generator import write_phantom_dataset

    out = tmp_path_factory.mktemp("phantom")
    write_phantom_dataset(out, cases=2, seed=0, size=64, slices=12)
    return out


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory, phantom_dir) -> Path:
    root = tmp_path_factory.mktemp("train_root")
    _bundle_run(TRAIN_BUNDLE, "train", root, dataset_dir=str(phantom_dir))
    return root


def test_train_bundle_writes_a_loadable_model(trained_bundle):
    model = CoSinGAN.load(trained_bundle / "models" / "model.pt")
    preset = json.loads((TRAIN_BUNDLE / "configs" / "presets" / "test.json").read_text())
    assert model.num_trained == model.num_scales >= 3
    assert max(model.sizes[-1]) == preset["config#max_size"]
    stats = json.loads((trained_bundle / "eval" / "train_stats.json").read_text())["scales"]
    assert [s["iterations"] for s in stats] == [preset["config#iters_per_scale"]] * model.num_scales
    assert list((trained_bundle / "eval" / "tensorboard").glob("events.out.tfevents.*"))
    assert (trained_bundle / "eval" / "checkpoint.pt").is_file()


def test_sample_bundle_writes_the_synthetic_layout(trained_bundle, phantom_dir, tmp_path):
    out = tmp_path / "syn"
    volume = phantom_dir / "Lung_and_Infection_Mask" / "phantom_001.nii.gz"
    _bundle_run(
        SAMPLE_BUNDLE, "inference", tmp_path / "sample_root",
        model=str(trained_bundle / "models" / "model.pt"), dataset_dir=str(phantom_dir), output_dir=str(out),
        volume_labels=[str(volume)], n_volumes=1,
    )  # fmt: skip
    seg = json.loads((out / "datalist.json").read_text())
    cls = json.loads((out / "datalist_cls.json").read_text())
    entries = seg["training"] + seg["validation"]
    assert seg["validation"] and len(entries) == len(list((out / "images").glob("*.nii.gz")))
    assert len(list((out / "previews").glob("*.png"))) == len(entries)
    assert {e["label"] for e in cls["training"] + cls["validation"]} == {0, 1}  # positives and negatives
    for e in entries:
        img = nib.load(out / e["image"])
        lab = np.asarray(nib.load(out / e["label"]).dataobj)
        assert img.shape == lab.shape and np.allclose(img.affine, nib.load(out / e["label"]).affine)
        assert img.get_fdata().min() >= -1250 and img.get_fdata().max() <= 250
        assert e["infected"] == int((lab == 3).any())
    vol = json.loads((out / "datalist_3d.json").read_text())["training"][0]
    v_img, v_lab = nib.load(out / vol["image"]), nib.load(out / vol["label"])
    assert v_img.shape == v_lab.shape and v_img.shape[2] == nib.load(volume).shape[2]


def test_bundle_configs_define_the_required_workflow_ids(trained_bundle, phantom_dir, tmp_path):
    from monai.bundle import ConfigWorkflow

    model = str(trained_bundle / "models" / "model.pt")
    runs = (
        (TRAIN_BUNDLE, "train", "train", {"dataset_dir": str(phantom_dir), "bundle_root": str(tmp_path / "t")}),
        (SAMPLE_BUNDLE, "inference", "infer", {"model": model, "dataset_dir": str(phantom_dir)}),
    )
    for bundle, workflow, kind, overrides in runs:
        wf = ConfigWorkflow(
            config_file=str(bundle / "configs" / f"{workflow}.json"),
            meta_file=str(bundle / "configs" / "metadata.json"),
            workflow_type=kind,
            **overrides,
        )
        wf.initialize()
        assert wf.check_properties() in (None, []), (bundle.name, wf.check_properties())


def test_pick_slice_override_and_clear_errors():
    from cosingan_monai.engines import data as scripts

    lab = np.zeros((8, 8, 5), np.uint8)
    lab[2:6, 2:6, 1:4] = 1
    lab[3:4, 3:4, 2] = 3
    data = {"image": np.zeros((8, 8, 5), np.float32), "label": lab, "case_path": "case.nii.gz"}
    assert scripts.PickSliced(slice=3)(data)["slice_index"] == 3
    assert scripts.PickSliced(slice="auto")(data)["slice_index"] == 2  # the slice with infection and healthy lung
    with pytest.raises(ValueError, match="case.nii.gz: slice 9 is outside 0..4"):
        scripts.PickSliced(slice=9)(data)
    with pytest.raises(ValueError, match="slice must be an int or 'auto'"):
        scripts.PickSliced(slice="middle")


def test_generator_wrapper_is_the_pyramid_and_scripts(trained_bundle):
    """cosingan_sample's network_def, CoSinGANGenerator, gives CoSinGAN.generate's images for the same noise, also
    as TorchScript, and takes the model file's state_dict key for key."""
    import torch
    import torch.nn.functional as F

    from cosingan_monai.networks.synthesis_net import CoSinGANGenerator

    path = trained_bundle / "models" / "model.pt"
    model = CoSinGAN.load(path)
    net = CoSinGANGenerator.load(path)
    cond = model.train_condition.expand(2, -1, -1, -1)
    noise = torch.randn(2, 2 * model.num_scales, *cond.shape[-2:], generator=torch.Generator().manual_seed(3))
    conds = model.condition_pyramid(cond)
    per_scale = [
        tuple(F.interpolate(noise[:, 2 * n + k : 2 * n + k + 1], size=c.shape[-2:], mode="nearest") for k in (0, 1))
        for n, c in enumerate(conds)
    ]
    with torch.no_grad():
        expected = model.generate(conds, noise=per_scale).clamp(-1, 1)
        got = net(cond, noise)
        assert got.shape == (2, 1, *cond.shape[-2:])
        assert float((got - expected).abs().max()) < 1e-5
        assert float((torch.jit.script(net)(cond, noise) - got).abs().max()) < 1e-5
        assert float(net(cond).std()) > 0  # draws its own noise when given none
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert set(net.state_dict()) == set(payload["state_dict"])


def test_sample_bundle_passes_monai_checks(trained_bundle, tmp_path):
    """verify_net_in_out and ckpt_export of cosingan_sample's network_def (the checks that stand in for
    cosingan_train's, whose model.pt is a whole pyramid: see its docs/README.md)."""
    import torch
    from monai.bundle import ckpt_export, verify_net_in_out

    from cosingan_monai.networks.synthesis_net import CoSinGANGenerator

    configs = SAMPLE_BUNDLE / "configs"
    model = str(trained_bundle / "models" / "model.pt")
    common = {"meta_file": str(configs / "metadata.json"), "config_file": str(configs / "inference.json")}
    verify_net_in_out(net_id="network_def", device="cpu", any=32, model=model, **common)
    exported = tmp_path / "generator.ts"
    ckpt_export(
        net_id="network_def", filepath=str(exported), ckpt_file=model, key_in_ckpt="state_dict", model=model, **common
    )
    scripted = torch.jit.load(str(exported))
    eager = CoSinGANGenerator.load(model)
    cond = (torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    noise = torch.randn(1, 2 * eager.num_scales, 40, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert float((scripted(cond, noise) - eager(cond, noise)).abs().max()) < 1e-5
