"""Unit tests of the CoSinGAN building blocks: config, networks, losses, augmentation, AMP policy, model files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cosingan_monai.core.amp import amp_policy
from cosingan_monai.data.transforms import DENSITY_CHANNEL, with_lesion_density
from cosingan_monai.engines.augment import HierarchicalAugment, displacement_rms, scale_strength
from cosingan_monai.engines.losses import (
    MixedReconstructionLoss,
    condition_regions,
    critic_loss,
    gradient_penalty,
    region_level_guard,
)
from cosingan_monai.networks import CheckpointError, CoSinGAN, CoSinGANConfig, PatchCritic, ScaleGenerator
from cosingan_monai.networks.critic import masked_views
from cosingan_monai.networks.synthesis_net import CoSinGANGenerator


def _tiny_model(**cfg) -> CoSinGAN:
    config = CoSinGANConfig(max_size=24, min_size=12, base_channels=4, **cfg)
    img = torch.linspace(-1, 1, 30 * 30).reshape(30, 30)
    cond = torch.zeros(3, 30, 30)
    cond[0, 8:22, 5:14] = 1
    cond[1, 10:14, 6:10] = 1
    cond[2, 3:27, 2:28] = 1
    if config.lesion_density_channel:
        cond = torch.as_tensor(with_lesion_density(cond.numpy()))
    model = CoSinGAN.for_training_pair(img, cond, config)
    for _ in range(model.num_scales):
        model.new_scale()
    model.stage2_on = [True] * model.num_scales
    model.noise_amps2 = [0.05] * model.num_scales
    return model


def test_config_validates_and_round_trips():
    with pytest.raises(ValueError, match="scale_factor"):
        CoSinGANConfig(scale_factor=1.5)
    with pytest.raises(ValueError, match="unknown CoSinGAN config keys: \\['max_sise'\\]"):
        CoSinGANConfig.from_dict({"max_sise": 3})
    c = CoSinGANConfig(max_size=64, use_body=False)
    assert CoSinGANConfig.from_dict(c.to_dict()) == c
    assert c.cond_channels == 2
    assert CoSinGANConfig(lesion_density_channel=True).cond_channels == 4
    with pytest.raises(ValueError, match="lesion_density_channel needs use_body"):
        CoSinGANConfig(lesion_density_channel=True, use_body=False)
    with pytest.raises(ValueError, match="lesion_density_channel needs jitter_lesion_shift > 0"):
        CoSinGANConfig(lesion_density_channel=True, jitter_lesion_shift=0.0)
    widths = [CoSinGANConfig().channels_at(n) for n in range(13)]
    assert widths[:4] == [32] * 4 and widths[4:8] == [64] * 4 and widths[8:] == [128] * 5


def test_generator_residual_stages_and_zero_initialised_stage2():
    g = ScaleGenerator(cond_channels=3, channels=8)
    up = torch.rand(2, 1, 16, 20) * 2 - 1
    cond = torch.rand(2, 3, 16, 20)
    x1, x2 = g(up, cond, 0.1 * torch.randn_like(up), torch.randn_like(up))
    assert x1.shape == up.shape and x2.shape == up.shape
    assert torch.equal(x2, x1)  # stage 2 joins as the identity (zero tail) and then learns a residual
    assert (x1 - up).abs().max() <= 1.0  # tanh-bounded residual
    _, none = g(up, cond, 0.0)
    assert none is None


def test_critic_sees_masked_views():
    img = torch.full((1, 1, 8, 8), 0.5)
    cond = torch.zeros(1, 3, 8, 8)
    cond[0, 0, 2:6, 2:6] = 1
    cond[0, 1, 3:4, 3:4] = 1
    views = masked_views(img, cond)
    assert views.shape == (1, 2, 8, 8)
    assert views[0, 0, 2, 2] == 0.5 and views[0, 0, 0, 0] == -1.0
    assert views[0, 1, 3, 3] == 0.5 and views[0, 1, 2, 2] == -1.0
    d = PatchCritic(3, 8, with_masked_views=True)
    assert d(img, cond).shape == (1, 1, 8, 8)
    assert d.net.body[0].conv.in_channels == 6


class _Linear(torch.nn.Module):
    """D(x, c) = a * x per pixel: its input gradient is a everywhere."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = a

    def forward(self, x, cond):
        return self.a * x


