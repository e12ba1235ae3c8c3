"""Training-loop checkpoints: stop after a scale or mid-scale, resume, and clear errors for damaged checkpoints."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from cosingan_monai.engines.train_loop import MultiScaleTrainer
from cosingan_monai.networks import CheckpointError, CoSinGAN, CoSinGANConfig

ITERS = 6


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    """A small synthetic slice in [-1, 1] with lungs, a lesion and a body."""
    x, y = np.meshgrid(np.linspace(-1, 1, 32), np.linspace(-1, 1, 32), indexing="ij")
    body = (x / 0.9) ** 2 + (y / 0.7) ** 2 < 1
    lung = (((x + 0.4) / 0.3) ** 2 + (y / 0.45) ** 2 < 1) | (((x - 0.4) / 0.3) ** 2 + (y / 0.45) ** 2 < 1)
    lesion = lung & ((x + 0.5) ** 2 + (y - 0.1) ** 2 < 0.03)
    img = np.where(body, 0.1, -0.67) + np.where(lung, -0.6, 0) + np.where(lesion, 0.3, 0)
    img = img + 0.02 * np.random.default_rng(0).standard_normal(img.shape)
    return img.astype(np.float32), np.stack([lung, lesion, body]).astype(np.float32)


def _trainer(tmp, pair, **kw) -> MultiScaleTrainer:
    cfg = CoSinGANConfig(max_size=24, min_size=12, base_channels=8, iters_per_scale=ITERS, aug_bank_size=4)
    kw.setdefault("checkpoint_every", 2)
    return MultiScaleTrainer(pair=pair, config=kw.pop("config", cfg), output_dir=tmp, progress=False, **kw)


def _checkpoint(tmp) -> dict:
    return torch.load(tmp / "checkpoint.pt", weights_only=True)


def test_stop_after_scale_then_resume(tmp_path, pair):
    first = _trainer(tmp_path, pair, stop_after_scale=1)
    model = first.run()
    assert model.num_trained == 2 < model.num_scales
    assert not (tmp_path / "model.pt").exists()
    ck = _checkpoint(tmp_path)
    assert (ck["scale"], ck["scale_done"]) == (1, True)
    second = _trainer(tmp_path, pair)
    final = second.run()
    assert final.num_trained == final.num_scales == 3
    loaded = CoSinGAN.load(tmp_path / "model.pt")
    assert loaded.num_trained == 3 and loaded.noise_amps == final.noise_amps
    stats = json.loads((tmp_path / "train_stats.json").read_text())["scales"]
    assert [s["scale"] for s in stats] == [0, 1, 2] and all(s["iterations"] == ITERS for s in stats)
    assert loaded.sample(loaded.train_condition[0], n=2, seed=0).shape == (2, 1, *loaded.sizes[-1])


def test_resume_in_the_middle_of_a_scale(tmp_path, pair):
    stopped = _trainer(tmp_path, pair, stop_at=(1, 3), checkpoint_every=100)
    stopped.run()
    assert stopped.interrupted
    ck = _checkpoint(tmp_path)
    assert (ck["scale"], ck["iteration"], ck["scale_done"]) == (1, 3, False)
    weights = {k: v.clone() for k, v in ck["model"]["state_dict"].items() if k.startswith("generators.1.")}
    resumed = _trainer(tmp_path, pair)
    model = resumed.run()
    stats = {s["scale"]: s for s in json.loads((tmp_path / "train_stats.json").read_text())["scales"]}
    assert stats[1]["iterations"] == ITERS - 3  # only the remaining iterations of scale 1 ran
    assert stats[2]["iterations"] == ITERS
    assert model.num_trained == 3 and (tmp_path / "model.pt").is_file()
    # scale 1 continued from the checkpointed weights rather than restarting from scratch
    assert any(not torch.equal(weights[k], model.state_dict()[k].cpu()) for k in weights)


def test_damaged_or_foreign_checkpoints_give_clear_errors(tmp_path, pair):
    _trainer(tmp_path, pair, stop_after_scale=0).run()
    path = tmp_path / "checkpoint.pt"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 3])
    with pytest.raises(CheckpointError, match="checkpoint.pt: corrupt or partial file"):
        _trainer(tmp_path, pair).run()
    state = torch.load(io.BytesIO(good), weights_only=True)
    del state["scale_done"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="partial checkpoint: missing 'scale_done'"):
        _trainer(tmp_path, pair).run()
    path.write_bytes(good)
    other = CoSinGANConfig(max_size=24, min_size=12, base_channels=16, iters_per_scale=ITERS)
    with pytest.raises(CheckpointError, match="different config"):
        _trainer(tmp_path, pair, config=other).run()
    fresh = _trainer(tmp_path, pair, resume=False, stop_after_scale=0).run()  # resume=False ignores it
    assert fresh.num_trained == 1


def test_crop_training_with_lazy_penalty_and_frozen_stage1(tmp_path, pair):
    """The demo preset's speed settings (crops, lazy GP, stage 1 frozen once stage 2 joins) train end to end."""
    cfg = CoSinGANConfig(
        max_size=24, min_size=12, base_channels=8, iters_per_scale=ITERS, aug_bank_size=4, crop_size=14,
        gp_every=2, joint_stage1=False,
    )  # fmt: skip
    model = _trainer(tmp_path, pair, config=cfg).run()
    assert model.num_trained == model.num_scales and all(model.stage2_on)
    stats = json.loads((tmp_path / "train_stats.json").read_text())["scales"]
    assert all(np.isfinite(s["last"]["loss_g"]) and np.isfinite(s["last"]["loss_d"]) for s in stats)
    assert model.sizes[-1][0] > cfg.crop_size


def test_lesion_contrast_floor_trains_and_reports_its_gap(tmp_path, pair):
    """With lesion_contrast_weight > 0 the loop trains and every scale reports the floor's gap (a finite hinge)."""
    cfg = CoSinGANConfig(
        max_size=24, min_size=12, base_channels=8, iters_per_scale=ITERS, aug_bank_size=4, lesion_contrast_weight=10.0
    )
    model = _trainer(tmp_path, pair, config=cfg).run()
    assert model.config.lesion_contrast_weight == 10.0 and model.num_trained == model.num_scales
    stats = json.loads((tmp_path / "train_stats.json").read_text())["scales"]
    gaps = [s["last"]["contrast_gap"] for s in stats]
    assert len(gaps) == model.num_scales and all(np.isfinite(g) and g >= 0 for g in gaps)
