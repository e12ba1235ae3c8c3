"""Automatic body and lung masks: toy slices, the phantom, and (when present) real CT in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cosingan_monai.data.io import display_to_ras, windowed_to_hu
from cosingan_monai.data.lungmask import auto_lung_mask, body_from_lungs, body_mask
from cosingan_monai.phantom.generator import make_phantom_case


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks."""
    return float(2 * (a & b).sum() / max(int(a.sum() + b.sum()), 1))


def toy_chest(n: int = 128) -> dict[str, np.ndarray]:
    """A RAS chest slice: -2048 padding outside the scan circle, air, a table, body, lungs, lesion, stomach gas."""
    x, y = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    c = n / 2
    hu = np.full((n, n), -1000.0, np.float32)
    hu[(x - c) ** 2 + (y - c) ** 2 > (0.5 * n) ** 2] = -2048.0
    hu[:, 10:13] = 150.0  # the table, posterior (low y), apart from the body
    body = ((x - c) / (0.44 * n)) ** 2 + ((y - c) / (0.3 * n)) ** 2 <= 1
    hu[body] = 40.0
    left = ((x - 0.31 * n) / (0.12 * n)) ** 2 + ((y - c - 2) / (0.2 * n)) ** 2 <= 1
    right = ((x - 0.69 * n) / (0.12 * n)) ** 2 + ((y - c - 2) / (0.2 * n)) ** 2 <= 1
    hu[left | right] = -860.0
    # a 10 mm deep, 30 mm long consolidation on the right lung's lateral wall (longer bites need `include`)
    inner = ((x - 0.69 * n) / (0.12 * n - 5)) ** 2 + ((y - c - 2) / (0.2 * n - 5)) ** 2 <= 1
    lesion = right & ~inner & (x > 0.69 * n) & (np.abs(y - c - 2) < 0.06 * n)
    hu[lesion] = 30.0
    nodule = (x - 0.69 * n) ** 2 + (y - c - 12) ** 2 <= 5**2  # a 2 cm consolidation surrounded by lung
    hu[nodule] = 25.0
    gas = (x - 0.45 * n) ** 2 + (y - 0.38 * n) ** 2 <= (0.04 * n) ** 2  # a gas bubble in soft tissue, no lung
    hu[gas] = -1000.0
    hu += np.random.default_rng(0).normal(0, 12, hu.shape).astype(np.float32)
    truth = np.zeros((n, n), np.uint8)
    truth[left], truth[right] = 1, 2
    return {"hu": hu, "body": body, "truth": truth, "lesion": lesion, "nodule": nodule, "gas": gas}


def test_body_mask_drops_padding_and_table() -> None:
    t = toy_chest()
    b = body_mask(t["hu"])
    assert b.dtype == bool and b.shape == t["hu"].shape
    assert dice(b, t["body"]) > 0.98
    assert not b[:, 10:13].any()  # table
    vol = np.stack([t["hu"], t["hu"], np.full_like(t["hu"], -1000.0)], -1)
    bv = body_mask(vol)
    assert bv.shape == vol.shape and (bv[..., 0] == b).all() and not bv[..., 2].any()


def test_auto_lung_mask_toy_slice_sides_lesion_gas() -> None:
    t = toy_chest()
    lab = auto_lung_mask(t["hu"], spacing=(2.0, 2.0))
    assert lab.dtype == np.uint8 and set(np.unique(lab).tolist()) == {0, 1, 2}
    assert dice(lab == 1, t["truth"] == 1) > 0.95 and dice(lab == 2, t["truth"] == 2) > 0.95  # left = low x
    assert (lab[t["nodule"]] == 2).all()  # consolidation inside the lung is lung
    # a 30 mm wall bite is only partly sealed by the 20 mm closing; a known lesion mask (include=) completes it
    assert 0.2 < (lab[t["lesion"]] == 2).mean() < 1.0
    helped = auto_lung_mask(t["hu"], spacing=(2.0, 2.0), include=t["lesion"])
    assert (helped[t["lesion"]] == 2).all()
    assert not lab[t["gas"]].any()
    vol = auto_lung_mask(np.stack([t["hu"]] * 4, -1), spacing=(2.0, 2.0, 5.0))
    assert vol.shape == (*t["hu"].shape, 4) and (vol[..., 1] == lab).mean() > 0.99


