"""k CoSinGANs: which model renders which condition (engines/model_fit.py, SynthesisEvaluator's model_assignment)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from cosingan_monai.engines.model_fit import (
    ASSIGNMENTS,
    assign_models,
    balanced_fit,
    fit_distances,
    fit_features,
    label_features,
    model_features,
)
from cosingan_monai.engines.synthesis import SynthesisEvaluator, build_condition_items
from cosingan_monai.networks import CoSinGANConfig
from cosingan_monai.networks.pyramid import CoSinGAN

SIZE = 30


def _label(lung_cols: int, lesion_rows: int) -> np.ndarray:
    """Two lungs of 14 rows x `lung_cols` columns with a `lesion_rows` x 4 lesion in the left one."""
    lab = np.zeros((SIZE, SIZE), np.uint8)
    lab[8:22, 2 : 2 + lung_cols] = 1
    lab[8:22, 28 - lung_cols : 28] = 2
    lab[8 : 8 + lesion_rows, 3:7] = 3
    return lab


def _body() -> np.ndarray:
    body = np.zeros((SIZE, SIZE), bool)
    body[3:27, 1:29] = True
    return body


def _model(label: np.ndarray, path) -> str:
    """A tiny untrained CoSinGAN whose training slice has label map `label` (what the fit reads), saved at path."""
    config = CoSinGANConfig(max_size=24, min_size=12, base_channels=4)
    cond = torch.stack([torch.as_tensor(label > 0), torch.as_tensor(label == 3), torch.as_tensor(_body())]).float()
    model = CoSinGAN.for_training_pair(torch.zeros(SIZE, SIZE), cond, config)
    for _ in range(model.num_scales):
        model.new_scale()
    model.save(path)
    return str(path)


def test_fit_features_on_a_hand_made_slice():
    lab = _label(lung_cols=5, lesion_rows=7)  # lungs 2 x 14 x 5 = 140 px, lesion 7 x 4 = 28 px
    feats = fit_features(lab > 0, lab == 3, _body())
    assert feats == pytest.approx([140 / 900, 28 / 140, 24 * 28 / 900])
    assert label_features(lab, _body()) == pytest.approx(feats)
    assert fit_features(np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 4)))[1] == 0.0  # no lung: share 0


def test_balanced_fit_takes_the_nearest_model_within_an_equal_share():
    dist = fit_distances(np.array([[0.1, 0.0, 0.5], [0.11, 0.0, 0.5], [0.3, 0.5, 0.7], [0.12, 0.0, 0.5]]),
                         np.array([[0.1, 0.0, 0.5], [0.3, 0.5, 0.7]]))  # fmt: skip
    assert dist[0, 0] == pytest.approx(0.0) and dist[0, 1] > dist[2, 1]
    # three conditions like model 0, one like model 1; capacity 2 each sends the farthest of the three to model 1
    assert balanced_fit(dist) == [0, 0, 1, 1]
    assert balanced_fit(dist[:, :1]) == [0, 0, 0, 0]
    counts = Counter(balanced_fit(np.random.default_rng(0).random((10, 3))))
    assert max(counts.values()) <= 4 and sum(counts.values()) == 10


def test_assign_models_policies_and_bad_name(tmp_path):
    models = [CoSinGAN.load(_model(_label(5, 7), tmp_path / f"m{i}.pt")) for i in range(3)]
    feats = [np.zeros(3)] * 4
    assert assign_models(feats, models, "round_robin") == [[0], [1], [2], [0]]
    assert assign_models(feats, models, "all") == [[0, 1, 2]] * 4
    assert assign_models(feats, models[:1], "fit") == [[0]] * 4
    # read from the stored condition on the model grid (24 px): the fractions of the 30 px slice to 0.02
    assert model_features(models[0]) == pytest.approx(label_features(_label(5, 7), _body()), abs=0.02)
    with pytest.raises(ValueError, match="model_assignment must be one of"):
        assign_models(feats, models, "nearest")
    assert set(ASSIGNMENTS) == {"fit", "round_robin", "all"}


def _write_condition(label: np.ndarray, path) -> dict[str, str]:
    import nibabel as nib

    nib.save(nib.Nifti1Image(label[..., None], np.eye(4)), str(path))
    return {"label": str(path)}


def test_evaluator_gives_each_condition_and_its_copy_the_model_that_fits(tmp_path):
    small, large = _label(lung_cols=4, lesion_rows=3), _label(lung_cols=11, lesion_rows=12)
    models = [_model(small, tmp_path / "small.pt"), _model(large, tmp_path / "large.pt")]
    # conditions alternate large/small lungs; per sample in turn would give every copy to model 1
    conds = [_write_condition(lab, tmp_path / f"c{i}.nii.gz") for i, lab in enumerate([large, small, large, small])]
    items = build_condition_items(conds)
    assert [it["anatomy"] for it in items] == [0, 0, 1, 1, 2, 2, 3, 3]
    out = tmp_path / "syn"
    engine = SynthesisEvaluator("cpu", models, items, out, samples_per_condition=1, previews=False, amp=False)
    engine.run()
    records = json.loads((out / "records.json").read_text())
    assert records["models"] == models
    by_condition = {r["condition"]: r["model"] for r in records["slices"]}
    assert by_condition == {0: 1, 1: 1, 2: 0, 3: 0, 4: 1, 5: 1, 6: 0, 7: 0}  # large -> model 1, copies alike
    rr = SynthesisEvaluator("cpu", models, items, tmp_path / "rr", 1, previews=False, model_assignment="round_robin")
    assert [m for ms in rr.item_models for m in ms] == [0, 0, 1, 1, 0, 0, 1, 1]
    every = SynthesisEvaluator("cpu", models, items, tmp_path / "all", 2, previews=False, model_assignment="all")
    every.run()
    slices = json.loads((tmp_path / "all" / "records.json").read_text())["slices"]
    assert len(slices) == 8 * 2 * 2 and Counter(r["model"] for r in slices) == {0: 16, 1: 16}


def test_sample_command_offers_the_engine_assignments():
    from click.testing import CliRunner

    from cosingan_monai.commands.sample import sample

    option = next(p for p in sample.params if p.name == "model_assignment")
    assert tuple(option.type.choices) == ASSIGNMENTS
    result = CliRunner().invoke(sample, ["--model-assignment", "nearest"])
    assert result.exit_code != 0 and "nearest" in result.output
