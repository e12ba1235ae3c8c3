"""`cosingan-monai label-app`: turn a pipeline run's trained segmenters into a MONAI Label app folder."""

from __future__ import annotations

import click

from cosingan_monai.core.constants import PRESETS
from cosingan_monai.core.errors import CaseError
from cosingan_monai.label.app_builder import DEFAULT_PORT, build_label_app, describe


@click.command("label-app")
@click.option("--run", "run_dir", required=True, type=click.Path(), help="Pipeline run folder (holds bundles/).")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="App folder to write (must not exist).")
@click.option(
    "--studies",
    type=click.Path(),
    default=None,
    help="Folder of NIfTI CT volumes (labels: COVID-19-CT-Seg layout); default: fresh phantom volumes.",
)
@click.option(
    "--preset",
    type=click.Choice(["auto", *PRESETS]),
    default="auto",
    show_default=True,
    help="Preset the run used; auto = the run's record, else the preset whose network fits model.pt.",
)
@click.option("--cases", default=6, show_default=True, help="Phantom studies to write (without --studies).")
@click.option("--labeled", default=4, show_default=True, help="How many phantom studies get a label.")
@click.option("--seed", default=1000, show_default=True, help="Phantom seed.")
@click.option("--size", default=256, show_default=True, help="Phantom in-plane size (voxels).")
@click.option("--slices", default=48, show_default=True, help="Phantom slices.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, help="Port in the printed server command.")
@click.option("--force", is_flag=True, help="Replace an app folder that label-app wrote before.")
def label_app(
    run_dir: str,
    out_dir: str,
    studies: str | None,
    preset: str,
    cases: int,
    labeled: int,
    seed: int,
    size: int,
    slices: int,
    port: int,
    force: bool,
) -> None:
    """Write a MONAI Label app serving RUN's covid_seg_2d/3d bundles and print the server command."""
    try:
        app = build_label_app(
            run_dir,
            out_dir,
            studies,
            preset=preset,
            force=force,
            cases=cases,
            labeled=labeled,
            seed=seed,
            size=size,
            slices=slices,
        )
    except (CaseError, ValueError) as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(1) from None
    click.echo(describe(app, port=port))
