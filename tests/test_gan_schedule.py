"""Per-scale schedules of the CoSinGAN config (iterations, reconstruction weight, noise floor, lesion jitter) and the
per-scale realism numbers the training loop logs to TensorBoard."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cosingan_monai.data.transforms import DENSITY_CHANNEL, unit_to_hu, with_lesion_density
from cosingan_monai.engines.augment import HierarchicalAugment
from cosingan_monai.engines.realism_log import label_from_condition
from cosingan_monai.engines.train_loop import MultiScaleTrainer
from cosingan_monai.networks import CoSinGANConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pair(n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A small textured slice in [-1, 1] with lungs, a lesion and a body."""
    x, y = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n), indexing="ij")
    body = (x / 0.9) ** 2 + (y / 0.7) ** 2 < 1
    lung = (((x + 0.4) / 0.3) ** 2 + (y / 0.45) ** 2 < 1) | (((x - 0.4) / 0.3) ** 2 + (y / 0.45) ** 2 < 1)
    lesion = lung & ((x + 0.5) ** 2 + (y - 0.1) ** 2 < 0.03)
    img = np.where(body, 0.1, -0.67) + np.where(lung, -0.6, 0) + np.where(lesion, 0.3, 0)
    img = img + 0.05 * np.random.default_rng(0).standard_normal(img.shape)
    return img.astype(np.float32), np.stack([lung, lesion, body]).astype(np.float32)


def test_iterations_and_reconstruction_weight_per_scale():
    flat = CoSinGANConfig(iters_per_scale=300, rec_alpha_fine=-1.0)
    assert [flat.iters_at(n, 7) for n in range(7)] == [300] * 7
    assert [flat.rec_alpha_at(n, 7) for n in (0, 6)] == [10.0, 10.0]
    default = CoSinGANConfig()
    assert [default.rec_alpha_at(n, 7) for n in (0, 6)] == pytest.approx([10.0, 2.0])
    ramp = CoSinGANConfig(iters_per_scale=300, iters_coarsest_factor=0.5, iters_finest_factor=2.0, rec_alpha_fine=1.0)
    assert [ramp.iters_at(n, 4) for n in range(4)] == [150, 300, 450, 600]
    assert ramp.rec_alpha_at(0, 4) == pytest.approx(10.0)
    assert ramp.rec_alpha_at(3, 4) == pytest.approx(1.0)
    assert ramp.rec_alpha_at(1, 3) == pytest.approx(10.0**0.5)  # geometric: halfway is the geometric mean
    assert CoSinGANConfig(iters_per_scale=3, iters_coarsest_factor=0.1).iters_at(0, 5) == 1
    with pytest.raises(ValueError, match="iteration factors"):
        CoSinGANConfig(iters_finest_factor=0)
    with pytest.raises(ValueError, match="rec_alpha_fine"):
        CoSinGANConfig(rec_alpha_fine=0)


def test_lesion_jitter_shifts_only_the_lesion():
    img, cond = _pair()
    cfg = CoSinGANConfig(
        aug_prob=0.0, aug_zoom_prob=0.0, aug_flip_prob=0.0, jitter_gamma=0.0, jitter_scale=0.0, jitter_shift=0.0,
        jitter_prob=1.0, jitter_lesion_shift=0.2,
    )  # fmt: skip
    aug = HierarchicalAugment(cfg, [(32, 32)], seed=3)
    x, c = torch.as_tensor(img)[None, None], torch.as_tensor(cond)[None]
    shifts = []
    for _ in range(20):
        out, out_c = aug(x, c, 0)
        diff = (out - x)[0, 0].numpy()
        lesion = cond[1] > 0.5
        assert np.abs(diff[~lesion]).max() < 1e-5  # nothing outside the lesion moves
        assert torch.equal(out_c, c)
        shifts.append(float(diff[lesion].mean()))
    assert max(np.abs(shifts)) <= 0.2 + 1e-5
    assert np.std(shifts) > 0.05  # a spread of densities, both ways
    assert min(shifts) < 0 < max(shifts)
    plain = HierarchicalAugment(CoSinGANConfig(**{**cfg.to_dict(), "jitter_lesion_shift": 0.0}), [(32, 32)])
    assert torch.allclose(plain(x, c, 0)[0], x, atol=1e-5)


