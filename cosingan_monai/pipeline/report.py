"""report.md for a pipeline run: the command, stage timings, evaluation tables and figures (grids, curves)."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from cosingan_monai.core.constants import INFECTION
from cosingan_monai.core.files import atomic_write_path, write_json
from cosingan_monai.metrics.realism_io import key_figures_markdown
from cosingan_monai.pipeline import bundle_runner as bundles
from cosingan_monai.pipeline.figures import (
    bundle_curves,
    bundle_panels,
    classifier_panels,
    overlay_panels,
    read_scalars,
    slice_grid,
)
from cosingan_monai.pipeline.heldout import heldout_markdown
from cosingan_monai.pipeline.run_folder import RunFolder


def _load2d(path: str | Path) -> np.ndarray:
    """A 2D slice from a NIfTI file stored as (x, y) or (x, y, 1)."""
    arr = np.asanyarray(nib.load(str(path)).dataobj)
    return arr[..., 0] if arr.ndim == 3 else arr


def sample_grid(run: RunFolder, count: int = 8) -> Path | None:
    """Training slice, then synthetic samples, each with its mask outlined; None before sampling has run."""
    select = run.manifest("select")
    datalist = run.root / "data" / "synthetic" / "datalist.json"
    if select is None or not datalist.is_file():
        return None
    panels = []
    for entry in select["outputs"]["slices"][:2]:
        panels.append((_load2d(entry["image"]), _load2d(entry["label"]), f"real slice z={entry['slice']}"))
    base = datalist.parent
    training = json.loads(datalist.read_text())["training"]
    step = max(1, len(training) // count)
    for i, entry in enumerate(training[::step][:count]):
        panels.append((_load2d(base / entry["image"]), _load2d(base / entry["label"]), f"synthetic {i}"))
    return slice_grid(panels, run.root / "figures" / "samples.png", columns=5)


def training_curves(run: RunFolder) -> Path | None:
    """One row of curves per bundle (GAN losses per scale, downstream loss, learning rate, validation metrics),
    or None when nothing was logged."""
    return bundle_curves(
        bundle_panels(read_scalars(run.root / "tensorboard")), run.root / "figures" / "training_curves.png"
    )


#: evaluated segmenters -> the evaluation datalist (RUN/data/eval/) their overlay cases come from.
OVERLAY_LISTS = {
    "covid_seg_2d": "eval_datalist.json",
    "covid_seg_2d_baseline": "eval_datalist.json",
    "covid_seg_3d": "eval_datalist_3d.json",
}
OVERLAY_CASES = 4


def _classes(label_map: np.ndarray) -> np.ndarray:
    """COVID-19-CT-Seg 0-3 -> the segmenters' classes 0 background, 1 lung, 2 infection."""
    out = (label_map > 0).astype(np.uint8)
    out[label_map == INFECTION] = 2
    return out


