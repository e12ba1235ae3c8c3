"""Report figures: grids render, and training curves are read back from real TensorBoard event files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from cosingan_monai.pipeline.figures import curves, read_scalars, slice_grid


def test_slice_grid_writes_png_with_outlines(tmp_path):
    hu = np.full((48, 48), -1000.0, np.float32)
    label = np.zeros((48, 48), np.uint8)
    label[10:20, 10:30] = 1
    label[12:16, 12:16] = 3
    out = slice_grid([(hu, label, "real"), (hu, None, "sample")], tmp_path / "grid.png")
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    red = (img[..., 0] > 200) & (img[..., 1] < 80) & (img[..., 2] < 80)
    assert red.sum() > 5  # the infection outline is drawn
    assert not list(tmp_path.glob("*.tmp-*"))


def test_curves_read_back_from_tensorboard(tmp_path):
    writer = SummaryWriter(log_dir=str(tmp_path / "tb" / "seg2d"))
    for step in range(5):
        writer.add_scalar("train_loss", 1.0 / (step + 1), step)
    writer.close()
    series = read_scalars(tmp_path / "tb")
    assert np.allclose([v for _, v in series["seg2d/train_loss"]], [1.0, 0.5, 1 / 3, 0.25, 0.2])
    assert curves(series, tmp_path / "curves.png").stat().st_size > 1000
    assert curves({}, tmp_path / "none.png") is None


def test_bundle_panels_give_every_bundle_a_row_with_axis_labels(tmp_path):
    """Scalars are grouped per bundle (not the first 12 sorted tags): GAN losses one line per scale, the downstream
    validation metrics in one panel; held-out test_* points and unplotted tags are left out."""
    from cosingan_monai.pipeline.figures import bundle_curves, bundle_panels, x_label

    pts = [(1, 1.0), (2, 0.5)]
    series = {f"cosingan_train/scale{n}/{tag}": pts for n in range(12) for tag in ("loss_d", "loss_g", "gp1")}
    series |= {"covid_seg_2d/train_loss": pts, "covid_seg_2d/val_dice_lung": pts, "covid_seg_2d/val_mean_dice": pts}
    series |= {"covid_seg_2d/test_dice_lung": [(1, 0.7)], "covid_slice_classifier/val_auc": pts}
    series |= {"covid_seg_2d/hparam/best_val_mean_dice": [(0, 0.7)], "cosingan_train/hparam/final_rec": [(0, 0.1)]}
    panels = bundle_panels(series)
    assert list(panels) == ["cosingan_train", "covid_seg_2d", "covid_slice_classifier"]
    assert list(panels["cosingan_train"]) == ["loss_d", "loss_g"] and len(panels["cosingan_train"]["loss_d"]) == 12
    assert panels["covid_seg_2d"] == {
        "train_loss": {"train_loss": pts},
        "validation": {"val_dice_lung": pts, "val_mean_dice": pts},
    }
    assert x_label("covid_seg_2d", "validation") == "epoch"
    assert x_label("cosingan_train", "loss_d") == "iteration (per scale)"
    assert bundle_curves(panels, tmp_path / "c.png").stat().st_size > 5000
    assert bundle_curves({}, tmp_path / "none.png") is None


def test_case_dice_and_overlay(tmp_path):
    from cosingan_monai.pipeline.figures import overlay_panels
    from cosingan_monai.pipeline.report import case_dice

    truth = np.zeros((20, 20), np.uint8)
    truth[2:12, 2:12] = 1
    truth[4:6, 4:6] = 2
    pred = truth.copy()
    pred[4:6, 4:5] = 1  # half the infection missed: Dice 2*2/(2+4)
    dice = case_dice(pred, truth)
    assert dice["infection"] == pytest.approx(2 / 3)
    assert dice["lung"] == pytest.approx(2 * 96 / (96 + 98))  # class "lung" excludes infection, as in the bundles
    assert np.isnan(case_dice(np.zeros_like(truth), np.zeros_like(truth))["infection"])
    hu = np.full((20, 20), -800.0, np.float32)
    case = {"hu": hu, "label": truth, "pred": pred, "name": "c0", "dice": dice}
    assert overlay_panels([case, case], tmp_path / "o.png", "t").stat().st_size > 3000
    assert overlay_panels([], tmp_path / "none.png") is None


def test_stage_summary_line_names_the_key_metric():
    from cosingan_monai.pipeline.run_folder import summary_metric

    assert summary_metric({"test_mean_dice": 0.5, "test_dice_infection": 0.31234}) == ", test_dice_infection 0.3123"
    assert summary_metric({"test_auc": 0.75}) == ", test_auc 0.7500"
    assert summary_metric({"negatives": 3}) == ", negatives 3"
    assert summary_metric({"shape": [1, 2]}) == ""
    assert summary_metric({"best_val_mean_dice": 0.71, "final_rec": 0.2}) == ", best_val_mean_dice 0.7100"
    assert summary_metric({"final_rec": 0.25, "final_loss_g": 3.0}) == ", final_rec 0.2500"
    assert summary_metric({"synthetic_slices": 12, "eval_cases": 2}) == ", synthetic_slices 12"


def test_hparam_metrics_read_the_newest_value_of_each(tmp_path):
    """The pipeline's training summary lines read the hparams metrics from the training's TensorBoard folder."""
    from torch.utils.tensorboard import SummaryWriter

    from cosingan_monai.pipeline.downstream import hparam_metrics

    # a training redone into the same folder: the newer run wins. Twelve runs within a second or two: the event
    # files' counter suffix passes 9 -> 10, where name order and time order part (a flaky CI failure before)
    for value in [0.1 * k for k in range(1, 12)] + [0.7]:
        writer = SummaryWriter(str(tmp_path / "tb"))
        writer.add_scalar("train_loss", 1.0, 1)
        writer.add_hparams({"learning_rate": 1e-3}, {"hparam/best_val_mean_dice": value}, run_name=".")
        writer.close()
    assert hparam_metrics(tmp_path / "tb") == {"best_val_mean_dice": pytest.approx(0.7)}
    assert hparam_metrics(tmp_path / "missing") == {}


def test_classifier_overlay_picks_confident_errors_and_calls(tmp_path):
    """The classifier figure shows its most confident errors, then its most confident right calls of both classes;
    the outlines are LabelToContour edges (lung green, infection red) in radiological display."""
    from cosingan_monai.data.io import ras_to_display
    from cosingan_monai.pipeline.figures import classifier_panels, contour_overlay
    from cosingan_monai.pipeline.report import pick_calls

    probs = [(0.95, 1), (0.6, 1), (0.1, 0), (0.02, 0), (0.9, 0), (0.55, 0), (0.2, 1), (0.45, 1), (0.3, 0)]
    calls = [{"name": f"s{i}", "prob": p, "truth": t} for i, (p, t) in enumerate(probs)]
    picked = pick_calls(calls, per_row=4)
    errors = [c["name"] for c in picked if c["row"] == "most confident errors"]
    right = [c["name"] for c in picked if c["row"] == "most confident correct calls"]
    assert errors == ["s4", "s6", "s5", "s7"]  # |p - 0.5| 0.4, 0.3, 0.05, 0.05
    assert right == ["s0", "s1", "s3", "s2"]  # two positives, then the two most confident negatives

    label = np.zeros((20, 20), np.uint8)
    label[2:12, 2:12] = 1
    label[14:18, 14:18] = 3
    rgb = contour_overlay(np.full((20, 20), -800.0, np.float32), label)
    red = (rgb[..., 0] > 0.4) & (rgb[..., 1] < 0.2) & (rgb[..., 2] < 0.2)
    green = (rgb[..., 1] > 0.5) & (rgb[..., 0] < 0.6)
    edge = ras_to_display(label == 3)
    assert red.any() and not (red & ~edge).any()  # infection outline only on the infection
    assert green.any() and not green[ras_to_display(label == 0)].any()
    inner = np.zeros_like(label, bool)
    inner[4:10, 4:10] = True  # the lung square's inside, two pixels from its edge
    assert not (red | green)[ras_to_display(inner)].any()  # outlines, not filled areas
    for c in picked:
        c.update(hu=np.full((20, 20), -800.0, np.float32), label=label)
    assert classifier_panels(picked, tmp_path / "cls.png", "t").stat().st_size > 3000
    assert classifier_panels([], tmp_path / "none.png") is None