@pytest.mark.parametrize(("a", "expected"), [(1.0, 0.0), (3.0, 4.0), (0.5, 0.25)])
def test_gradient_penalty_matches_closed_form(a, expected):
    real, fake = torch.rand(2, 1, 6, 6), torch.rand(2, 1, 6, 6)
    gp = gradient_penalty(_Linear(a), real, fake, torch.zeros(2, 3, 6, 6))
    assert gp.item() == pytest.approx(expected, abs=1e-6)
    assert critic_loss(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)).item() == -1.0


def test_mixed_reconstruction_loss():
    loss = MixedReconstructionLoss(ssim_weight=1.0, win_size=7)
    x = torch.rand(1, 1, 20, 20) * 2 - 1
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-5)
    flat = torch.full_like(x, x.mean().item())
    l1 = (flat - x).abs().mean().item()
    assert loss(flat, x).item() > l1 + 0.5  # the SSIM term penalises the missing structure
    assert MixedReconstructionLoss(0.0)(flat, x).item() == pytest.approx(l1, rel=1e-5)
    small = torch.rand(1, 1, 5, 5)
    assert loss(small, small + 0.1).item() == pytest.approx(0.1, rel=1e-4)  # below the SSIM window: L1 only


def _two_lung_condition(size: int = 20) -> torch.Tensor:
    """Condition (1, 3, size, size): body = central square, lung = its left half, lesion = a corner of the lung."""
    cond = torch.zeros(1, 3, size, size)
    cond[:, 2, 2:-2, 2:-2] = 1.0
    cond[:, 0, 4:-4, 4 : size // 2] = 1.0
    cond[:, 1, 4:8, 4:8] = 1.0
    return cond


def test_condition_regions_partition_the_slice():
    cond = _two_lung_condition()
    w = condition_regions(cond)
    assert w.shape == (1, 4, 20, 20)
    assert torch.equal(w.sum(1), torch.ones(1, 20, 20))  # healthy lung, lesion, body, outside: every pixel once
    assert float(w[0, 1].sum()) == 16.0 and float(w[0, 0].sum()) == 12 * 6 - 16
    assert condition_regions(cond[:, :2]).shape[1] == 2  # no body channel: lung regions only


def test_region_level_guard_pays_only_for_a_region_drift_beyond_the_band():
    cond = _two_lung_condition()
    real = -1.0 + 0.6 * cond[:, 2:3] - 0.3 * cond[:, :1] + 0.2 * cond[:, 1:2]  # air, body, lung, lesion levels
    real = real + 0.05 * torch.randn(1, 1, 20, 20, generator=torch.Generator().manual_seed(0))
    texture = 0.08 * torch.randn(1, 1, 20, 20, generator=torch.Generator().manual_seed(1))
    assert float(region_level_guard(real, real, cond, tol=0.1)) == 0.0
    # new texture with the same levels stays inside the band: no cost, whatever the pixels do
    assert float(region_level_guard(real + texture - texture.mean(), real, cond, tol=0.1)) < 1e-3
    # the whole healthy lung 0.4 darker (300 HU): (0.4 - 0.1) over 4 regions
    healthy = cond[:, :1] * (1 - cond[:, 1:2])
    drift = (real - 0.4 * healthy).requires_grad_(True)
    loss = region_level_guard(drift, real, cond, tol=0.1)
    assert float(loss.detach()) == pytest.approx(0.3 / 4, abs=1e-5)
    loss.backward()
    assert float(drift.grad[0, 0][healthy[0, 0] > 0].min()) < 0  # pushes the lung back up ...
    assert float(drift.grad[0, 0][healthy[0, 0] == 0].abs().max()) == 0.0  # ... and touches nothing else
    # the lesion has its own wider band (the augmentation varies lesion density): 0.25 free, 0.4 pays 0.1
    lesion = cond[:, 1:2]
    assert float(region_level_guard(real + 0.25 * lesion, real, cond, tol=0.1, lesion_tol=0.2)) == 0.0
    loss = region_level_guard(real + 0.4 * lesion, real, cond, tol=0.1, lesion_tol=0.2)
    assert float(loss) == pytest.approx(0.1 / 4, abs=1e-5)
    # a region below min_fraction of the window is not judged
    tiny = torch.zeros_like(cond)
    tiny[:, 2] = 1.0
    tiny[:, 0, 0, 0] = 1.0
    assert float(region_level_guard(real - 0.4 * tiny[:, :1], real, tiny, tol=0.1)) == 0.0


def test_augmentation_reference_is_the_geometric_copy_before_the_intensity_jitter():
    cfg = CoSinGANConfig(max_size=32, aug_prob=0.0, aug_flip_prob=0.0, aug_zoom_prob=0.0, jitter_prob=1.0)
    image = torch.linspace(-1, 1, 32 * 32).reshape(1, 1, 32, 32)
    cond = _two_lung_condition(32)
    aug = HierarchicalAugment(cfg, [(32, 32)], seed=0)
    img, cnd, ref = aug(image, cond, 0, with_reference=True)
    assert torch.allclose(ref, image, atol=1e-5)  # no geometry here: the reference is the slice itself ...
    assert float((img - image).abs().max()) > 0.01  # ... while the training image carries the jitter
    assert torch.equal(cnd, cond)


def test_augmentation_is_joint_strongest_at_coarse_scales_and_keeps_inputs():
    cfg = CoSinGANConfig(max_size=64, aug_prob=1.0, aug_flip_prob=0.0, jitter_prob=0.0)
    sizes = [(27, 27), (36, 36), (48, 48), (64, 64)]
    aug = HierarchicalAugment(cfg, sizes, seed=1)
    assert scale_strength(cfg, 0, 4) == 1.0 and scale_strength(cfg, 3, 4) == pytest.approx(cfg.aug_fine_strength)
    coarse = displacement_rms(aug, 0) / 27
    fine = displacement_rms(aug, 3) / 64
    assert coarse > 2.0 * fine > 0, (coarse, fine)
    img = torch.zeros(1, 1, 48, 48) - 1
    img[..., 10:30, 10:30] = 0.5
    cond = (img > 0).float().repeat(1, 3, 1, 1)
    before = img.clone()
    out_img, out_cond = aug(img, cond, 2)
    assert torch.equal(img, before)
    # image and condition moved together: the bright square still sits on the lung channel
    assert ((out_img[0, 0] > 0) == (out_cond[0, 0] > 0.5)).float().mean() > 0.97


@pytest.mark.parametrize("body_fills_frame", [True, False])
def test_zoom_out_pads_with_air_and_an_empty_condition(body_fills_frame):
    """A zoomed-in slice (body fills the frame) still shows the GAN air outside the body mask after zoom-out."""
    from cosingan_monai.data.transforms import hu_to_unit

    cfg = CoSinGANConfig(max_size=32, aug_prob=0.0, aug_flip_prob=0.0, aug_zoom_prob=1.0, jitter_prob=0.0)
    aug = HierarchicalAugment(cfg, [(40, 40)], seed=0)
    img = torch.full((1, 1, 40, 40), 0.4)  # soft tissue everywhere
    cond = torch.ones(1, 3, 40, 40)
    if not body_fills_frame:  # a black (-1250 HU) frame around the body, as in PNG exports
        img[..., :4, :], cond[:, 2, :4, :] = -1.0, 0.0
    air = float(hu_to_unit(torch.tensor(cfg.air_hu))) if body_fills_frame else -1.0
    corners = []
    for _ in range(6):
        out_img, out_cond = aug(img, cond, 0)
        corners.append((out_img[0, 0, -1, -1].item(), out_cond[0, :, -1, -1]))
        assert out_img.min() >= min(air, 0.4) - 1e-4 and out_img.max() <= 0.4 + 1e-4
    zoomed = [(v, c) for v, c in corners if v < 0.3]
    assert zoomed, "zoom-out (min zoom 0.7 at the coarsest scale) should pad the corner in some draws"
    for value, c in zoomed:
        assert value == pytest.approx(air, abs=1e-4) and torch.all(c == 0)


def test_intensity_jitter_changes_image_not_condition():
    cfg = CoSinGANConfig(max_size=32, aug_prob=0.0, aug_flip_prob=0.0, aug_zoom_prob=0.0, jitter_prob=1.0)
    aug = HierarchicalAugment(cfg, [(32, 32)], seed=3)
    img = torch.rand(1, 1, 32, 32) * 2 - 1
    cond = (torch.rand(1, 3, 32, 32) > 0.5).float()
    means = []
    for _ in range(8):
        out_img, out_cond = aug(img, cond, 0)
        assert torch.equal(out_cond, cond)
        means.append(out_img.mean().item())
    assert np.std(means) > 0.005


def test_amp_policy_cpu_is_float32():
    p = amp_policy("cpu")
    assert not p.enabled and p.scaler() is None
    with p.autocast():
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32


def test_model_file_errors_name_the_file(tmp_path):
    model = _tiny_model()
    path = model.save(tmp_path / "model.pt")
    assert CoSinGAN.load(path).num_trained == model.num_scales
    cut = tmp_path / "partial.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="partial.pt: corrupt or partial"):
        CoSinGAN.load(cut)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pt"):
        CoSinGAN.load(junk)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt: file is empty"):
        CoSinGAN.load(empty)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="other.pt: not a CoSinGAN model"):
        CoSinGAN.load(other)
    broken = model.payload()
    broken["state_dict"].pop(next(iter(broken["state_dict"])))
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="broken.pt: inconsistent CoSinGAN model"):
        CoSinGAN.load(tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="missing.pt: no such file"):
        CoSinGAN.load(tmp_path / "missing.pt")


