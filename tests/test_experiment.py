"""Experiment protocol pieces: training-slice choice per seed, the painted control arm, gap closure and the table."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cosingan_monai.core.errors import CaseError
from cosingan_monai.pipeline.experiment import (
    ExperimentOptions,
    KResults,
    classifier_skip_reason,
    gap_closure,
    k_table,
    per_seed_table,
    pick_training_slices,
    real_datalists,
    results_table,
    slice_score,
    write_conditions,
    write_painted,
)


def _write_slice(tmp_path, i: int, infection: int) -> dict:
    """A 48x48 slice with two lungs and `infection` rows of lesion in the left lung."""
    lab = np.zeros((48, 48, 1), np.uint8)
    lab[6:20, 10:38] = 1
    lab[28:42, 10:38] = 2
    lab[6:20, 10 : 10 + infection] = 3
    hu = np.full(lab.shape, 40.0, np.float32)
    hu[0:2] = hu[-2:] = -1000
    hu[lab[..., 0] > 0] = -850
    hu[lab[..., 0] == 3] = -350
    aff = np.diag([1.5, 1.5, 5.0, 1.0])
    img, lbl = tmp_path / f"img_{i}.nii.gz", tmp_path / f"lab_{i}.nii.gz"
    nib.save(nib.Nifti1Image(hu, aff), img)
    nib.save(nib.Nifti1Image(lab, aff), lbl)
    return {"image": str(img), "label": str(lbl), "infected": int(infection > 0)}


def test_slice_score_prefers_mixed_slices():
    lab = np.zeros((10, 10), np.uint8)
    lab[:, :6] = 1
    lab[:3, :6] = 3
    assert slice_score(lab) == 18  # 18 infected vs 42 healthy
    lab[:, :6] = 3
    assert slice_score(lab) == 0  # all infection teaches "lung = infection"


def test_seeds_pick_distinct_training_slices(tmp_path):
    train = [_write_slice(tmp_path, i, inf) for i, inf in enumerate([0, 2, 14, 6, 10])]
    first = pick_training_slices(train, k=1, seed=0)
    second = pick_training_slices(train, k=1, seed=1)
    assert first[0]["image"].endswith("img_2.nii.gz")  # 14 of 28 columns infected: the best mix
    assert second[0]["image"] != first[0]["image"]
    assert len(pick_training_slices(train, k=2, seed=0)) == 2


def test_a_seeds_slices_at_k_are_its_slices_at_k_minus_1_plus_one(tmp_path):
    train = [_write_slice(tmp_path, i, 1 + (7 * i) % 13) for i in range(12)]
    names = {k: [[e["image"] for e in pick_training_slices(train, k, s)] for s in range(3)] for k in (1, 2, 4)}
    for s in range(3):
        assert names[2][s][:1] == names[1][s] and names[4][s][:2] == names[2][s]  # nested: GANs shared across k
        assert len(set(names[4][s])) == 4
    assert not set(names[2][0]) & set(names[2][1]) and not set(names[2][1]) & set(names[2][2])  # seeds differ
    assert [e["slice"] for e in pick_training_slices(train, 4, 0)] == [0, 1, 2, 3]
    with pytest.raises(CaseError, match="--k 13 needs 13 training slices, the training split has 12"):
        pick_training_slices(train, 13, 0)


def test_painted_arm_mirrors_the_synthetic_set_with_training_statistics(tmp_path):
    from cosingan_monai.data.datalists import mix_real_slices
    from cosingan_monai.engines.synthesis import build_condition_items

    train = [_write_slice(tmp_path, i, inf) for i, inf in enumerate([4, 8, 0])]
    conditions = write_conditions(train, count=6, seed=0, out=tmp_path / "cond")
    assert len(json.loads(conditions.read_text())["conditions"]) == 6
    items = build_condition_items(str(conditions))  # what the sampler draws: conditions + lesion-free copies
    assert any(it["lesion_removed"] for it in items) and not all(it["lesion_removed"] for it in items)
    entries = [
        {
            "image": str(tmp_path / f"syn_{i}.nii.gz"),
            "label": str(tmp_path / f"syn_{i}_label.nii.gz"),
            "source": it["source"],
            "infected": int(it["infected"]),
            "lesion_removed": int(it["lesion_removed"]),
        }
        for i, it in enumerate(items)
    ]
    synthetic = tmp_path / "b_synthetic.json"
    synthetic.write_text(json.dumps({"training": entries[2:] + entries[:1], "validation": entries[1:2]}))
    b = mix_real_slices(synthetic, train[:1], 0.25, tmp_path / "b")  # arm b's lists, as the experiment makes them
    lists = write_painted(conditions, {"seg": b["datalist"], "cls": b["datalist_cls"]}, train[:1], tmp_path / "d", 0)
    for kind, key in (("seg", "datalist"), ("cls", "datalist_cls")):
        ours, theirs = json.loads(lists[kind].read_text()), json.loads(b[key].read_text())
        for split in ("training", "validation"):  # arm b's counts, splits, classes and real slices
            assert len(ours[split]) == len(theirs[split]), (kind, split)
            flag = "infected" if kind == "seg" else "label"
            assert [e[flag] for e in ours[split]] == [e[flag] for e in theirs[split]], (kind, split)
            assert [e["image"] for e in ours[split] if e["source"].startswith("real ")] == [
                e["image"] for e in theirs[split] if e["source"].startswith("real ")
            ]
    seg = json.loads(lists["seg"].read_text())
    assert not any(e.get("lesion_removed") for e in seg["training"] + seg["validation"])  # as arm b's segmenter
    cls = json.loads(lists["cls"].read_text())
    assert any(e.get("lesion_removed") for e in cls["training"])  # the classifier keeps its negatives
    entry = next(e for e in seg["training"] + seg["validation"] if e["infected"] and "painted" in e["image"])
    img = np.asarray(nib.load(entry["image"]).dataobj)[..., 0]
    lab = np.asarray(nib.load(entry["label"]).dataobj)[..., 0]
    assert abs(img[lab == 3].mean() - -350) < 40 and abs(img[lab == 1].mean() - -850) < 40
    clean = next(e for e in cls["training"] if e["label"] == 0 and "painted" in e["image"])
    assert not (np.asarray(nib.load(clean["mask"]).dataobj) == 3).any()


def test_gap_closure_and_table():
    results = {
        "a_real_k_strong_aug": {"test_dice_infection": [0.2, 0.3]},
        "b_cosingan": {"test_dice_infection": [0.4, 0.5]},
        "c_all_real": {"test_dice_infection": [0.6, 0.7]},
        "d_painted_control": {"test_dice_infection": [0.1, 0.2]},
    }
    assert gap_closure(results, "test_dice_infection") == pytest.approx(0.5)
    assert gap_closure(results, "test_dice_infection", "d_painted_control") == pytest.approx(-0.25)
    assert gap_closure(results, "test_dice_lung") is None
    table = results_table(results, ExperimentOptions(dataset=".", out="."))
    assert "| b_cosingan | n/a | n/a | 0.450 ± 0.050 |" in table
    assert "infection Dice: 50% (GAN-free control (d - a) / (c - a): -25%)" in table


def test_all_real_arm_takes_as_many_steps_as_the_others(tmp_path):
    train = [_write_slice(tmp_path, i, inf) for i, inf in enumerate([4, 8, 0, 6, 2])]
    lists = real_datalists(train, tmp_path / "c", repeats=12)
    seg = json.loads(lists["seg"].read_text())
    assert len(seg["validation"]) == 1 and len(seg["training"]) == 12
    assert {e["image"] for e in seg["training"]} == {e["image"] for e in train[1:]}  # every slice, none held out
    cls = json.loads(lists["cls"].read_text())
    assert len(cls["training"]) == 12 and {e["label"] for e in cls["training"]} == {0, 1}


def test_classifier_arms_need_both_classes_in_the_test_set():
    mostly_infected = {"test": [{"image": f"{i}.nii.gz", "label": int(i > 0)} for i in range(21)]}
    reason = classifier_skip_reason(mostly_infected)
    assert reason is not None and "1 slice(s) without and 20 with infection" in reason
    balanced = {"test": [{"image": f"{i}.nii.gz", "label": i % 2} for i in range(12)]}
    assert classifier_skip_reason(balanced) is None
    table = results_table(
        {arm: {} for arm in ("a_real_k_strong_aug", "b_cosingan", "c_all_real", "d_painted_control")},
        ExperimentOptions(dataset=".", out="."),
        reason,
    )
    assert "Classifier AUC n/a: the test set has 1 slice(s)" in table


def test_k_table_gives_each_k_its_arms_gap_closures_and_wall_time():
    one, two = KResults(1), KResults(2)
    for kr, b in ((one, [0.4, 0.5]), (two, [0.5, 0.6])):
        kr.results = {
            "a_real_k_strong_aug": {"test_dice_infection": [0.2, 0.3]},
            "b_cosingan": {"test_dice_infection": b},
            "c_all_real": {"test_dice_infection": [0.6, 0.7]},
            "d_painted_control": {"test_dice_infection": [0.3, 0.3]},
        }
        kr.wall_s = [600.0 * kr.k, 600.0 * kr.k]
    two.paired_all_seeds = {"b - d": {"value": 0.15, "low": 0.05, "high": 0.25, "cases": 21}}
    table = k_table([one, two], ExperimentOptions(dataset=".", out=".", ks=(1, 2), seeds=2))
    row = "| 1 | 0.250 ± 0.050 | 0.450 ± 0.050 | 0.650 ± 0.050 | 0.300 ± 0.000 | 50% | 12% | n/a | n/a | 20 min |"
    assert row in table
    row = "| 2 | 0.250 ± 0.050 | 0.550 ± 0.050 | 0.650 ± 0.050 | 0.300 ± 0.000 | 75% | 12% |"
    assert row + " n/a | +0.150 [+0.050, +0.250] | 40 min |" in table
    assert "mean ± sd over 2 seed(s)" in table


def test_per_seed_table_names_the_training_slices():
    rows = [
        {"seed": 0, "slices": ["medseg_0051"], "a_real_k_strong_aug": 0.25, "b_cosingan": 0.375},
        {"seed": 1, "slices": ["medseg_0012"], "a_real_k_strong_aug": 0.2},
    ]
    table = per_seed_table(rows)
    assert "| 0 | medseg_0051 | 0.250 | 0.375 | n/a | n/a |" in table
    assert "| 1 | medseg_0012 | 0.200 | n/a | n/a | n/a |" in table


def test_experiment_command_end_to_end_in_the_test_preset(tmp_path):
    """`cosingan-monai experiment` on phantoms: every arm trains and is scored on one held-out set; resume skips all.

    The held-out case (seed 61) has no slice without infection, so the classifier arms are skipped with a stated
    reason; that keeps this test near 2 min of CPU (the classifier runs through the same helpers). Arms b and d get
    a realism row against the real training slices.
    """
    from click.testing import CliRunner

    from cosingan_monai.cli import main
    from cosingan_monai.phantom.generator import write_phantom_dataset

    write_phantom_dataset(tmp_path / "train", cases=2, seed=10, size=64, slices=10, healthy_fraction=0.0)
    write_phantom_dataset(tmp_path / "test", cases=1, seed=61, size=64, slices=8, healthy_fraction=0.0)
    out = tmp_path / "exp"
    args = ["experiment", "--dataset", str(tmp_path / "train"), "--test", str(tmp_path / "test")]
    args += ["--k", "1", "--preset", "test", "--seeds", "1", "--out", str(out)]
    args += ["--threads", "1", "--set", "covid_seg_2d:max_epochs=2"]  # the segmenters' override; the GAN's own
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for arm in ("a_real_k_strong_aug", "b_cosingan", "c_all_real", "d_painted_control"):
        baked = json.loads((out / "seed_0" / arm / "bundles" / "covid_seg_2d" / "configs" / "train.json").read_text())
        assert baked["max_epochs"] == 2, arm  # --set reached every arm's segmenter
    (gan_dir,) = (out / "seed_0" / "gans").iterdir()  # one GAN per training slice, named after it
    gan = json.loads((gan_dir / "bundles" / "cosingan_train" / "configs" / "train.json").read_text())
    assert "max_epochs" not in gan

    record = json.loads((out / "results.json").read_text())
    for arm in ("a_real_k_strong_aug", "b_cosingan", "c_all_real", "d_painted_control"):
        for key in ("test_dice_lung", "test_dice_infection", "test_nsd_lung", "test_nsd_infection"):
            assert len(record["results"][arm][key]) == 1 and 0.0 <= record["results"][arm][key][0] <= 1.0
    assert "classifier: the test set has 0 slice(s) without and 7 with infection" in result.output
    assert not any("cls_auc" in record["results"][arm] for arm in record["results"])
    assert record["per_seed"][0]["slices"][0].startswith("phantom_")
    table = (out / "results.md").read_text(encoding="utf-8")
    assert "| b_cosingan |" in table and "Gap closure (b - a) / (c - a), infection Dice" in table
    assert "Classifier AUC n/a: the test set has 0 slice(s) without" in table
    assert "Realism of each arm's training set against the real training slices" in table
    assert "| b_cosingan | " in table.split("Realism of each arm")[1] and "| d_painted_control | " in table
    for arm in ("b_cosingan", "d_painted_control"):
        figures = record["realism"]["0"][arm]
        assert 0.0 < figures["summary_score"] <= 1.0 and figures["lung_laplacian_ratio"] > 0.0, arm
        assert (out / "seed_0" / "realism" / arm / "realism.json").is_file()
    assert f"| 0 | {record['per_seed'][0]['slices'][0]} |" in table
    from cosingan_monai.pipeline.experiment import PAIRS

    paired = record["per_seed"][0]["paired"]  # b - a and b - d per test slice, with a 95% interval
    for name, (x, y) in PAIRS.items():
        gap = record["results"][x]["test_dice_infection"][0] - record["results"][y]["test_dice_infection"][0]
        # the 7 test slices are one held-out phantom: one case for the bootstrap (slices of a patient move together)
        assert paired[name]["value"] == pytest.approx(gap, abs=1e-6) and paired[name]["cases"] == 1
        assert paired[name]["low"] <= paired[name]["value"] <= paired[name]["high"]
    assert "b - d [95%]" in table and record["paired_all_seeds"] == paired  # one seed: the pooled row is the seed

    split = json.loads((out / "split.json").read_text())
    test_images = {e["image"] for e in json.loads(Path(split["test"]).read_text())["test"]}
    assert split["train"] and not test_images & set(split["train"])  # the held-out set is disjoint from training
    steps = {
        arm: len(json.loads((out / "seed_0" / sub / "datalist.json").read_text())["training"])
        for arm, sub in (("a", "a"), ("c", "c"), ("d", "d"), ("b", "b/mixed"))
    }
    assert len(set(steps.values())) == 1, steps  # every arm takes the same number of steps per epoch

    again = CliRunner().invoke(main, [*args, "--resume"], catch_exceptions=False)
    # prepare_real, the GAN, the synthesis, four arms and the realism stage
    assert again.exit_code == 0 and again.output.count("already finished") == 8, again.output
    assert (out / "results.md").read_text(encoding="utf-8") == table


def test_experiment_k_table_trains_each_gan_and_the_all_real_arm_once(tmp_path):
    """`--k 1 --k 2`: one k-table, seed 0's k = 2 slices are its k = 1 slice plus one, and that first GAN and arm c
    are trained once for both k (the stage lines say so); each k keeps its own arms, table and realism row."""
    from click.testing import CliRunner

    from cosingan_monai.cli import main
    from cosingan_monai.phantom.generator import write_phantom_dataset

    write_phantom_dataset(tmp_path / "train", cases=2, seed=10, size=64, slices=10, healthy_fraction=0.0)
    write_phantom_dataset(tmp_path / "test", cases=1, seed=61, size=64, slices=8, healthy_fraction=0.0)
    out = tmp_path / "exp"
    args = ["experiment", "--dataset", str(tmp_path / "train"), "--test", str(tmp_path / "test"), "--k", "1"]
    # --threads 2: the two GANs of k = 2 train side by side with one thread each (stage_lanes.split_threads)
    args += ["--k", "2", "--preset", "test", "--seeds", "1", "--out", str(out), "--threads", "2"]
    args += ["--set", "covid_seg_2d:max_epochs=2"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.json").read_text())
    k1, k2 = record["k"]["1"]["per_seed"][0]["slices"], record["k"]["2"]["per_seed"][0]["slices"]
    assert len(k2) == 2 and k2[0] == k1[0]
    assert sorted(p.name for p in (out / "seed_0" / "gans").iterdir()) == sorted(k2)
    for name in (f"seed0_gan_{k2[0]}", "seed0_c_all_real"):  # trained once, reused by k = 2
        assert result.output.count(f"[{name}] done") == 1, (name, result.output)
    for k in ("1", "2"):
        for arm in ("a_real_k_strong_aug", "b_cosingan", "c_all_real", "d_painted_control"):
            assert 0.0 <= record["k"][k]["results"][arm]["test_dice_infection"][0] <= 1.0
        assert record["k"][k]["wall_s"][0] > 0 and (out / "seed_0" / f"k{k}" / "b_cosingan").is_dir()
    c1, c2 = (record["k"][k]["results"]["c_all_real"]["test_dice_infection"] for k in ("1", "2"))
    assert c1 == c2
    table = (out / "results.md").read_text(encoding="utf-8")
    assert table.startswith("Infection Dice per k") and "\n| 1 | " in table and "\n| 2 | " in table
    assert "b - d, all seeds [95%]" in table and record["k"]["2"]["paired_all_seeds"]["b - a"]["cases"] == 1
    assert "## k = 1" in table and "## k = 2" in table and "k = 2, preset test" in table
