"""Render data/phantom_example.png: axial and coronal phantom slices in lung window with lung/infection outlines.

Why: the README shows what the embedded default data looks like; regenerate after changing cosingan_monai/phantom/
with `.venv/bin/python benchmarks/make_phantom_figure.py [--seed S] [--out PATH]`.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import click
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from cosingan_monai.data.io import atomic_write_path  # noqa: E402
from cosingan_monai.phantom.generator import INFECTION, make_phantom_case  # noqa: E402

LUNG_WINDOW = (-1350.0, 150.0)  # level -600, width 1500


def _show(ax: plt.Axes, img: np.ndarray, lab: np.ndarray, title: str, aspect: float = 1.0) -> None:
    """Draw one display-oriented slice with lung (green) and infection (red) contours."""
    ax.imshow(img, cmap="gray", vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1], aspect=aspect, interpolation="bilinear")
    lung = (lab > 0).astype(float)
    inf = (lab == INFECTION).astype(float)
    if lung.any():
        ax.contour(lung, levels=[0.5], colors="lime", linewidths=0.6)
    if inf.any():
        ax.contour(inf, levels=[0.5], colors="red", linewidths=0.6)
    ax.set_title(title, fontsize=7)
    ax.set_axis_off()


def _axial(vol: np.ndarray, k: int) -> np.ndarray:
    """RAS axial slice -> radiological display (patient right on image left, anterior at top)."""
    return vol[:, :, k].T[::-1, ::-1]


def _coronal(vol: np.ndarray, j: int) -> np.ndarray:
    """RAS coronal slice -> display (superior at top, patient right on image left)."""
    return vol[:, j, :].T[::-1, ::-1]


@click.command()
@click.option("--seed", default=1, show_default=True, help="phantom seed of the infected case")
@click.option("--out", default="data/phantom_example.png", show_default=True, type=click.Path(dir_okay=False))
@click.option("--size", default=256, show_default=True)
@click.option("--slices", default=48, show_default=True)
def main(seed: int, out: str, size: int, slices: int) -> None:
    """Render the phantom example figure and report generation time."""
    t0 = time.perf_counter()
    case = make_phantom_case(seed, size=size, slices=slices)
    elapsed = time.perf_counter() - t0
    healthy = make_phantom_case(seed + 1, size=size, slices=slices, healthy=True)
    img, lab = case.image, case.label
    z = img.shape[2]
    per_slice = (lab == INFECTION).sum(axis=(0, 1))
    k_inf = int(np.argmax(per_slice)) if per_slice.any() else z // 3
    ks = [int(z * 0.82), int(z * 0.6), k_inf, int(z * 0.18)]
    fig, axes = plt.subplots(2, 3, figsize=(9.6, 6.6), dpi=110)
    for ax, k in zip(axes.flat[:4], ks, strict=True):
        _show(ax, _axial(img, k), _axial(lab, k), f"seed {seed} axial z={k}")
    j = int(np.argmax((lab == INFECTION).sum(axis=(0, 2)))) if per_slice.any() else img.shape[1] // 2
    j = max(j, int(np.argmax((lab > 0).sum(axis=(0, 2)))) - 5)
    sp = case.affine[0, 0], case.affine[2, 2]
    _show(axes.flat[4], _coronal(img, j), _coronal(lab, j), f"seed {seed} coronal y={j}", aspect=sp[1] / sp[0])
    kh = int(z * 0.6)
    _show(axes.flat[5], _axial(healthy.image, kh), _axial(healthy.label, kh), f"seed {seed + 1} healthy, z={kh}")
    fig.suptitle(
        f"cosingan-monai phantom ({size}x{size}x{slices}, lung window; green lung, red infection "
        f"{100 * case.infection_fraction:.1f}% of lung)",
        fontsize=8,
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    # quantize to a 64-colour palette so the committed figure stays small
    pal = Image.open(buf).convert("RGB").quantize(colors=64)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write_path(out_path) as tmp:
        pal.save(tmp, format="PNG", optimize=True)
    click.echo(f"{out_path}: {out_path.stat().st_size / 1024:.0f} KB; case generated in {elapsed:.2f} s")


if __name__ == "__main__":
    main()