def test_sampling_api_accepts_labels_and_conditions():
    model = _tiny_model()
    lab = np.zeros((30, 30), np.uint8)
    lab[8:22, 5:14] = 1
    lab[8:22, 16:25] = 2
    lab[10:14, 6:10] = 3
    out = model.sample(lab, n=3, seed=0, spacing=(10.0, 10.0))
    assert out.shape == (3, 1, *model.sizes[-1])
    assert torch.equal(out, model.sample(lab, n=3, seed=0, spacing=(10.0, 10.0)))
    two = model.to_condition(np.stack([lab > 0, lab == 3]).astype(np.float32), spacing=(10.0, 10.0))
    assert two.shape == (3, 30, 30) and two[2].sum() >= two[0].sum()  # body derived from the lungs
    big = model.sample(lab, n=1, seed=0, size=(48, 48))
    assert big.shape == (1, 1, 48, 48)
    with pytest.raises(ValueError, match="label map values must be 0-3"):
        model.sample(lab * 3, n=1)
    with pytest.raises(ValueError, match="2D label map"):
        model.sample(np.zeros(5), n=1)


def test_volume_noise_is_ar1_correlated():
    model = _tiny_model(volume_rho_coarse=0.9, volume_rho_fine=0.0)
    noise = model.volume_noise(400, model.sizes, seed=0)
    coarse = noise[0][0].flatten(1)
    fine = noise[-1][0].flatten(1)
    corr = torch.corrcoef(torch.stack([coarse[:-1].flatten(), coarse[1:].flatten()]))[0, 1].item()
    assert corr == pytest.approx(0.9, abs=0.03)
    assert coarse.std().item() == pytest.approx(1.0, abs=0.05)
    corr_fine = torch.corrcoef(torch.stack([fine[:-1].flatten(), fine[1:].flatten()]))[0, 1].item()
    assert abs(corr_fine) < 0.05


