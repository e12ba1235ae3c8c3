"""Real-data smoke test: covid_seg_2d on the MedSeg development slices (../shared/data, skipped when absent).

50 slices train (42 fit, 8 select the checkpoint), the other 20 evaluate. The MedSeg masks hold infection only, so
the lungs of every slice come from `lungmask.auto_lung_mask`: lung Dice is measured against those automatic
masks, infection Dice against the real masks. Settings are recorded in REALDATA_SETTINGS.
"""

from __future__ import annotations

import json

import pytest

from cosingan_monai.data.datalists import prepare_png_slices
from cosingan_monai.pipeline import bundle_runner as bundles

SPLIT = {"training": 42, "validation": 8, "test": 20}
#: the test preset's small UNet at 3 mm pixels (image_size 128 over the 384 mm field of view)
REALDATA_SETTINGS = {"image_size": 128, "max_epochs": 30, "batch_size": 4, "learning_rate": 0.003}


@pytest.mark.slow
@pytest.mark.shared
def test_medseg_seg2d_infection_dice(shared_data, tmp_path):
    src = shared_data / "medseg100-dev"
    if not src.is_dir():
        pytest.skip(f"{src} is absent")
    prep = prepare_png_slices(src, tmp_path / "prep", split=SPLIT, seed=0)
    assert prep.counts["datalist"] == SPLIT
    datalist = prep.datalists["datalist"]
    bundle = bundles.copy_bundle("covid_seg_2d", tmp_path / "bundles")
    values = {"datalist": str(datalist), **REALDATA_SETTINGS}
    bundles.run_bundle(bundle, "train", "test", values, threads=1)
    ev = bundles.run_bundle(bundle, "evaluate", "test", values, in_process=True, threads=1)
    print("MedSeg-dev covid_seg_2d (20 held-out slices):", json.dumps({k: round(v, 4) for k, v in ev.metrics.items()}))
    assert ev.metrics["test_dice_infection"] > 0.3, ev.metrics
    assert ev.metrics["test_dice_lung"] > 0.8, ev.metrics  # against the automatic lung masks