def test_auto_lung_mask_include_and_errors() -> None:
    t = toy_chest()
    hu = t["hu"].copy()
    blob = (t["truth"] == 1) & (np.arange(128)[None, :] > 70)  # dense disease filling the top of the left lung
    hu[blob] = 35.0
    plain = auto_lung_mask(hu, spacing=(2.0, 2.0))
    helped = auto_lung_mask(hu, spacing=(2.0, 2.0), include=blob)
    assert (helped[blob] == 1).all() and (helped == 1).sum() > (plain == 1).sum()
    with pytest.raises(ValueError, match="2D"):
        auto_lung_mask(np.zeros((2, 8, 8, 8)))
    with pytest.raises(ValueError, match="include mask shape"):
        auto_lung_mask(hu, include=blob[:10])


def test_body_from_lungs_is_plausible() -> None:
    t = toy_chest()
    b = body_from_lungs(t["truth"], spacing=(2.0, 2.0))
    assert b[t["truth"] > 0].all()
    assert dice(b, t["body"]) > 0.8
    vol = np.stack([t["truth"], np.zeros_like(t["truth"])], -1)
    bv = body_from_lungs(vol, spacing=(2.0, 2.0, 5.0))
    assert (bv[..., 1] == bv[..., 0]).all()  # lung-free slice copies its neighbour


@pytest.mark.parametrize("seed,healthy", [(0, False), (1, True)])
def test_auto_lung_mask_on_phantom(seed: int, healthy: bool) -> None:
    case = make_phantom_case(seed, size=160, slices=24, healthy=healthy)
    sp = tuple(float(s) for s in np.linalg.norm(case.affine[:3, :3], axis=0))
    lab = auto_lung_mask(case.image, spacing=sp)
    d = dice(lab > 0, case.label > 0)
    swapped = ((lab == 1) & (case.label == 2)).sum() + ((lab == 2) & (case.label == 1)).sum()
    body_d = dice(body_from_lungs(case.label, spacing=sp), body_mask(case.image, spacing=sp))
    print(f"phantom seed {seed} healthy={healthy}: lung Dice {d:.3f}, side swaps {swapped}, body {body_d:.3f}")
    assert d >= 0.95
    assert swapped < 0.01 * (case.label > 0).sum()
    assert body_d > 0.8
    if not healthy:
        inf = case.label == 3
        assert (lab[inf] > 0).mean() > 0.85


def test_totalseg_lung_bases(shared_data: Path) -> None:
    ct = nib.as_closest_canonical(nib.load(shared_data / "real-ct" / "totalseg_example_ct_sm.nii.gz"))
    seg = nib.as_closest_canonical(nib.load(shared_data / "real-ct" / "totalseg_example_seg.nii.gz"))
    hu = np.asarray(ct.dataobj, dtype=np.float32)
    s = np.asarray(seg.dataobj)
    lab = auto_lung_mask(hu, spacing=tuple(float(v) for v in ct.header.get_zooms()[:3]))
    zs = slice(19, 30)
    true = (s >= 10) & (s <= 14)
    d = dice(lab[..., zs] > 0, true[..., zs])
    dl = dice(lab[..., zs] == 1, np.isin(s[..., zs], (10, 11)))  # TotalSegmentator: 10-11 left lobes
    dr = dice(lab[..., zs] == 2, np.isin(s[..., zs], (12, 13, 14)))
    below = int((lab[..., :19] > 0).sum())
    print(f"totalseg z=19..29: lung Dice {d:.3f} (left {dl:.3f}, right {dr:.3f}); lung voxels below z=19: {below}")
    assert d >= 0.85 and dl >= 0.8 and dr >= 0.8
    assert below < 0.05 * true.sum()  # bowel and stomach gas below the lungs are not lung


def test_medseg_lungs_and_infection(shared_data: Path) -> None:
    from PIL import Image

    images = sorted((shared_data / "medseg100-dev" / "images").glob("*.png"))[::2]  # every other slice: time budget
    if not images:
        pytest.skip("no MedSeg PNGs in ../shared/data/medseg100-dev/images")
    both, inside = [], []
    for path in images:
        hu = windowed_to_hu(display_to_ras(np.asarray(Image.open(path), dtype=np.float32)))
        inf = display_to_ras(np.asarray(Image.open(path.parent.parent / "masks" / path.name))) > 0
        lab = auto_lung_mask(hu, spacing=(0.75, 0.75))
        both.append(min((lab == 1).sum(), (lab == 2).sum()) * 0.75**2 / 100 >= 10.0)  # >= 10 cm^2 each side
        if inf.any():
            inside.append(float((lab[inf] > 0).mean()))
    print(
        f"medseg {len(images)} slices: both lungs on {np.mean(both):.3f}; infection inside auto lung "
        f"median {np.median(inside):.3f}, mean {np.mean(inside):.3f}, min {np.min(inside):.3f}"
    )
    assert np.mean(both) >= 0.9
    assert np.median(inside) >= 0.8