def test_crop_windows_give_the_generator_its_context():
    from cosingan_monai.engines.scale_step import crop_windows

    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        inner, outer, rel = crop_windows((50, 40), 16, 5, gen)
        x = torch.arange(50 * 40).reshape(50, 40)
        assert x[inner].shape == (16, 16)
        assert torch.equal(x[outer][rel], x[inner])  # the inner window sits inside the outer one
        for k in range(2):  # context on every side that is not the image border
            assert outer[k].start == max(0, inner[k].start - 5)
            assert outer[k].stop == min(x.shape[k], inner[k].stop + 5)


def test_augmented_pairs_bank_refreshes_entries():
    from cosingan_monai.engines.scale_step import AugmentedPairs

    cfg = CoSinGANConfig(max_size=16, min_size=8, jitter_prob=0.0)
    aug = HierarchicalAugment(cfg, [(16, 16)], seed=0)
    calls = []

    def prev_fn(cond):
        calls.append(cond.shape[0])
        return torch.full_like(cond[:, :1], float(len(calls)))

    data = AugmentedPairs(torch.zeros(1, 1, 16, 16), torch.ones(1, 3, 16, 16), aug, 0, 2, 4, 0, refresh_every=2)
    data.prev_fn = prev_fn
    stream = iter(data)
    batches = [next(stream) for _ in range(10)]
    assert calls == [4] + [1] * 4  # the bank once, then one fresh entry every 2nd step
    assert all(b["image"].shape == (2, 1, 16, 16) and b["prev"].shape == (2, 1, 16, 16) for b in batches)
    assert {float(v) for b in batches for v in b["prev"][:, 0, 0, 0]} - {1.0} != set()  # refreshed entries drawn


