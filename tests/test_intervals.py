"""Held-out intervals: the case bootstrap, ROC AUC, and the pipeline's per-case reading of bundle evaluation files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cosingan_monai.metrics.intervals import Interval, cluster_bootstrap, paired_difference, pooled_auc, roc_auc
from cosingan_monai.pipeline.heldout import case_of, heldout_markdown, heldout_summary, per_case_values


def test_roc_auc_matches_the_pair_count():
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.5, 0.5])
    labels = np.array([0, 0, 1, 1, 1, 0])
    pairs = [(p, n) for p in scores[labels == 1] for n in scores[labels == 0]]
    expected = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert roc_auc(scores, labels) == pytest.approx(expected)
    assert roc_auc(np.arange(4.0), np.array([0, 0, 1, 1])) == 1.0
    assert math.isnan(roc_auc(np.arange(3.0), np.ones(3)))


def test_cluster_bootstrap_is_seeded_and_widens_with_case_spread():
    rng = np.random.default_rng(1)
    tight = {f"c{i}": 0.5 + 0.01 * rng.standard_normal(30) for i in range(8)}
    spread = {f"c{i}": 0.5 + 0.2 * (i - 3.5) / 3.5 + 0.01 * rng.standard_normal(30) for i in range(8)}
    a, b = cluster_bootstrap(tight, seed=3), cluster_bootstrap(tight, seed=3)
    assert a == b  # same seed, same interval
    wide = cluster_bootstrap(spread)
    assert a.low < a.value < a.high and wide.low < wide.value < wide.high
    assert (wide.high - wide.low) > 5 * (a.high - a.low)  # cases, not slices, carry the uncertainty
    # the point estimate is the pooled mean over all finite values, NaN (healthy) cases take part but add nothing
    with_healthy = {**spread, "healthy": np.full(30, np.nan)}
    iv = cluster_bootstrap(with_healthy)
    assert iv.value == pytest.approx(np.mean(np.concatenate(list(spread.values()))))
    assert iv.cases == 8


def test_paired_difference_cancels_case_difficulty():
    rng = np.random.default_rng(0)
    difficulty = {f"c{i}": rng.uniform(0.1, 0.8) for i in range(10)}
    ours = {k: d + 0.1 + 0.005 * rng.standard_normal(20) for k, d in difficulty.items()}
    theirs = {k: d + 0.005 * rng.standard_normal(20) for k, d in difficulty.items()}
    diff = paired_difference(ours, theirs)
    unpaired = cluster_bootstrap(ours)
    assert diff.value == pytest.approx(0.1, abs=0.01)
    assert 0.08 < diff.low < diff.high < 0.12  # far tighter than either model's own interval
    assert unpaired.high - unpaired.low > 5 * (diff.high - diff.low)


def test_pooled_auc_over_cases():
    groups = [np.array([[0.9, 1], [0.2, 0]]), np.array([[0.6, 1], [0.7, 0]])]
    assert pooled_auc(groups) == pytest.approx(0.75)


def _write_raw(path, rows):
    path.write_text("filename,class0,mean\n" + "".join(f"{f},{v},{v}\n" for f, v in rows), encoding="utf-8")


def test_heldout_summary_reads_per_case_csvs_and_ends_with_a_verdict(tmp_path):
    eval_root = tmp_path / "eval"
    rng = np.random.default_rng(0)
    cases = [f"phantom_{i:03d}" for i in range(8)]
    healthy = {"phantom_002", "phantom_006"}
    for model, level, prefix in (("covid_seg_2d", 0.45, "val_"), ("covid_seg_2d_baseline", 0.2, "test_")):
        d = eval_root / model
        d.mkdir(parents=True)
        inf_rows, lung_rows = [], []
        for c in cases:
            for z in range(5):
                f = f"/data/slices/images/{c}_z{z:03d}.nii.gz"
                inf_rows.append((f, "nan" if c in healthy else f"{level + 0.05 * rng.standard_normal():.4f}"))
                lung_rows.append((f, f"{0.9 + 0.01 * rng.standard_normal():.4f}"))
        _write_raw(d / f"{prefix}dice_infection_raw.csv", inf_rows)  # val_* or test_* keys: both are read
        _write_raw(d / f"{prefix}dice_lung_raw.csv", lung_rows)
    cls = eval_root / "covid_slice_classifier"
    cls.mkdir()
    entries, preds = [], []
    for c in cases:
        for z in range(5):
            f = str(tmp_path / f"{c}_z{z:03d}.nii.gz")
            label = int(c not in healthy and z > 1)
            entries.append({"image": f, "label": label})
            p = 0.7 if label else 0.3
            preds.append(f"{f},{1 - p},{p}\n")
    (cls / "predictions.csv").write_text("".join(preds), encoding="utf-8")
    datalist = tmp_path / "eval_datalist_cls.json"
    datalist.write_text(json.dumps({"training": [], "validation": [], "test": entries}), encoding="utf-8")

    summary = heldout_summary(eval_root, datalist)
    assert summary["cases"] == 8 and summary["healthy_cases"] == 2
    ours = summary["models"]["covid_seg_2d"]["dice_infection"]
    theirs = summary["models"]["covid_seg_2d_baseline"]["dice_infection"]
    assert ours["cases"] == 6 and ours["low"] < ours["value"] < ours["high"]
    assert ours["value"] == pytest.approx(0.45, abs=0.03) and theirs["value"] == pytest.approx(0.2, abs=0.03)
    assert summary["models"]["covid_slice_classifier"]["auc"]["value"] == pytest.approx(1.0)
    assert summary["difference_2d"]["value"] == pytest.approx(0.25, abs=0.03)
    assert summary["difference_2d"]["low"] > 0.15 and summary["difference_2d"]["cases"] == 6
    text = heldout_markdown(summary)
    last = text.strip().splitlines()[-1]
    assert last.startswith("**2D segmenter trained on synthetic data: infection Dice 0.4")
    assert "better than the baseline" in last and "+0.2" in last
    assert "8 phantom cases (2 healthy)" in text


def test_case_names_and_nan_cells(tmp_path):
    assert case_of("/x/slices/images/phantom_003_z020.nii.gz") == "phantom_003"
    assert case_of("/x/COVID-19-CT-Seg_20cases/phantom_003.nii.gz") == "phantom_003"
    assert case_of("medseg_0051.png") == "medseg_0051"
    raw = tmp_path / "val_dice_infection_raw.csv"
    _write_raw(raw, [("a_z000.nii.gz", "nan"), ("a_z001.nii.gz", "0.5"), ("b.nii.gz", "0.25")])
    values = per_case_values(raw)
    assert set(values) == {"a", "b"} and math.isnan(values["a"][0]) and values["a"][1] == 0.5


def test_interval_json_round_trip_and_signed_format():
    iv = Interval(0.052, -0.0114, 0.12, 20)
    assert iv.format(signed=True) == "+0.052 [-0.011, +0.120]" and iv.format() == "0.052 [-0.011, 0.120]"
    assert Interval.from_dict(iv.as_dict()) == iv
    missing = Interval(math.nan, math.nan, math.nan, 0)
    assert missing.as_dict()["value"] is None and missing.format(signed=True) == "n/a"
    assert math.isnan(Interval.from_dict(missing.as_dict()).value)


def test_experiment_pairs_per_seed_and_over_seeds_on_known_numbers():
    """b is a + 0.1 on every test slice at both seeds and d + 0.2 at seed 0, d - 0.2 at seed 1: b - a is +0.100
    with a zero-width interval everywhere; b - d is +0.2 and -0.2 per seed and exactly 0 over the seeds. A slice
    without infection (NaN) counts in no difference."""
    from cosingan_monai.pipeline.experiment import paired_differences, per_seed_table, seed_mean_per_case

    cases = {f"s{i}": np.array([0.2 + 0.05 * i]) for i in range(6)}
    cases["healthy"] = np.array([math.nan])
    a, b = cases, {k: v + 0.1 for k, v in cases.items()}
    per_case = [
        {"a_real_k_strong_aug": a, "b_cosingan": b, "c_all_real": b, "d_painted_control": painted}
        for painted in ({k: v - d for k, v in b.items()} for d in (0.2, -0.2))
    ]
    seed0, seed1 = paired_differences(per_case[0]), paired_differences(per_case[1])
    assert (seed0["b - a"]["value"], seed0["b - a"]["low"], seed0["b - a"]["high"]) == pytest.approx((0.1, 0.1, 0.1))
    assert seed0["b - a"]["cases"] == 6 and seed0["b - d"]["value"] == pytest.approx(0.2)
    assert seed1["b - d"]["value"] == pytest.approx(-0.2) and seed1["b - d"]["high"] == pytest.approx(-0.2)
    pooled = paired_differences(seed_mean_per_case(per_case))
    assert pooled["b - d"]["value"] == pytest.approx(0.0, abs=1e-12) and pooled["b - a"]["value"] == pytest.approx(0.1)
    rows = [{"seed": s, "slices": ["x"], "b_cosingan": 0.5, "paired": p} for s, p in enumerate((seed0, seed1))]
    table = per_seed_table(rows, pooled)
    assert "| 0 | x | n/a | 0.500 | n/a | n/a | +0.100 [+0.100, +0.100] | +0.200 [+0.200, +0.200] |" in table
    assert "| all | each test slice's mean over the seeds | n/a | 0.500 | n/a | n/a | +0.100" in table
