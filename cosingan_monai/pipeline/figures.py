"""Report figures: lung-window slices with mask outlines, image grids, training curves from TensorBoard logs, and
prediction overlays (MONAI `blend_images`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cosingan_monai.core.constants import WINDOW_HU
from cosingan_monai.core.files import atomic_write_path
from cosingan_monai.data.io import ras_to_display  # noqa: E402

LUNG_WINDOW = WINDOW_HU
#: Outline colours per mask: lung green, infection red (the COVID-19-CT-Seg viewer convention).
OUTLINES = ((lambda lab: (lab >= 1) & (lab <= 3), "lime"), (lambda lab: lab == 3, "red"))


def _save(fig: plt.Figure, path: str | Path) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    final = Path(path)
    with atomic_write_path(final) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return final


def show_slice(ax: plt.Axes, hu: np.ndarray, label: np.ndarray | None = None, title: str = "") -> None:
    """Draw a RAS (x, y) HU slice in radiological display, lung window, with lung/infection outlines."""
    # matplotlib contours, not LabelToContour pixels: vector lines stay one line wide on upscaled small slices
    ax.imshow(ras_to_display(hu), cmap="gray", vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1], interpolation="nearest")
    if label is not None:
        shown = ras_to_display(label)
        for select, colour in OUTLINES:
            mask = select(shown)
            if mask.any() and not mask.all():
                ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=0.8)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def slice_grid(panels: Sequence[tuple[np.ndarray, np.ndarray | None, str]], path: str | Path, columns: int = 6) -> Path:
    """A grid PNG of (hu, label-or-None, title) panels, e.g. real / reconstruction / samples for one mask."""
    n = len(panels)
    cols = min(columns, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (hu, label, title) in zip(axes.flat, panels, strict=False):
        show_slice(ax, hu, label, title)
    return _save(fig, path)


def read_scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """All scalar series under a TensorBoard log tree, as {tag: [(step, value), ...]} (tag prefixed by sub-folder).

    Each event file is read on its own and every series is ordered by the events' wall time, so a training redone
    into the same folder comes last. (File names cannot order them: their counter suffix sorts "10" before "9".)
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    timed: dict[str, list[tuple[float, int, float]]] = {}
    root = Path(log_dir)
    for events in root.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        prefix = events.parent.relative_to(root).as_posix()
        for tag in acc.Tags().get("scalars", []):
            key = f"{prefix}/{tag}" if prefix != "." else tag
            timed.setdefault(key, []).extend((e.wall_time, e.step, e.value) for e in acc.Scalars(tag))
    return {key: [(step, value) for _, step, value in sorted(rows)] for key, rows in timed.items()}