def test_residual_level_guard_holds_each_stage_to_its_own_input():
    from cosingan_monai.engines.scale_step import ScaleStep, build_critics

    cfg = CoSinGANConfig(max_size=20, min_size=10, scale_factor=0.75, base_channels=4, joint_stage1=True)
    cond = _two_lung_condition(20)[0]
    model = CoSinGAN.for_training_pair(torch.zeros(20, 20), cond, cfg)
    model.generators.append(model.new_scale())
    model.generators.append(model.new_scale())
    n = 1
    model.stage2_on[n] = True
    opt = torch.optim.Adam(model.generators[n].parameters())
    step = ScaleStep(model, n, build_critics(model, n), opt, opt, iterations=4, amp=False)
    c = condition_regions(cond[None])
    up = torch.zeros(1, 1, 20, 20)
    full = (slice(None), slice(None))
    assert float(step._level_guard(up, up, up, up, cond[None], full)) == 0.0
    # stage 1 darkens the healthy lung by 0.4 (300 HU) against its coarser input: (0.4 - 0.1) over 3 regions (the
    # 16-px lesion is under level_guard_min_area, 10% of the 400-px window)
    x1 = up - 0.4 * c[:, :1]
    assert float(step._level_guard(x1, x1, up, up, cond[None], full)) == pytest.approx(0.3 / 3, abs=1e-5)
    # stage 2 keeps stage 1's levels: only stage 1 pays, whatever the real slice says
    assert float(step._level_guard(up, up, up, up + 1.0, cond[None], full)) == 0.0
    # the "real" rule compares both stages with the reference image instead
    model.config.level_guard_ref = "real"
    assert float(step._level_guard(up, up, up, up - 0.4 * c[:, :1], cond[None], full)) == pytest.approx(
        2 * 0.3 / 3, abs=1e-5
    )


def test_lesion_contrast_floor_can_leave_out_the_finest_scales():
    """`lesion_contrast_finest_off` k: the floor weighs on every scale's generator but the finest k (0 = all)."""
    from cosingan_monai.engines.scale_step import ScaleStep, build_critics

    cond = _two_lung_condition(20)[0]
    weights = {}
    for off in (0, 1):
        cfg = CoSinGANConfig(
            max_size=20, min_size=10, scale_factor=0.75, base_channels=4, lesion_contrast_finest_off=off
        )
        model = CoSinGAN.for_training_pair(torch.zeros(20, 20), cond, cfg)
        while len(model.generators) < model.num_scales:
            model.generators.append(model.new_scale())
        for n in range(model.num_scales):
            opt = torch.optim.Adam(model.generators[n].parameters())
            step = ScaleStep(model, n, build_critics(model, n), opt, opt, iterations=4, amp=False)
            weights[off, n] = step.floor_weight
    last = model.num_scales - 1
    assert last >= 1 and all(weights[0, n] == 10.0 for n in range(last + 1))
    assert weights[1, last] == 0.0 and all(weights[1, n] == 10.0 for n in range(last))
    with pytest.raises(ValueError, match="lesion contrast"):
        CoSinGANConfig(lesion_contrast_finest_off=-1)


