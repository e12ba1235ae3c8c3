"""Transforms: HU <-> network range, 0-255 inputs, label -> condition, infection-only labels, slices, pyramids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from cosingan_monai.data.io import windowed_to_hu
from cosingan_monai.data.lungmask import infection_to_labels
from cosingan_monai.data.transforms import (
    LabelToConditiond,
    SelectSlicesd,
    hu_to_unit,
    label_to_condition,
    pyramid_sizes,
    select_slices,
    unit_to_hu,
)
from cosingan_monai.networks.pyramid import resize


def chest_slice(n: int = 96, consolidation: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A toy RAS chest slice in HU (air outside, soft-tissue body, two lungs) and its true lung labels."""
    x, y = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    c = n / 2
    hu = np.full((n, n), -1000.0, np.float32)
    body = ((x - c) / (0.45 * n)) ** 2 + ((y - c) / (0.33 * n)) ** 2 <= 1
    hu[body] = 40.0
    left = ((x - 0.3 * n) / (0.13 * n)) ** 2 + ((y - c) / (0.22 * n)) ** 2 <= 1
    right = ((x - 0.7 * n) / (0.13 * n)) ** 2 + ((y - c) / (0.22 * n)) ** 2 <= 1
    hu[left | right] = -850.0
    hu[(x - 0.3 * n) ** 2 + (y - c) ** 2 <= (0.02 * n) ** 2] = 30.0  # a vessel inside the left lung
    truth = np.zeros((n, n), np.uint8)
    truth[left], truth[right] = 1, 2
    if consolidation:  # dense lesion against the right lung's lateral wall
        hu[right & (x > 0.78 * n) & (np.abs(y - c) < 0.08 * n)] = 20.0
    rng = np.random.default_rng(0)
    hu += rng.normal(0, 10, hu.shape).astype(np.float32)
    return hu, truth


# --------------------------------------------------------------------------------------------- intensities


def test_hu_window_known_points_and_clip() -> None:
    hu = np.array([-1250.0, 250.0, -500.0, -3000.0, 2000.0, -1000.0])
    np.testing.assert_allclose(hu_to_unit(hu), [-1.0, 1.0, 0.0, -1.0, 1.0, -1 + 2 * 250 / 1500], atol=1e-6)
    np.testing.assert_allclose(hu_to_unit(hu, clip=False)[3], -1 - 2 * 1750 / 1500, atol=1e-6)
    t = torch.tensor([-1250.0, -500.0, 250.0])
    assert torch.allclose(hu_to_unit(t), torch.tensor([-1.0, 0.0, 1.0]))


def test_unit_to_hu_inverts_inside_window() -> None:
    hu = np.linspace(-1250, 250, 31)
    np.testing.assert_allclose(unit_to_hu(hu_to_unit(hu)), hu, atol=1e-3)
    np.testing.assert_allclose(unit_to_hu(np.array([-1.0, 0.0, 1.0])), [-1250.0, -500.0, 250.0])


def test_windowed_0_255_maps_consistently() -> None:
    png = np.array([[0, 255], [85, 170]], np.uint8)
    hu = windowed_to_hu(png.astype(np.float32))
    assert hu.dtype == np.float32
    np.testing.assert_allclose(hu, [[-1250.0, 250.0], [-750.0, -250.0]])
    np.testing.assert_allclose(hu_to_unit(hu), [[-1, 1], [-1 / 3, 1 / 3]], atol=1e-6)
    t = windowed_to_hu(torch.tensor([0, 255], dtype=torch.uint8).float())
    assert torch.allclose(t, torch.tensor([-1250.0, 250.0]))


# --------------------------------------------------------------------------------------------- labels


def test_label_to_condition_channels() -> None:
    lab = np.array([[0, 1, 2], [3, 3, 0], [1, 0, 2]], np.uint8)
    body = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0]], bool)
    c = label_to_condition(lab)
    assert c.shape == (2, 3, 3) and c.dtype == np.float32
    np.testing.assert_array_equal(c[0], [[0, 1, 1], [1, 1, 0], [1, 0, 1]])
    np.testing.assert_array_equal(c[1], [[0, 0, 0], [1, 1, 0], [0, 0, 0]])
    cb = label_to_condition(lab, body)
    assert cb.shape == (3, 3, 3)
    np.testing.assert_array_equal(cb[2], [[1, 1, 1], [1, 1, 0], [1, 0, 1]])  # lungs are always inside the body
    with pytest.raises(ValueError, match="does not match"):
        label_to_condition(lab, body[:2])


def test_label_to_conditiond_body_from_image_or_lungs() -> None:
    hu, truth = chest_slice()
    out = LabelToConditiond()({"image": hu, "label": truth})
    cond = out["condition"]
    assert cond.shape == (3, *hu.shape)
    body_true = (hu > -500) | (truth > 0)
    assert (cond[2] == body_true).mean() > 0.99  # body from the image
    bare = LabelToConditiond()({"label": truth})["condition"]
    assert bare.shape == (3, *hu.shape)
    assert bare[2][truth > 0].all() and bare[2].sum() > 1.3 * (truth > 0).sum()  # plausible body around the lungs
    two = LabelToConditiond(with_body=False)({"label": torch.as_tensor(truth)})["condition"]
    assert isinstance(two, torch.Tensor) and two.shape == (2, *hu.shape)
    with pytest.raises(ValueError, match="windowed to \\[-1, 1\\]"):
        LabelToConditiond()({"image": hu_to_unit(hu), "label": truth})