def curves(series: dict[str, list[tuple[int, float]]], path: str | Path, columns: int = 3) -> Path | None:
    """One small line plot per scalar series; returns None when there is nothing to plot."""
    if not series:
        return None
    tags = sorted(series)
    cols = min(columns, len(tags))
    rows = -(-len(tags) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat[len(tags) :]:
        ax.axis("off")
    for ax, tag in zip(axes.flat, tags, strict=False):
        steps, values = zip(*sorted(series[tag]), strict=True)
        ax.plot(steps, values, lw=1)
        ax.set_title(tag, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _save(fig, path)


#: TensorBoard tags worth a curve (substring match); the GAN also logs gradient penalties, noise amplitudes, ...
CURVE_TAGS = ("loss", "dice", "auc", "acc", "rec", "learning_rate")


def bundle_panels(series: dict[str, list[tuple[int, float]]]) -> dict[str, dict[str, dict[str, list]]]:
    """Group `read_scalars` series per bundle (the first folder of the tag) into panels of lines.

    A GAN tag `cosingan_train/scale2/loss_d` is the line `scale2` of panel `loss_d`; the downstream bundles'
    validation metrics (`val_*`) share one panel `validation`, one line each. Held-out `test_*` values and the
    hparams' `hparam/*` (one point each) are left to the metrics tables.
    Returns {bundle: {panel: {line: points}}}, bundles and panels sorted.
    """
    out: dict[str, dict[str, dict[str, list]]] = {}
    for key, points in sorted(series.items()):
        bundle, _, rest = key.partition("/")
        if not rest:
            bundle, rest = "run", key
        *groups, tag = rest.split("/")
        if tag.startswith("test_") or groups[:1] == ["hparam"] or not any(t in tag.lower() for t in CURVE_TAGS):
            continue
        panel, line = ("validation", tag) if tag.startswith("val_") else (tag, "/".join(groups) or tag)
        out.setdefault(bundle, {}).setdefault(panel, {})[line] = sorted(points)
    return out


def x_label(bundle: str, panel: str) -> str:
    """The x axis of a panel: epochs for validation, iterations of its scale for the GAN, iterations otherwise."""
    if panel == "validation":
        return "epoch"
    return "iteration (per scale)" if bundle.startswith("cosingan_train") else "iteration"


def bundle_curves(panels: dict[str, dict[str, dict[str, list]]], path: str | Path) -> Path | None:
    """One row of labelled line plots per bundle (`bundle_panels`); None when nothing was logged."""
    if not panels:
        return None
    cols = max(len(p) for p in panels.values())
    fig, axes = plt.subplots(len(panels), cols, figsize=(3.6 * cols, 2.7 * len(panels)), squeeze=False)
    for row, (bundle, bundle_panels_) in zip(axes, panels.items(), strict=True):
        for ax in row[len(bundle_panels_) :]:
            ax.axis("off")
        for ax, (panel, lines) in zip(row, bundle_panels_.items(), strict=False):
            for line, points in lines.items():
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, lw=1, marker="." if len(points) < 10 else None, label=line)
            ax.set_title(f"{bundle}: {panel}", fontsize=8)
            ax.set_xlabel(x_label(bundle, panel), fontsize=7)
            ax.set_ylabel(panel if panel != "validation" else "metric", fontsize=7)
            ax.tick_params(labelsize=7)
            if len(lines) > 1:
                ax.legend(fontsize=6, ncol=2 if len(lines) > 4 else 1)
    fig.tight_layout()
    return _save(fig, path)


def overlay_panels(cases: Sequence[dict], path: str | Path, title: str = "") -> Path | None:
    """Rows of (image, truth overlay, prediction overlay) for RAS (x, y) HU slices and class maps (0 background,
    1 lung, 2 infection: the segmenters' classes).

    `cases`: dicts with "hu", "label", "pred" (2D arrays) and "name", "dice" ({"lung": d, "infection": d}). Overlays
    are MONAI `blend_images` over the lung-window image (lung green, infection red: jet at 0.5 and 1), in
    radiological display.
    """
    from monai.visualize import blend_images

    if not cases:
        return None
    fig, axes = plt.subplots(len(cases), 3, figsize=(7.2, 2.5 * len(cases)), squeeze=False)
    lo, hi = LUNG_WINDOW
    for row, case in zip(axes, cases, strict=True):
        image = np.clip((ras_to_display(case["hu"]).astype(np.float32) - lo) / (hi - lo), 0, 1)[None]
        panels = [("image", np.repeat(image, 3, 0))]
        for name in ("label", "pred"):
            lab = ras_to_display(np.asarray(case[name])).astype(np.float32)[None] / 2.0  # same colours in both
            panels.append((name, np.asarray(blend_images(image, lab, alpha=0.45, cmap="jet", rescale_arrays=False))))
        dice = ", ".join(f"{k} {v:.2f}" if np.isfinite(v) else f"{k} n/a" for k, v in case["dice"].items())
        for ax, (name, rgb) in zip(row, panels, strict=True):
            ax.imshow(np.moveaxis(rgb, 0, -1), interpolation="nearest")
            ax.axis("off")
            ax.set_title(
                {"image": case["name"], "label": "truth", "pred": f"prediction (Dice {dice})"}[name], fontsize=7
            )
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def contour_overlay(hu: np.ndarray, label: np.ndarray | None) -> np.ndarray:
    """A RAS (x, y) HU slice in the lung window as an RGB display image (rows, cols, 3), with the lung (green) and
    infection (red) outlines of a COVID-19-CT-Seg label map (MONAI `LabelToContour`, `blend_images`)."""
    from monai.transforms import LabelToContour
    from monai.visualize import blend_images

    lo, hi = LUNG_WINDOW
    image = np.clip((ras_to_display(hu).astype(np.float32) - lo) / (hi - lo), 0, 1)[None]
    if label is None:
        return np.repeat(image, 3, 0).transpose(1, 2, 0)
    shown = ras_to_display(np.asarray(label))
    edges = [np.asarray(LabelToContour()(select(shown)[None].astype(np.float32)))[0] > 0 for select, _ in OUTLINES]
    marks = np.where(edges[1], 1.0, np.where(edges[0], 0.5, 0.0)).astype(np.float32)[None]  # jet: 0.5 green, 1 red
    rgb = blend_images(image, marks, alpha=1.0, cmap="jet", rescale_arrays=False)
    return np.moveaxis(np.asarray(rgb), 0, -1)


def classifier_panels(cases: Sequence[dict], path: str | Path, title: str = "", columns: int = 4) -> Path | None:
    """A grid of held-out slices with the classifier's call: truth, predicted infection probability, and whether the
    call (p >= 0.5) was right (green frame) or wrong (red frame).

    `cases`: dicts with "hu" (RAS (x, y) HU), "label" (0-3 map or None, outlined), "truth" (0/1), "prob", "name",
    and "row" (the row caption, e.g. "most confident errors"). Rows keep the order of their first case.
    """
    if not cases:
        return None
    rows: dict[str, list[dict]] = {}
    for case in cases:
        rows.setdefault(case["row"], []).append(case)
    cols = min(columns, max(len(r) for r in rows.values()))
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.4 * cols, 2.75 * len(rows)), squeeze=False)
    for ax_row, (caption, row) in zip(axes, rows.items(), strict=True):
        for ax in ax_row[len(row) :]:
            ax.axis("off")
        for i, (ax, case) in enumerate(zip(ax_row, row[:cols], strict=False)):
            right = (case["prob"] >= 0.5) == bool(case["truth"])
            ax.imshow(contour_overlay(case["hu"], case.get("label")), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor("limegreen" if right else "red")
                spine.set_linewidth(3)
            truth = "infected" if case["truth"] else "healthy"
            verdict = "correct" if right else "WRONG"
            ax.set_title(f"{case['name']}\ntruth {truth}, p={case['prob']:.2f}: {verdict}", fontsize=7)
            if i == 0:
                ax.set_ylabel(caption, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
