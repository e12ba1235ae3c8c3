"""The held-out figure of a pipeline run: per model, the mean and a 95% case-bootstrap interval, and one verdict.

Per-case values come from what bundle evaluation writes under RUN/eval/<bundle>/: MONAI `MetricsSaver`'s
`<key>_raw.csv` (one row per evaluated image: a 2D slice or a 3D volume; NaN where the metric is undefined, e.g.
infection Dice on a slice without infection) and `ClassificationSaver`'s `predictions.csv` (class probabilities per
slice, matched to the labels of the classifier's evaluation datalist). Rows are grouped into cases by file name
(`phantom_003_z020.nii.gz` -> `phantom_003`), then `metrics.intervals.cluster_bootstrap` resamples cases.
The metric keys may be named `val_*` or `test_*`; both are read.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from cosingan_monai.metrics.intervals import (
    N_BOOT,
    Interval,
    cluster_bootstrap,
    paired_difference,
    pooled_auc,
    pooled_nanmean,
)

KEY_PREFIXES = ("test_", "val_")
SEG_METRICS = ("dice_infection", "dice_lung")
SYNTHETIC_2D, BASELINE_2D = "covid_seg_2d", "covid_seg_2d_baseline"
#: What each bundle is, in the summary's words.
DESCRIPTIONS = {
    "covid_seg_2d": "2D segmenter, synthetic data",
    "covid_seg_2d_baseline": "2D segmenter, the real slice alone (strong aug.)",
    "covid_seg_3d": "3D segmenter, synthetic volumes",
    "covid_slice_classifier": "slice classifier, synthetic data",
}
_CASE = re.compile(r"^(?P<case>.+?)(?:_z\d+)?$")


def case_of(path: str) -> str:
    """The case a slice or volume file belongs to: its stem without extension and `_z<slice>` suffix."""
    name = Path(path).name
    for ext in (".nii.gz", ".nii", ".png"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return _CASE.match(name)["case"]


def _float(text: str) -> float:
    """A CSV cell as float (MONAI writes `nan` for undefined metrics)."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def metric_csv(eval_dir: Path, metric: str) -> Path | None:
    """The per-image CSV of `metric` (e.g. dice_infection) under eval_dir, named test_* or val_*; None if absent."""
    for prefix in KEY_PREFIXES:
        path = eval_dir / f"{prefix}{metric}_raw.csv"
        if path.is_file():
            return path
    return None


def per_case_values(raw_csv: Path) -> dict[str, np.ndarray]:
    """Case -> the per-image values (the `mean` column over classes) of a MetricsSaver `*_raw.csv`."""
    out: dict[str, list[float]] = {}
    with raw_csv.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out.setdefault(case_of(row["filename"]), []).append(_float(row["mean"]))
    return {k: np.array(v, float) for k, v in out.items()}