def test_noise_floor_and_realism_numbers_per_scale(tmp_path):
    img, cond = _pair(40)
    cfg = CoSinGANConfig(
        max_size=40, min_size=20, scale_factor=0.8, base_channels=8, iters_per_scale=4, aug_bank_size=4,
        noise_amp_min=0.07, iters_finest_factor=2.0,
    )  # fmt: skip
    hu = unit_to_hu(torch.as_tensor(img)).numpy()
    lab = label_from_condition(torch.as_tensor(cond))
    assert set(np.unique(lab)) == {0, 1, 3}
    reference = [(hu, lab), (np.flip(hu, 0).copy(), np.flip(lab, 0).copy())]

    class Writer:
        def __init__(self):
            self.scalars: list[tuple[str, float, int]] = []
            self.hparams: list[tuple[dict, dict]] = []

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, float(value), int(step)))

        def add_image(self, *args, **kwargs):
            pass

        def add_hparams(self, hparams, metrics, run_name=None):
            self.hparams.append((dict(hparams), dict(metrics)))

        def flush(self):
            pass

    writer = Writer()
    trainer = MultiScaleTrainer(
        pair=(img, cond), config=cfg, output_dir=tmp_path, progress=False, summary_writer=writer,
        realism_reference=reference, realism_masks=2, realism_samples=3, image_every=0,
    )  # fmt: skip
    model = trainer.run()
    n = model.num_scales
    assert n >= 3
    assert min(model.noise_amps[1:] + model.noise_amps2) >= 0.07 - 1e-9
    stats = json.loads((tmp_path / "train_stats.json").read_text())["scales"]
    assert [s["iterations"] for s in stats] == [cfg.iters_at(k, n) for k in range(n)]
    assert stats[-1]["iterations"] == 8 and stats[0]["iterations"] == 4 and n == 4
    for k, s in enumerate(stats):
        r = s["realism"]
        assert r["analysis_px"] == min(model.sizes[k])
        assert 0.0 <= r["summary_score"] <= 1.0
        assert r["healthy_lung_laplacian_ratio"] > 0
    assert stats[-1]["realism"]["diversity_ratio"] > 0  # the 3 samples of the training mask differ
    logged = {(tag, step) for tag, _, step in writer.scalars}
    for k in range(n):
        assert ("realism/summary_score", k) in logged and ("realism/healthy_lung_laplacian_ratio", k) in logged
    # the run ends with one hparams record: the config's scalars and the finest scale's realism score
    assert len(writer.hparams) == 1
    hparams, finals = writer.hparams[0]
    assert hparams["max_size"] == 40 and hparams["iters_per_scale"] == 4
    assert finals["hparam/realism_summary_score"] == stats[-1]["realism"]["summary_score"]
    # the hook draws from its own generator: training with it on gives the same model as without
    quiet = MultiScaleTrainer(pair=(img, cond), config=cfg, output_dir=tmp_path / "q", progress=False).run()
    for a, b in zip(model.state_dict().values(), quiet.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_lesion_density_channel_reports_the_shift_the_image_got():
    """With the density channel, channel 3 = lesion x (0.5 + 0.5 shift / jitter_lesion_shift): the GAN is told the
    density it is shown, so a sample's density can be chosen later (docs/design.md "Lesion density")."""
    img, cond = _pair()
    cond = with_lesion_density(cond)
    cfg = CoSinGANConfig(
        aug_prob=0.0, aug_zoom_prob=0.0, aug_flip_prob=0.0, jitter_gamma=0.0, jitter_scale=0.0, jitter_shift=0.0,
        jitter_prob=1.0, jitter_lesion_shift=0.2, lesion_density_channel=True,
    )  # fmt: skip
    aug = HierarchicalAugment(cfg, [(32, 32)], seed=3)
    x, c = torch.as_tensor(img)[None, None], torch.as_tensor(cond)[None]
    lesion = cond[1] > 0.5
    levels = []
    for _ in range(20):
        out, out_c = aug(x, c, 0)
        shift = float((out - x)[0, 0].numpy()[lesion].mean())
        level = out_c[0, DENSITY_CHANNEL].numpy()
        assert np.abs(level[~lesion]).max() < 1e-6
        assert np.allclose(level[lesion], 0.5 + 0.5 * shift / 0.2, atol=1e-4)
        assert torch.equal(out_c[0, :3], c[0, :3])  # the other channels are untouched
        levels.append(float(level[lesion].mean()))
    assert min(levels) < 0.4 and max(levels) > 0.6
    assert np.allclose(cond[DENSITY_CHANNEL][lesion], 0.5)  # the training slice itself is density 0
