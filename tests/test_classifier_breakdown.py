"""benchmarks/classifier_breakdown.py on a hand-made run: stratum AUCs and per-case means have known values."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from bench_helpers import load_benchmark


def _load():
    return load_benchmark("classifier_breakdown")


def _slice(folder: Path, name: str, lesion_pixels: int) -> tuple[Path, Path]:
    """A 32x32 image and label slice with `lesion_pixels` infection pixels (label 3) inside a lung (label 1)."""
    label = np.zeros((32, 32), np.uint8)
    label[4:28, 4:28] = 1
    label.flat[np.flatnonzero(label)[:lesion_pixels]] = 3
    image, mask = folder / f"images/{name}.nii.gz", folder / f"labels/{name}.nii.gz"
    for path, data in ((image, label.astype(np.float32)), (mask, label)):
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return image, mask


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, Path]:
    """Case A: a small lesion scored 0.6, a large one 0.9, a negative 0.2; case B (healthy): negatives 0.7, 0.1."""
    rows = [("a_z000", 10, 0.6), ("a_z001", 500, 0.9), ("a_z002", 0, 0.2), ("b_z000", 0, 0.7), ("b_z001", 0, 0.1)]
    eval_dir = tmp_path / "run" / "data" / "eval"
    entries, lines = [], []
    for name, pixels, score in rows:
        image, mask = _slice(eval_dir / "slices", name, pixels)
        entries.append({"image": str(image), "label": int(pixels > 0), "mask": str(mask.relative_to(eval_dir))})
        lines.append(f"{image},{1 - score},{score}")
    (eval_dir / "eval_datalist_cls.json").write_text(json.dumps({"test": entries}), encoding="utf-8")
    predictions = tmp_path / "predictions.csv"
    predictions.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path / "run", predictions


def test_strata_and_cases_have_their_hand_computed_values(run: tuple[Path, Path]) -> None:
    folder, predictions = run
    result = _load().breakdown(predictions, folder / "data" / "eval" / "eval_datalist_cls.json")
    # positives 0.6 and 0.9 against negatives 0.2, 0.7, 0.1: 0.6 beats 2 of 3, 0.9 beats 3 of 3
    assert result["auc"] == pytest.approx(5 / 6, abs=1e-3)
    strata = result["auc_by_lesion_pixels"]
    assert strata["1-20"] == {"positives": 1, "auc": pytest.approx(2 / 3, abs=1e-3)}
    assert strata[">=400"] == {"positives": 1, "auc": 1.0}
    assert strata["20-100"] == {"positives": 0, "auc": None}  # undefined, not NaN in the JSON
    assert result["per_case"]["a"]["mean_score_positive"] == pytest.approx(0.75)
    assert result["per_case"]["b"] == {
        "positives": 0,
        "negatives": 2,
        "mean_score_positive": None,
        "mean_score_negative": pytest.approx(0.4),
    }