def test_infection_only_to_labels() -> None:
    hu, truth = chest_slice(consolidation=False)
    inf = np.zeros_like(truth)
    inf[(truth == 2) & (np.arange(96)[None, :] > 50)] = 1  # part of the right lung
    inf[10:12, 10:12] = 0
    out = infection_to_labels(hu, inf == 1)
    assert out.dtype == np.uint8 and set(np.unique(out).tolist()) == {0, 1, 2, 3}
    np.testing.assert_array_equal(out == 3, inf == 1)
    lung = out > 0
    dice = 2 * (lung & (truth > 0)).sum() / (lung.sum() + (truth > 0).sum())
    assert dice > 0.95
    assert ((out == 1) & (truth == 1)).sum() > 0.95 * (truth == 1).sum()  # left = low x
    assert ((out == 2) & (truth == 2)).sum() > 0.9 * ((truth == 2) & (inf == 0)).sum()
    with pytest.raises(ValueError, match="does not match"):
        infection_to_labels(hu, inf[:50] == 1)


# --------------------------------------------------------------------------------------------- slices


def slice_volume() -> np.ndarray:
    """z=2: big lung, all infected; z=6: lung half infected; z=10: bigger uninfected lung; others: small lungs."""
    lab = np.zeros((40, 40, 14), np.uint8)
    lab[5:15, 5:35, :] = 1  # small left lung everywhere
    lab[5:35, 5:35, 2] = 3  # larger lung, entirely infection
    lab[5:30, 5:35, 6] = 1
    lab[5:15, 5:35, 6] = 3  # infected and healthy
    lab[5:38, 2:38, 10] = 2  # largest lung, no infection
    return lab


def test_select_slices_prefers_mixed_slice() -> None:
    lab = slice_volume()
    assert select_slices(lab, k=1) == [6]
    two = select_slices(lab, k=2, min_gap=2)
    assert two[0] == 6 and abs(two[1] - 6) >= 2
    clean = np.where(lab == 3, 1, lab).astype(np.uint8)
    clean[:, :, 6] = np.where(lab[:, :, 6] > 0, 1, 0)
    assert select_slices(clean, k=1) == [10]  # no infection: largest lung
    three = select_slices(clean, k=3)
    assert three[0] == 10 and len(set(three)) == 3
    assert all(abs(a - b) >= 2 for i, a in enumerate(three) for b in three[i + 1 :])
    with pytest.raises(ValueError, match="no lung"):
        select_slices(np.zeros((4, 4, 3), np.uint8))


def test_select_slicesd_returns_2d_slices_with_moved_affine() -> None:
    lab = slice_volume()
    img = np.random.default_rng(0).normal(size=lab.shape).astype(np.float32)
    aff = torch.tensor([[0.8, 0, 0, -10], [0, 0.8, 0, -20], [0, 0, 5.0, -30], [0, 0, 0, 1]], dtype=torch.float64)
    d = {"image": MetaTensor(torch.from_numpy(img), affine=aff), "label": MetaTensor(torch.from_numpy(lab), affine=aff)}
    one = SelectSlicesd()(d)
    assert one["slice_index"] == 6 and one["image"].shape == (40, 40)
    np.testing.assert_array_equal(one["label"].numpy(), lab[:, :, 6])
    assert float(one["image"].affine[2, 3]) == pytest.approx(-30 + 6 * 5.0)
    many = SelectSlicesd(k=2)({"image": img, "label": lab})
    assert isinstance(many, list) and len(many) == 2 and many[0]["slice_index"] == 6
    np.testing.assert_array_equal(many[1]["image"], img[:, :, many[1]["slice_index"]])


# --------------------------------------------------------------------------------------------- pyramid


def test_pyramid_sizes() -> None:
    assert pyramid_sizes((512, 512), 128) == [(30, 30), (41, 41), (54, 54), (72, 72), (96, 96), (128, 128)]
    sizes = pyramid_sizes((512, 384), 256)
    assert sizes[-1] == (256, 192) and min(sizes[0]) >= 25 and min(sizes[0]) * 0.75 < 25
    assert all(abs(a / b - 512 / 384) < 0.06 for a, b in sizes)
    assert pyramid_sizes((300, 300), 32) == [(32, 32)]  # too small to shrink above min_size
    assert pyramid_sizes((64, 64), 64, min_size=10, scale_factor=0.5) == [(16, 16), (32, 32), (64, 64)]
    with pytest.raises(ValueError):
        pyramid_sizes((64, 64), 64, scale_factor=1.5)


def test_resize_area_keeps_mask_fraction() -> None:
    rng = np.random.default_rng(1)
    mask = torch.from_numpy((rng.random((1, 2, 128, 128)) < 0.3).astype(np.float32))
    sizes = pyramid_sizes((128, 128), 128)
    pyr = [resize(mask, s, "area") for s in sizes]
    assert [tuple(p.shape) for p in pyr] == [(1, 2, *s) for s in sizes]
    for p in pyr:
        assert float(p.min()) >= 0.0 and float(p.max()) <= 1.0
        assert abs(float(p.mean()) - float(mask.mean())) < 0.01
    exact = resize(mask, (64, 64), "area")
    assert torch.allclose(exact, mask.reshape(1, 2, 64, 2, 64, 2).mean((3, 5)))
    img = torch.from_numpy(rng.normal(size=(3, 1, 100, 80)).astype(np.float32))
    out = [resize(img, s, "image") for s in [(25, 20), (50, 40)]]
    assert [tuple(o.shape) for o in out] == [(3, 1, 25, 20), (3, 1, 50, 40)]
    assert float(out[0].std()) < float(img.std()) / 2  # antialiased: noise averages out
