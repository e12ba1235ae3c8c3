"""`cosingan-monai realism`: weight-free realism metrics of synthetic slices against real ones (docs/realism.md)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("realism")
@click.option("--real", required=True, type=click.Path(path_type=Path), help="images/+labels/ folder or datalist JSON")
@click.option("--synthetic", required=True, type=click.Path(path_type=Path), help="the same, e.g. a sample folder")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="write realism.json/.md")
@click.option("--size", default=128, show_default=True, type=click.IntRange(min=16), help="analysis grid in pixels")
@click.option(
    "--segmenter",
    type=click.Path(path_type=Path),
    default=None,
    help="trained covid_seg_2d bundle folder (models/model.ts): adds its Dice on both sets",
)
@click.option("--seed", default=0, show_default=True, type=int, help="draws the real pairs of the diversity reference")
def realism(real: Path, synthetic: Path, out: Path | None, size: int, segmenter: Path | None, seed: int) -> None:
    """Compare synthetic CT slices with real ones per region (HU, texture, spectrum, GLCM), diversity, consistency."""
    from cosingan_monai.core.errors import CaseError  # lazy: keeps `--help` fast (no scipy/torch import)
    from cosingan_monai.metrics.realism_io import run_realism  # lazy: as above

    try:
        report, written = run_realism(real, synthetic, out, size=size, segmenter=segmenter, seed=seed)
    except CaseError as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(1) from None
    click.echo(report.to_markdown(), nl=False)
    for path in written:
        click.echo(f"wrote {path}")