def case_dice(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Per-class Dice of one case (class maps 0/1/2) with MONAI `compute_dice`; NaN where both are empty."""
    import torch
    from monai.metrics import compute_dice
    from monai.networks.utils import one_hot

    p, t = (one_hot(torch.as_tensor(a.astype(np.int64))[None, None], num_classes=3) for a in (pred, truth))
    dice = compute_dice(p, t, include_background=False, ignore_empty=True)[0]
    return {"lung": float(dice[0]), "infection": float(dice[1])}


def _pick_cases(entries: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The most infected cases, and one without infection when there is one (what a reader wants to see)."""
    sized = sorted(entries, key=lambda e: -int((np.asanyarray(nib.load(e["label"]).dataobj) == INFECTION).sum()))
    chosen = (
        sized[: count - 1]
        + [e for e in sized[count - 1 :] if not (np.asanyarray(nib.load(e["label"]).dataobj) == INFECTION).any()][:1]
    )
    return chosen[:count]


def overlay_predictions(
    run: RunFolder, name: str, threads: int | None = None, fresh: bool = False
) -> list[tuple[dict[str, Any], Path]] | None:
    """The trained copy's own predictions on the few evaluation cases of its overlay: (datalist entry, prediction
    file) per case.

    They come from its inference workflow (its baked configs; `python -m monai.bundle run`, logging to
    BUNDLE/logs/inference.log), written once to RUN/eval/<name>/overlay/: the pipeline makes them in the bundle's
    evaluation stage, so they run beside the other evaluations (`fresh`: made again, as the stage's model may be new);
    the report reuses them. None without evaluation data.
    """
    bundle = run.root / "bundles" / name
    source = run.root / "data" / "eval" / OVERLAY_LISTS[name]
    if not (bundle / "models" / "model.pt").is_file() or not source.is_file():
        return None
    entries = json.loads(source.read_text()).get("test", [])
    if not entries:
        return None
    chosen = _pick_cases(entries, OVERLAY_CASES)
    out = run.root / "eval" / name / "overlay"
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    preds = {e["image"]: out / (Path(e["image"]).name.split(".nii")[0] + "_seg.nii.gz") for e in chosen}
    if not all(p.is_file() for p in preds.values()):
        datalist = write_json(out / "datalist.json", {"training": [], "validation": [], "test": chosen})
        preset_file = bundle / "logs" / "train_preset.txt"
        preset = preset_file.read_text().strip() if preset_file.is_file() else "full"
        overrides = {"datalist": str(datalist), "output_dir": str(out)}
        bundles.run_bundle(bundle, "inference", preset, overrides, threads=threads)
    return [(e, preds[e["image"]]) for e in chosen]


def prediction_overlay(run: RunFolder, name: str) -> Path | None:
    """RUN/figures/overlay_<name>.png: image, truth, prediction and per-case Dice on a few evaluation cases
    (overlay_predictions); None without evaluation data."""
    predictions = overlay_predictions(run, name)
    if predictions is None:
        return None
    cases = []
    for entry, pred_path in predictions:
        hu = np.asanyarray(nib.load(entry["image"]).dataobj).astype(np.float32)
        truth = _classes(np.asanyarray(nib.load(entry["label"]).dataobj))
        pred = np.asanyarray(nib.load(pred_path).dataobj).astype(np.uint8)
        hu, truth, pred = (a.reshape(a.shape[:2] + (-1,)) for a in (hu, truth, pred))
        z = int(np.argmax((truth == 2).sum(axis=(0, 1)) * 1000 + (truth > 0).sum(axis=(0, 1))))  # most infection
        label = Path(entry["image"]).name.split(".nii")[0] + (f" z={z}" if hu.shape[2] > 1 else "")
        cases.append(
            {
                "hu": hu[..., z],
                "label": truth[..., z],
                "pred": pred[..., z],
                "name": label,
                "dice": case_dice(pred, truth),
            }
        )
    return overlay_panels(cases, run.root / "figures" / f"overlay_{name}.png", f"{name}: held-out cases")


CLASSIFIER = "covid_slice_classifier"
CLASSIFIER_PER_ROW = 4


def pick_calls(calls: list[dict[str, Any]], per_row: int = CLASSIFIER_PER_ROW) -> list[dict[str, Any]]:
    """The classifier's most confident errors, then its most confident correct calls (half positives, half
    negatives where both exist), each case tagged with its row caption; `calls` have "prob" and "truth"."""

    def confidence(c: dict[str, Any]) -> float:
        return abs(c["prob"] - 0.5)

    right = [c for c in calls if (c["prob"] >= 0.5) == bool(c["truth"])]
    wrong = sorted((c for c in calls if (c["prob"] >= 0.5) != bool(c["truth"])), key=confidence, reverse=True)
    wrong = wrong[:per_row]
    by_class = [sorted((c for c in right if c["truth"] == t), key=confidence, reverse=True) for t in (1, 0)]
    half = per_row // 2
    correct = by_class[0][: max(half, per_row - len(by_class[1]))]
    correct += by_class[1][: per_row - len(correct)]
    return [{**c, "row": "most confident errors"} for c in wrong] + [
        {**c, "row": "most confident correct calls"} for c in correct
    ]


def classifier_overlay(run: RunFolder) -> Path | None:
    """RUN/figures/overlay_covid_slice_classifier.png: held-out slices with truth, predicted infection probability
    and right/wrong, from the evaluation's own predictions (RUN/eval/<classifier>/predictions.csv, ClassificationSaver)
    and the lung/infection outlines of the same slices' label maps. None without an evaluated classifier."""
    predictions = run.root / "eval" / CLASSIFIER / "predictions.csv"
    cls_list = run.root / "data" / "eval" / "eval_datalist_cls.json"
    seg_list = run.root / "data" / "eval" / "eval_datalist.json"
    if not (predictions.is_file() and cls_list.is_file()):
        return None
    truth = {str(Path(e["image"]).resolve()): int(e["label"]) for e in json.loads(cls_list.read_text())["test"]}
    labels = {}
    if seg_list.is_file():
        labels = {str(Path(e["image"]).resolve()): e["label"] for e in json.loads(seg_list.read_text())["test"]}
    calls = []
    with predictions.open(newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            key = str(Path(row[0]).resolve()) if row else ""
            if key in truth:
                calls.append({"image": key, "prob": float(row[-1]), "truth": truth[key]})
    cases = []
    for call in pick_calls(calls):
        label = labels.get(call["image"])
        name = Path(call["image"]).name.split(".nii")[0]
        lab = _load2d(label) if label is not None else None
        cases.append({**call, "hu": _load2d(call["image"]).astype(np.float32), "label": lab, "name": name})
    return classifier_panels(
        cases, run.root / "figures" / f"overlay_{CLASSIFIER}.png", f"{CLASSIFIER}: held-out slices"
    )


def environment(seed: int, threads: int | None, lanes: int = 1) -> dict[str, Any]:
    """What a run's numbers depend on besides its inputs: versions, seed, device, CPU threads per bundle run."""
    import platform

    import monai
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": np.__version__,
        "seed": seed,
        "device": f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu",
        "threads_per_bundle": threads if threads is not None else int(os.environ.get("OMP_NUM_THREADS", 0)) or None,
        "parallel_stages": lanes,
        "cpu_count": os.cpu_count(),
    }


def environment_markdown(env: dict[str, Any]) -> str:
    """The environment as one markdown table row per field."""
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {'default' if v is None else v} |" for k, v in env.items())])


def _fmt(value: Any) -> str:
    """A metric cell: 3 decimals for numbers, the value itself otherwise."""
    return f"{value:.3f}" if isinstance(value, (int, float)) else str(value)


def metrics_markdown(metrics: dict[str, Any]) -> str:
    """Markdown tables: one row per evaluated bundle with its metrics, then the stage wall times."""
    lines: list[str] = []
    evaluation = metrics.get("evaluation") or {}
    if evaluation:
        names = sorted({k for m in evaluation.values() for k in m})
        lines += ["| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for model, values in evaluation.items():
            lines.append(f"| {model} | " + " | ".join(_fmt(values.get(n, "")) for n in names) + " |")
        lines.append("")
    lines += ["| stage | wall s |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in metrics.get("timings_s", {}).items()]
    return "\n".join(lines)


def write_report(run: RunFolder, metrics: dict[str, Any]) -> Path:
    """Write RUN/report.md (atomically) with the command that made it, the tables and the figures."""
    command = json.loads((run.root / "run.json").read_text()).get("command", "")
    figures = [("Training slice and synthetic samples", sample_grid(run)), ("Training curves", training_curves(run))]
    for name in metrics.get("evaluation") or {}:
        if name in OVERLAY_LISTS:
            figures.append((f"Predictions of {name} on evaluation cases", prediction_overlay(run, name)))
        elif name == CLASSIFIER:
            figures.append((f"Calls of {name} on evaluation slices", classifier_overlay(run)))
    parts = [
        "# cosingan-monai run report",
        "",
        f"Command: `{command}`" if command else "",
        f"Preset: `{metrics.get('preset')}`; case: `{metrics.get('case')}`",
        "",
        "## Metrics",
        "",
        metrics_markdown(metrics),
        "",
    ]
    if metrics.get("environment"):
        parts += ["## Environment", "", environment_markdown(metrics["environment"]), ""]
    for title, path in figures:
        if path is not None:
            parts += [f"## {title}", "", f"![{title}]({path.relative_to(run.root).as_posix()})", ""]
    realism_md = run.root / "realism" / "realism.md"
    if realism_md.is_file():  # metrics/realism.py: the synthetic set against the case's real slices
        parts += [
            "## Realism of the synthetic set",
            "",
            key_figures_markdown({"synthetic vs the case's real slices": metrics.get("realism") or {}}),
            "",
            f"Full report: `{realism_md.relative_to(run.root).as_posix()}`",
            "",
        ]
    parts += [
        "## Trained bundles",
        "",
        *[f"- `bundles/{p.name}/`" for p in sorted((run.root / "bundles").iterdir()) if p.is_dir()],
        "",
        f"TensorBoard: `tensorboard --logdir {run.root / 'tensorboard'}`",
        "",
    ]
    held = heldout_markdown(metrics.get("heldout") or {})
    if held:  # last, so the report ends with the verdict line
        parts += ["## Held-out figure", "", held, ""]
    final = run.root / "report.md"
    with atomic_write_path(final) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return final
