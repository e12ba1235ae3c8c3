"""report.md for a pipeline run: the command, stage timings, evaluation tables and figures (grids, curves)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from cosingan_monai.core.files import atomic_write_path
from cosingan_monai.pipeline.figures import curves, read_scalars, slice_grid
from cosingan_monai.pipeline.heldout import heldout_markdown
from cosingan_monai.pipeline.run_folder import RunFolder

#: TensorBoard tags worth a curve in the report (substring match); the GAN logs many more per scale.
CURVE_TAGS = ("loss", "dice", "auc", "acc", "rec")
MAX_CURVES = 12


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
    """Curves of the run's key TensorBoard scalars (losses, Dice, AUC), or None when nothing was logged."""
    series = read_scalars(run.root / "tensorboard")
    keep = {k: v for k, v in series.items() if any(t in k.lower() for t in CURVE_TAGS)}
    keep = dict(sorted(keep.items())[:MAX_CURVES])
    return curves(keep, run.root / "figures" / "training_curves.png")


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
    for title, path in figures:
        if path is not None:
            parts += [f"## {title}", "", f"![{title}]({path.relative_to(run.root).as_posix()})", ""]
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
