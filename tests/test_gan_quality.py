"""CoSinGAN quality tests on one tiny model trained once per module on a phantom slice (CPU, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gan_helpers import config_for_test_preset
from scipy import ndimage as ndi

from cosingan_monai.data.lungmask import body_mask
from cosingan_monai.data.transforms import DENSITY_CHANNEL, density_level, hu_to_unit, label_to_condition, select_slices
from cosingan_monai.metrics.realism import analysis_slice, compare_sets
from cosingan_monai.networks import CoSinGAN, CoSinGANConfig
from cosingan_monai.networks.pyramid import resize
from cosingan_monai.phantom.generator import make_phantom_case

QUALITY_ITERS = 120  # per scale; the test preset's own count is for bundle smoke runs


def _slice(seed: int, size: int = 96) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    case = make_phantom_case(seed, size=size, slices=16)
    z = select_slices(case.label, 1)[0]
    spacing = np.abs(np.diag(case.affine)[:2])
    return case.image[..., z], case.label[..., z], spacing


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_torch_thread):
    """(model, training HU slice, its label) after a short test-preset training on phantom case 0."""
    from cosingan_monai.engines.train_loop import train_cosingan

    img, lab, _ = _slice(0)
    cond = label_to_condition(lab, body_mask(img))
    cfg = config_for_test_preset(iters_per_scale=QUALITY_ITERS)
    model = train_cosingan(img, cond, cfg, tmp_path_factory.mktemp("gan"), progress=False, resume=False)
    return model, img, lab


def _on_grid(model: CoSinGAN, label: np.ndarray) -> np.ndarray:
    """A label map nearest-resized to the model's finest grid."""
    t = torch.as_tensor(label.astype(np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=model.sizes[-1], mode="nearest-exact")[0, 0].numpy().astype(int)


def _lesion_like_fraction(hu: np.ndarray, region: np.ndarray, threshold: float) -> float:
    """Share of `region` pixels brighter than `threshold` (lesion-like), over all samples (n, H, W)."""
    return float((hu[:, region] > threshold).mean())


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_reconstruction_beats_constant_image(trained):
    model, _, _ = trained
    real = model.train_image
    rec = model.reconstruct()
    l1 = (rec - real).abs().mean().item()
    const = (real - real.mean()).abs().mean().item()
    assert l1 < 0.5 * const, (l1, const)


def test_seeds_vary_and_repeat(trained):
    model, _, lab = trained
    cond = model.train_condition[0]
    a = model.sample(cond, n=8, seed=1)
    b = model.sample(cond, n=8, seed=1)
    c = model.sample(cond, n=8, seed=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    lung = cond[0] > 0.5
    std_in_lung = a[:, 0].std(0)[lung].mean().item()
    assert std_in_lung > 1e-3, std_in_lung
    assert a.shape == (8, 1, *model.sizes[-1]) and a.min() >= -1 and a.max() <= 1


def test_samples_respect_the_condition_on_an_unseen_mask(trained):
    model, img, lab = trained
    _, lab2, spacing = _slice(3)
    hu = model.to_hu(model.sample(lab2, n=6, seed=0, spacing=spacing))[:, 0].numpy()
    grid = _on_grid(model, lab2)
    infection, healthy = grid == 3, (grid == 1) | (grid == 2)
    assert infection.sum() >= 4 and healthy.sum() >= 20
    inf_hu, lung_hu = hu[:, infection].mean(), hu[:, healthy].mean()
    real = model.to_hu(model.train_image)[0, 0].numpy()
    real_grid = _on_grid(model, lab)
    real_gap = real[real_grid == 3].mean() - real[(real_grid == 1) | (real_grid == 2)].mean()
    assert inf_hu - lung_hu > 0.3 * real_gap, (inf_hu, lung_hu, real_gap)
    # outside the body is air: near the window minimum (-1250 HU; phantom air is -1000 HU)
    body = model.to_condition(lab2, spacing=spacing)
    outside = resize(body[None], model.sizes[-1], "area")[0, 2].numpy() < 0.05
    assert hu[:, outside].mean() < -900.0, hu[:, outside].mean()


def test_no_infection_condition_gives_lesion_free_lung(trained):
    model, _, _ = trained
    cond = model.train_condition[0].clone()
    real = model.to_hu(model.train_image)[0, 0].numpy()
    inf = cond[1].numpy() > 0.5
    # lung interior: partial-volume pixels at the chest wall are bright at this resolution and are not lesions
    interior = ndi.binary_erosion(cond[0].numpy() > 0.5)
    healthy = interior & ~inf
    threshold = 0.5 * (real[inf].mean() + real[healthy].mean())
    with_inf = model.to_hu(model.sample(cond, n=6, seed=4))[:, 0].numpy()
    cond[1] = 0.0
    without = model.to_hu(model.sample(cond, n=6, seed=4))[:, 0].numpy()
    gap_with = with_inf[:, inf].mean() - with_inf[:, healthy].mean()
    gap_without = without[:, inf].mean() - without[:, healthy].mean()
    assert gap_with > 0.3 * (real[inf].mean() - real[healthy].mean()), gap_with
    assert gap_without < 0.3 * gap_with, (gap_without, gap_with)
    # lesion-like pixels (brighter than the healthy/lesion midpoint): many where the condition asks for infection,
    # few once it does not, and no more of the lung interior than in the real slice's healthy lung (vessels)
    assert _lesion_like_fraction(with_inf, inf, threshold) > 0.5
    assert _lesion_like_fraction(without, inf, threshold) < 0.3
    real_healthy = _lesion_like_fraction(real[None], healthy, threshold)
    assert _lesion_like_fraction(without, interior, threshold) < real_healthy + 0.05


@pytest.fixture(scope="module")
def trained_with_density(tmp_path_factory, one_torch_thread) -> CoSinGAN:
    """The `trained` model's recipe with the lesion density channel on (off in the bundle: docs/design.md)."""
    from cosingan_monai.engines.train_loop import train_cosingan

    img, lab, _ = _slice(0)
    cfg = config_for_test_preset(iters_per_scale=QUALITY_ITERS, lesion_density_channel=True)
    out = tmp_path_factory.mktemp("gan_density")
    return train_cosingan(img, label_to_condition(lab, body_mask(img)), cfg, out, progress=False, resume=False)


def test_lesion_density_channel_sets_the_lesion_density_and_nothing_else(trained_with_density):
    """The density a sample is asked for moves its lesions' HU in that direction; the healthy lung stays put.

    Trained range: jitter_lesion_shift 0.2 = +-150 HU. Measured on this tiny model (120 iterations per scale):
    lesions -435 / -371 / -315 HU at d = -1 / 0 / +1, healthy lung -703 / -709 / -713 HU."""
    model = trained_with_density
    assert model.config.lesion_density_channel and model.config.cond_channels == 4
    cond = model.train_condition[0]
    inf = cond[1].numpy() > 0.5
    healthy = (cond[0].numpy() > 0.5) & ~inf
    lesion_hu, lung_hu = [], []
    for d in (-1.0, 0.0, 1.0):
        c = cond.clone()
        c[DENSITY_CHANNEL] = density_level(c[1], d)
        hu = model.to_hu(model.sample(c, n=6, seed=3))[:, 0].numpy()
        lesion_hu.append(hu[:, inf].mean())
        lung_hu.append(hu[:, healthy].mean())
    assert lesion_hu[0] < lesion_hu[1] < lesion_hu[2], lesion_hu
    assert lesion_hu[2] - lesion_hu[0] > 80.0, lesion_hu
    assert abs(lung_hu[2] - lung_hu[0]) < 0.3 * (lesion_hu[2] - lesion_hu[0]), (lung_hu, lesion_hu)


def test_volume_sampling_is_coherent_along_z(trained):
    model, _, lab = trained
    vol = np.repeat(lab[..., None], 5, axis=2)
    hu = model.sample_volume(vol, seed=0, spacing=(3.6, 3.6))
    assert hu.shape == (*model.sizes[-1], 5)
    assert hu.min() >= -1250.0 and hu.max() <= 250.0
    neighbour = np.abs(np.diff(hu, axis=2)).mean()
    independent = model.to_hu(model.sample(lab, n=2, seed=9, spacing=(3.6, 3.6)))[:, 0].numpy()
    apart = np.abs(independent[0] - independent[1]).mean()
    assert neighbour < 0.7 * apart, (neighbour, apart)


def test_save_load_roundtrip_gives_identical_samples(trained, tmp_path):
    model, _, _ = trained
    path = model.save(tmp_path / "m.pt")
    again = CoSinGAN.load(path)
    cond = model.train_condition[0]
    assert again.sizes == model.sizes and again.noise_amps == model.noise_amps
    assert again.config == model.config
    assert torch.equal(again.sample(cond, n=2, seed=5), model.sample(cond, n=2, seed=5))


def test_body_channel_matters(trained):
    """The generator uses the body channel: removing the body turns the body region towards air."""
    model, img, _ = trained
    assert isinstance(model.config, CoSinGANConfig) and model.config.use_body
    cond = model.train_condition[0].clone()
    soft = (cond[2] > 0.5) & (cond[0] < 0.5)  # body outside the lungs
    with_body = model.sample(cond, n=4, seed=3)[:, 0][:, soft].mean().item()
    cond[2] = cond[0]  # body shrunk to the lungs
    without = model.sample(cond, n=4, seed=3)[:, 0][:, soft].mean().item()
    assert with_body - without > 0.2, (with_body, without)
    assert hu_to_unit(np.float32(-1000.0)) < without + 0.3


def _real_phantom_slices(size: int) -> list:
    """The real reference: lung-bearing slices of phantom cases 1 and 2 (not the training case) on the grid."""
    out = []
    for seed in (1, 2):
        case = make_phantom_case(seed, size=96, slices=16)
        for z in range(0, 16, 3):
            if (case.label[..., z] > 0).sum() > 200:
                out.append(analysis_slice(case.image[..., z], case.label[..., z], size))
    return out


def test_samples_carry_texture_and_vary(trained):
    """Fails for a blurry or mode-collapsed GAN: the samples' lung fine texture beats a Gaussian-blurred real
    slice's, and samples of one mask differ in the lungs (realism diversity)."""
    model, img, lab = trained
    size = model.sizes[-1][0]
    real = _real_phantom_slices(size)
    assert len(real) >= 6
    hu = model.to_hu(model.sample(lab, n=6, seed=21, body=body_mask(img)))[:, 0].numpy()
    grid = _on_grid(model, lab).astype(np.uint8)
    samples = [(h, grid) for h in hu]
    blurred = [(ndi.gaussian_filter(s.hu, 1.0), s.label) for s in real]
    syn = compare_sets(real, samples, size=size, groups=[list(range(6))])
    blur = compare_sets(real, blurred, size=size)
    lung_syn = syn.regions["healthy_lung"].laplacian_ratio
    lung_blur = blur.regions["healthy_lung"].laplacian_ratio
    assert lung_syn > 1.15 * lung_blur, (lung_syn, lung_blur)  # figures: docs/results.md#realism-ablation
    assert syn.diversity.ratio is not None and syn.diversity.ratio > 0.05, syn.diversity
