"""`cosingan-monai inspect`: validate a CT case and print what it holds (geometry, intensity, lungs, infection)."""

from __future__ import annotations

import json
from typing import Any

import click

from cosingan_monai.core.errors import CaseError
from cosingan_monai.data.cases import summarize
from cosingan_monai.data.io import LABEL_MEANING, find_label, load_case


def _runs(runs: list[list[int]] | None) -> str:
    """Slice runs [[a, b], ...] as "a-b, c (n slices)", or "none"."""
    if runs is None:
        return "unknown"
    if not runs:
        return "none"
    n = sum(b - a + 1 for a, b in runs)
    return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs) + f" ({n} slice{'s' if n != 1 else ''})"


def format_summary(s: dict[str, Any]) -> str:
    """A readable multi-line report of `io.summarize` output."""
    it = s["intensity"]
    unit = "HU" if s["intensity_kind"] == "hu" else "windowed 0-255"
    rng = f"min {it['min']:g}, p1 {it['p1']:g}, median {it['p50']:g}, p99 {it['p99']:g}, max {it['max']:g}"
    lines = [
        f"image        {s['image']}",
        f"shape        {' x '.join(map(str, s['shape']))} (x, y, z)",
        f"spacing      {' x '.join(f'{v:g}' for v in s['spacing_mm'])} mm ({s['spacing_source']})",
        f"orientation  {s['original_orientation']} on disk -> RAS in memory",
        f"intensity    {unit}: {rng}",
    ]
    if "intensity_hu" in s:
        hu = s["intensity_hu"]
        lines.append(f"             as HU: min {hu['min']:.0f}, median {hu['p50']:.0f}, max {hu['max']:.0f}")
    if s["label"] is None:
        lines.append("label        none")
    else:
        values = ", ".join(f"{k}: {v}" for k, v in s["label_values"].items())
        lines.append(f"label        {s['label']}")
        lines.append(f"             {s['label_kind']} ({LABEL_MEANING[s['label_kind']]}); voxels {values}")
    lines.append(f"slices       {s['n_slices']}")
    src = {"label": "from label", "auto_lung_mask": "automatic lung mask", None: "unavailable"}[s["lung_source"]]
    lines.append(f"lung         slices {_runs(s['slices_with_lung'])} [{src}]")
    if s["lung_volume_ml"] is not None:
        lines.append(f"             volume {s['lung_volume_ml']:.1f} ml")
    if s["label"] is not None:
        lines.append(f"infection    slices {_runs(s['slices_with_infection'])}")
        pct = s["infection_percent_of_lung"]
        pct_text = f" = {pct:.2f} % of lung" if pct is not None else ""
        lines.append(f"             volume {s['infection_volume_ml']:.1f} ml{pct_text}")
    lines += [f"note         {n}" for n in s["notes"]]
    return "\n".join(lines)


@click.command("inspect")
@click.option("--case", "case_path", required=True, type=click.Path(), help="CT: NIfTI, DICOM file/folder, PNG/folder.")
@click.option("--label", "label_path", type=click.Path(), default=None, help="Label map; found by layout if omitted.")
@click.option("--intensity", type=click.Choice(["auto", "hu", "windowed"]), default="auto", show_default=True)
@click.option(
    "--label-kind", type=click.Choice(["auto", "lungs+infection", "infection-only"]), default="auto", show_default=True
)
@click.option(
    "--spacing", type=float, nargs=3, default=None, metavar="X Y Z", help="Voxel size in mm (e.g. for PNG slices)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def inspect_case(
    case_path: str,
    label_path: str | None,
    intensity: str,
    label_kind: str,
    spacing: tuple[float, float, float] | None,
    as_json: bool,
) -> None:
    """Validate a case and summarize it; exits non-zero with 'error: <file>: <problem>' on bad input."""
    found = False
    if label_path is None:
        label = find_label(case_path)
        found = label is not None
    else:
        label = label_path
    try:
        case = load_case(case_path, label, intensity=intensity, label_kind=label_kind, spacing=spacing)  # type: ignore[arg-type]
    except CaseError as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(1) from None
    summary = summarize(case)
    if found:
        summary["notes"].insert(0, f"label found by folder layout: {label}")
    elif label_path is None:
        summary["notes"].insert(0, "no label given and none found beside the image (see data/README.md)")
    click.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))
