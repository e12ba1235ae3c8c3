"""benchmarks/segmenter_errors.py: pooled infection precision/recall have known values on hand-made class maps."""

from __future__ import annotations

import numpy as np
from bench_helpers import load_benchmark


def _load():
    return load_benchmark("segmenter_errors")


def test_pooled_counts_of_a_conservative_and_an_eager_segmenter():
    counts = _load().pooled_counts
    truth = np.zeros((10, 10), np.uint8)
    truth[2:8, 2:8] = 1
    truth[2:6, 2:7] = 2  # 20 infection pixels
    healthy = np.where(truth == 2, 1, truth)  # a slice without infection
    shy = np.where(truth == 2, 1, truth)
    shy[2:4, 2:7] = 2  # finds 10 of the 20, nothing else
    eager = truth.copy()
    eager[6:8, 2:8] = 2  # all 20, plus 12 false positives ...
    eager_healthy = healthy.copy()
    eager_healthy[3, 3:6] = 2  # ... and 3 on the healthy slice
    c = counts([(shy, truth), (healthy, healthy)])
    assert (c["tp"], c["fp"], c["fn"], c["fp_on_slices_without_infection"]) == (10, 0, 10, 0)
    assert (c["precision"], c["recall"], c["pooled_dice"]) == (1.0, 0.5, 0.6667)
    e = counts([(eager, truth), (eager_healthy, healthy)])
    assert (e["tp"], e["fp"], e["fn"], e["fp_on_slices_without_infection"]) == (20, 15, 0, 3)
    assert (e["precision"], e["recall"]) == (round(20 / 35, 4), 1.0)
    none = counts([(healthy, healthy)])
    assert none["precision"] is None and none["recall"] is None  # undefined, not 0
