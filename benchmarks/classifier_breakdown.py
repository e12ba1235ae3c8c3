"""Where a pipeline run's slice classifier fails on its held-out slices: ROC AUC by lesion size, and per case.

Reads RUN/eval/covid_slice_classifier/predictions.csv (or `--predictions`, e.g. a retrained copy's) and the run's
held-out classifier datalist, measures each positive slice's infection area in its label file (pixels at the label's
own resolution), and scores every lesion-size stratum against all negative slices. Per case it gives the mean score
of positive and of negative slices, which shows whether healthy cases score as high as infected ones (false
positives) or small lesions go unseen (misses). Writes JSON with `--out`.

Run:  .venv/bin/python benchmarks/classifier_breakdown.py runs/demo [--predictions P.csv] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cosingan_monai.core.constants import INFECTION  # noqa: E402
from cosingan_monai.core.files import atomic_write_path  # noqa: E402
from cosingan_monai.metrics.intervals import roc_auc  # noqa: E402
from cosingan_monai.pipeline.heldout import per_case_scores  # noqa: E402

#: Lesion-area strata, in label pixels (the demo's held-out labels are 256 px; the classifier reads 128 px).
STRATA = ((1, 20), (20, 100), (100, 400), (400, None))


def _rounded(value: float) -> float | None:
    """A figure for JSON: 3 decimals, None where undefined (an AUC with one class absent)."""
    return round(value, 3) if np.isfinite(value) else None


def lesion_areas(datalist_cls: Path) -> dict[str, int]:
    """Resolved image path -> infection pixels in its label slice (the datalist's `mask`, relative to the list)."""
    out = {}
    for split in json.loads(datalist_cls.read_text(encoding="utf-8")).values():
        for e in split:
            mask = Path(e["mask"]) if Path(e["mask"]).is_absolute() else datalist_cls.parent / e["mask"]
            out[str(Path(e["image"]).resolve())] = int((np.asanyarray(nib.load(mask).dataobj) == INFECTION).sum())
    return out


def breakdown(predictions: Path, datalist_cls: Path) -> dict:
    """AUC overall and per lesion-size stratum (each stratum's positives against every negative), and per case."""
    areas = lesion_areas(datalist_cls)
    rows = [r.split(",") for r in predictions.read_text(encoding="utf-8").splitlines() if r]
    area = np.array([areas[str(Path(r[0]).resolve())] for r in rows])
    cases = per_case_scores(predictions, datalist_cls)
    scores = np.concatenate([cases[k][:, 0] for k in cases])
    labels = np.concatenate([cases[k][:, 1] for k in cases])
    # the strata need each row's lesion area, so they score the rows in file order
    flat = np.array([float(r[-1]) for r in rows])
    truth = (area > 0).astype(float)
    strata = {}
    for lo, hi in STRATA:
        pos = (area >= lo) & (area < (hi if hi is not None else np.inf))
        keep = pos | (truth == 0)
        name = f"{lo}-{hi}" if hi is not None else f">={lo}"
        strata[name] = {"positives": int(pos.sum()), "auc": _rounded(roc_auc(flat[keep], truth[keep]))}
    per_case = {}
    for case, v in sorted(cases.items()):
        pos, neg = v[v[:, 1] == 1, 0], v[v[:, 1] == 0, 0]
        per_case[case] = {
            "positives": int(len(pos)),
            "negatives": int(len(neg)),
            "mean_score_positive": round(float(pos.mean()), 3) if len(pos) else None,
            "mean_score_negative": round(float(neg.mean()), 3) if len(neg) else None,
        }
    return {
        "predictions": str(predictions),
        "slices": int(len(labels)),
        "positives": int(labels.sum()),
        "auc": _rounded(roc_auc(scores, labels)),
        "auc_by_lesion_pixels": strata,
        "per_case": per_case,
    }


def main() -> None:
    """CLI: print the breakdown as JSON, and write it with --out."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a pipeline run folder with held-out evaluation")
    ap.add_argument("--predictions", type=Path, help="a predictions.csv other than the run's own")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    predictions = a.predictions or a.run / "eval" / "covid_slice_classifier" / "predictions.csv"
    result = breakdown(predictions, a.run / "data" / "eval" / "eval_datalist_cls.json")
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write_path(a.out) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