def per_case_scores(predictions: Path, datalist_cls: Path) -> dict[str, np.ndarray]:
    """Case -> (n, 2) rows of (positive-class probability, true label) from a ClassificationSaver CSV."""
    labels = {}
    for split in json.loads(datalist_cls.read_text(encoding="utf-8")).values():
        for e in split:
            labels[str(Path(e["image"]).resolve())] = int(e["label"])
    out: dict[str, list[tuple[float, int]]] = {}
    with predictions.open(newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if not row:
                continue
            key = str(Path(row[0]).resolve())
            if key not in labels:
                raise KeyError(f"{predictions}: {row[0]} is not in {datalist_cls}")
            out.setdefault(case_of(row[0]), []).append((_float(row[-1]), labels[key]))
    return {k: np.array(v, float) for k, v in out.items()}


def heldout_summary(eval_root: Path, datalist_cls: Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Per model under eval_root (RUN/eval), each metric's value and 95% case-bootstrap interval, and the verdict."""
    models: dict[str, dict[str, Any]] = {}
    per_case: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    cases: set[str] = set()
    infected: set[str] = set()
    for bundle in sorted(p for p in Path(eval_root).iterdir() if p.is_dir()):
        values: dict[str, dict[str, np.ndarray]] = {}
        for metric in SEG_METRICS:
            path = metric_csv(bundle, metric)
            if path is not None:
                values[metric] = per_case_values(path)
        predictions = bundle / "predictions.csv"
        if predictions.is_file() and datalist_cls is not None:
            scores = per_case_scores(predictions, datalist_cls)
            values["auc"] = scores
            infected |= {c for c, rows in scores.items() if rows[:, 1].any()}
        if not values:
            continue
        per_case[bundle.name] = values
        for metric, by_case in values.items():
            cases |= set(by_case)
            if metric == "dice_infection":
                infected |= {c for c, v in by_case.items() if np.isfinite(v).any()}
            iv = cluster_bootstrap(by_case, pooled_auc if metric == "auc" else pooled_nanmean, seed=seed)
            models.setdefault(bundle.name, {})[metric] = iv.as_dict()
    summary: dict[str, Any] = {
        "cases": len(cases),
        "healthy_cases": len(cases - infected),
        "bootstrap": {"replicates": N_BOOT, "seed": seed, "level": 0.95, "unit": "case"},
        "models": models,
    }
    if SYNTHETIC_2D in per_case and BASELINE_2D in per_case:
        a = per_case[SYNTHETIC_2D].get("dice_infection")
        b = per_case[BASELINE_2D].get("dice_infection")
        if a and b:
            diff = paired_difference(a, b, seed=seed)
            summary["difference_2d"] = diff.as_dict()
            ours, theirs = models[SYNTHETIC_2D]["dice_infection"], models[BASELINE_2D]["dice_infection"]
            summary["verdict"] = verdict_line(ours, theirs, diff)
    return summary


def _fmt(iv: dict[str, Any]) -> str:
    """`0.452 [0.381, 0.520]` from an interval dict; `n/a` when undefined."""
    if iv.get("value") is None:
        return "n/a"
    return f"{iv['value']:.3f} [{iv['low']:.3f}, {iv['high']:.3f}]"


def verdict_line(synthetic: dict[str, Any], baseline: dict[str, Any], diff: Interval) -> str:
    """The one plain sentence the demo ends with: does synthetic data beat the real slice alone, and by how much."""
    if not math.isfinite(diff.value):
        return "2D segmenter: no infected held-out case, no verdict"
    if diff.low > 0:
        word = "better than"
    elif diff.high < 0:
        word = "worse than"
    else:
        word = "not distinguishable from"
    return (
        f"2D segmenter trained on synthetic data: infection Dice {_fmt(synthetic)} vs {_fmt(baseline)} for the "
        f"real slice alone ({diff.value:+.3f}, 95% interval [{diff.low:+.3f}, {diff.high:+.3f}] over "
        f"{diff.cases} infected held-out cases: {word} the baseline)"
    )


def heldout_markdown(summary: dict[str, Any]) -> str:
    """The held-out table (model, what it is, each metric with its interval) and the verdict as the last line."""
    if not summary or not summary.get("models"):
        return ""
    columns = [("dice_infection", "infection Dice"), ("dice_lung", "lung Dice"), ("auc", "ROC AUC")]
    lines = [
        f"Held-out: {summary['cases']} phantom cases ({summary['healthy_cases']} healthy). Mean over evaluated "
        "slices (volumes for 3D) with a 95% interval from resampling cases "
        f"({summary['bootstrap']['replicates']} replicates, seed {summary['bootstrap']['seed']}).",
        "",
        "| model | what | " + " | ".join(title for _, title in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for name, values in summary["models"].items():
        cells = [_fmt(values[key]) if key in values else "" for key, _ in columns]
        lines.append(f"| {name} | {DESCRIPTIONS.get(name, '')} | " + " | ".join(cells) + " |")
    if "verdict" in summary:
        lines += ["", f"**{summary['verdict']}**"]
    return "\n".join(lines)
