"""Synthesis conditions: lung-bearing slices first, augmented copies, lesion-free negatives, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from cosingan_monai.data.conditions import (
    build_conditions,
    build_volume_anatomies,
    lung_bearing_slices,
    relabel_sides,
    remove_lesions,
)


def _label_volume(nz: int = 6) -> np.ndarray:
    """Two elliptic lungs (left at low x, as in RAS) with a lesion in the left one on every slice but the first."""
    x, y = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    lab = np.zeros((64, 64, nz), np.uint8)
    for z in range(nz):
        lab[((x - 20) / 10) ** 2 + ((y - 32) / 18) ** 2 <= 1, z] = 1
        lab[((x - 44) / 10) ** 2 + ((y - 32) / 18) ** 2 <= 1, z] = 2
        if z:
            lab[((x - 14) / 4) ** 2 + ((y - 30) / 5) ** 2 <= 1, z] = 3
    lab[..., nz - 1] = 0  # a slice without lung
    return lab


def test_lung_bearing_slices_skips_empty():
    assert lung_bearing_slices(_label_volume()) == [0, 1, 2, 3, 4]
    assert lung_bearing_slices(np.zeros((8, 8, 3), np.uint8)) == []


def test_relabel_sides_after_flip_puts_left_lung_at_low_x():
    flipped = _label_volume()[::-1, :, 1].copy()  # left lung now at high x
    fixed = relabel_sides(flipped)
    assert np.nonzero(fixed == 1)[0].mean() < np.nonzero(fixed == 2)[0].mean()
    assert ((fixed == 3) == (flipped == 3)).all()


def test_remove_lesions_keeps_lung_area():
    lab = _label_volume()[..., 2]
    clean = remove_lesions(lab)
    assert not (clean == 3).any()
    assert (clean > 0).sum() == (lab > 0).sum()


def test_build_conditions_counts_negatives_and_is_deterministic():
    lab = _label_volume()
    body = lab > 0
    conds = build_conditions(lab, body, count=40, seed=3, lesion_free_fraction=0.5)
    assert len(conds) == 40
    assert [c.source for c in conds[:5]] == [f"slice {z}" for z in range(5)]
    negatives = sum(not c.infected for c in conds)
    assert negatives >= 5  # slice 0 plus about half of the augmented ones
    assert any("lesion-free" in c.source for c in conds)
    for c in conds:
        assert c.label.shape == (64, 64) and set(np.unique(c.label)) <= {0, 1, 2, 3}
        assert c.body[c.label > 0].all()  # the lungs are inside the body
    again = build_conditions(lab, body, count=40, seed=3, lesion_free_fraction=0.5)
    assert all((a.label == b.label).all() for a, b in zip(conds, again, strict=True))
    other = build_conditions(lab, body, count=40, seed=4, lesion_free_fraction=0.5)
    assert any((a.label != b.label).any() for a, b in zip(conds[5:], other[5:], strict=True))


def test_build_conditions_refuses_lungless_volume():
    with pytest.raises(ValueError, match="no lung"):
        build_conditions(np.zeros((8, 8, 2), np.uint8), np.zeros((8, 8, 2), bool), count=3)


def test_lesion_density_map_draws_one_density_per_lesion():
    from cosingan_monai.data.conditions import lesion_density_map

    lab = _label_volume()[..., 2].copy()
    x, y = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    lab[((x - 48) / 3) ** 2 + ((y - 20) / 3) ** 2 <= 1] = 3  # a second, separate lesion in the right lung
    a = lesion_density_map(lab, 0.5, np.random.default_rng(1))
    b = lesion_density_map(lab, 0.5, np.random.default_rng(1))
    assert a is not None and np.array_equal(a, b)  # same seed, same densities
    assert (a[lab != 3] == 0).all()
    levels = [np.unique(a[(lab == 3) & (x < 32)]), np.unique(a[(lab == 3) & (x >= 32)])]
    assert [len(v) for v in levels] == [1, 1]  # one density per connected lesion
    assert levels[0][0] != levels[1][0] and max(abs(levels[0][0]), abs(levels[1][0])) <= 0.5
    assert lesion_density_map(remove_lesions(lab), 0.5, np.random.default_rng(1)) is None  # nothing to draw
    assert lesion_density_map(lab, 0.0, np.random.default_rng(1)) is None
    with pytest.raises(ValueError, match="spread must be in \\[0, 1\\]; got 1.5"):
        lesion_density_map(lab, 1.5, np.random.default_rng(1))


def _lung_volume(nz: int = 5) -> np.ndarray:
    """The same two lungs with a lesion on every slice (z-constant): one warp per volume keeps it z-constant."""
    lab = _label_volume(3)[..., 1]
    return np.repeat(lab[..., None], nz, axis=2)


def test_relabel_sides_works_on_a_volume():
    flipped = _lung_volume()[::-1].copy()
    fixed = relabel_sides(flipped)
    assert np.nonzero(fixed == 1)[0].mean() < np.nonzero(fixed == 2)[0].mean()
    assert ((fixed == 3) == (flipped == 3)).all() and ((fixed > 0) == (flipped > 0)).all()


def test_volume_anatomies_case_first_then_one_warp_per_volume():
    lab = _lung_volume()
    body = np.zeros(lab.shape, bool)
    body[4:60, 4:60] = True
    anatomies = build_volume_anatomies(lab, body, count=4, seed=1)
    assert [a[2] for a in anatomies] == ["case", "case warped 1", "case warped 2", "case warped 3"]
    assert (anatomies[0][0] == lab).all() and (anatomies[0][1] == body).all()
    lung = (lab > 0).sum()
    for warped, wbody, _ in anatomies[1:]:
        assert warped.shape == lab.shape and set(np.unique(warped)) <= {0, 1, 2, 3}
        assert (warped != lab).mean() > 0.005  # another anatomy
        assert 0.5 * lung <= (warped > 0).sum() <= 1.5 * lung and (warped == 3).any()
        assert (warped == warped[..., :1]).all()  # one warp for every slice: still constant along z
        assert wbody[warped > 0].all()  # the lungs stay inside the body
        assert np.nonzero(warped == 1)[0].mean() < np.nonzero(warped == 2)[0].mean()  # left lung at low x
    again = build_volume_anatomies(lab, body, count=4, seed=1)
    assert all((a[0] == b[0]).all() for a, b in zip(anatomies, again, strict=True))
    other = build_volume_anatomies(lab, body, count=4, seed=2)
    assert any((a[0] != b[0]).any() for a, b in zip(anatomies[1:], other[1:], strict=True))


def test_volume_anatomies_strength_zero_repeats_the_case():
    lab = _lung_volume()
    copies = build_volume_anatomies(lab, lab > 0, count=3, seed=0, strength=0.0)
    assert len(copies) == 3 and all((c[0] == lab).all() and c[2] == "case" for c in copies)


@pytest.mark.parametrize(
    ("label", "body", "message"),
    [
        (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), bool), "no lung"),
        (np.ones((8, 8, 3), np.uint8), np.zeros((8, 8, 2), bool), "one 3D shape"),
        (np.ones((8, 8), np.uint8), np.zeros((8, 8), bool), "one 3D shape"),
    ],
)
def test_volume_anatomies_refuse_bad_volumes(label, body, message):
    with pytest.raises(ValueError, match=message):
        build_volume_anatomies(label, body, count=2)