def test_lesion_density_condition_from_label_maps_and_three_channel_conditions():
    """A density model builds channel 3 from a label map and a density (scalar or map); a 3-channel condition, as
    the generator bundle's verify_net_in_out passes, means the training slice's own density (d = 0)."""
    model = _tiny_model(lesion_density_channel=True)
    lab = np.zeros((30, 30), np.uint8)
    lab[8:22, 5:14] = 1
    lab[10:14, 6:10] = 3
    lesion = lab == 3
    for density, level in ((None, 0.5), (1.0, 1.0), (-1.0, 0.0), (3.0, 1.0)):  # clipped to [-1, 1]
        cond = model.to_condition(lab, density=density).numpy()
        assert cond.shape == (4, 30, 30) and np.allclose(cond[DENSITY_CHANNEL][lesion], level)
        assert (cond[DENSITY_CHANNEL][~lesion] == 0).all()
    dmap = np.where(np.arange(30)[:, None] < 12, -0.5, 0.5) * np.ones((30, 30))
    cond = model.to_condition(lab, density=dmap).numpy()
    assert set(np.unique(cond[DENSITY_CHANNEL][lesion]).round(3)) == {0.25, 0.75}
    net = CoSinGANGenerator(model).eval()
    four = model.to_condition(lab)[None]
    noise = torch.randn(1, 2 * model.num_scales, 30, 30, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(net(four[:, :3], noise), net(four, noise))
    with pytest.raises(ValueError, match="density map shape \\(30, 30\\) does not match the label volume"):
        model.sample_volume(np.repeat(lab[..., None], 3, 2), density=dmap)


def test_noise_weight_is_one_in_the_lungs_and_the_set_weights_in_body_and_air():
    from cosingan_monai.networks.generator import noise_weight

    cond = torch.zeros(1, 3, 20, 20)
    cond[0, 2, 2:18, 2:18] = 1  # body
    cond[0, 0, 8:12, 5:9] = 1  # lung (inside the body)
    w = noise_weight(cond, body_weight=0.5, air_weight=0.1, has_body=True)[0, 0]
    assert w[10, 6].item() == pytest.approx(1.0) and w[10, 9].item() == pytest.approx(1.0)  # lung, 1 px dilated
    assert w[15, 15].item() == pytest.approx(0.5) and w[0, 0].item() == pytest.approx(0.1)
    assert noise_weight(cond, 0.5, 0.1, has_body=False)[0, 0, 0, 0].item() == pytest.approx(0.5)  # body everywhere
    cond[0, 2] = 0.5  # soft (area-resized) conditions interpolate
    assert noise_weight(cond, 0.5, 0.1, True)[0, 0, 0, 0].item() == pytest.approx(0.3)


def test_finer_scales_weigh_their_noise_and_old_model_files_keep_one_amplitude(tmp_path):
    model = _tiny_model()
    assert model.generators[0].noise_weights is None  # the coarsest scale lays out the slice: uniform noise
    assert all(g.noise_weights == (0.5, 0.1) for g in model.generators[1:])
    g, cond = model.generators[1], torch.zeros(1, 3, 16, 16)
    cond[:, 2, 4:12, 4:12] = 1
    up, noise = torch.zeros(1, 1, 16, 16), torch.ones(1, 1, 16, 16)
    seen = {}
    g.stage1.register_forward_hook(lambda mod, args, out: seen.update(x=args[0][:, :1].clone()))
    g.forward_stage1(up, cond, noise)
    assert seen["x"][0, 0, 0, 0].item() == pytest.approx(0.1) and seen["x"][0, 0, 8, 8].item() == pytest.approx(0.5)
    payload = model.payload()
    assert payload["config"]["lesion_contrast_weight"] == 10.0  # the floor is on by default since 0.4.0
    for key in ("noise_body_weight", "noise_air_weight", "lesion_contrast_weight"):
        del payload["config"][key]  # a model file written before the fields existed
    old = CoSinGAN.from_payload(payload)
    assert all(g.noise_weights is None for g in old.generators)
    assert (old.config.noise_body_weight, old.config.noise_air_weight) == (1.0, 1.0)
    assert old.config.lesion_contrast_weight == 0.0  # ... and a file from before the floor trained without it
    with pytest.raises(ValueError, match="noise region weights must be >= 0"):
        CoSinGANConfig(noise_air_weight=-0.1)


def test_lesion_contrast_floor_pays_only_for_lesions_fainter_than_the_fraction():
    from cosingan_monai.engines.losses import lesion_contrast_floor

    cond = torch.zeros(1, 3, 20, 20)
    cond[:, 0, 4:16, 4:16] = 1  # lung
    cond[:, 1, 6:10, 6:10] = 1  # lesion, 16 px inside it
    cond[:, 2] = 1
    real = torch.full((1, 1, 20, 20), -0.5)
    real[:, :, 6:10, 6:10] = -0.1  # contrast 0.4 (300 HU)
    assert lesion_contrast_floor(real, real, cond, fraction=0.75).item() == 0.0
    faint = real.clone()
    faint[:, :, 6:10, 6:10] = -0.4  # contrast 0.1: 0.75 x 0.4 - 0.1 = 0.2 short
    assert lesion_contrast_floor(faint, real, cond, fraction=0.75).item() == pytest.approx(0.2, abs=1e-6)
    dense = real.clone()
    dense[:, :, 6:10, 6:10] = 0.5  # denser than real: no cost (one-sided)
    assert lesion_contrast_floor(dense, real, cond, fraction=0.75).item() == 0.0
    assert lesion_contrast_floor(faint, real, cond, fraction=0.75, min_px=17.0).item() == 0.0  # lesion too small
