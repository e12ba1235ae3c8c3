"""Report figures: lung-window slices with mask outlines, image grids, and training curves from TensorBoard logs."""

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
    """All scalar series under a TensorBoard log tree, as {tag: [(step, value), ...]} (tag prefixed by sub-folder)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, list[tuple[int, float]]] = {}
    root = Path(log_dir)
    for events in sorted(root.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
        acc.Reload()
        prefix = events.parent.relative_to(root).as_posix()
        for tag in acc.Tags().get("scalars", []):
            key = f"{prefix}/{tag}" if prefix != "." else tag
            series.setdefault(key, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return series


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
