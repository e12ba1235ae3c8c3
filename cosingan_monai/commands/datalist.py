"""`cosingan-monai datalist`: a MONAI datalist (training/validation/test) from a COVID-19-CT-Seg, DICOM or MedSeg
PNG folder, for the downstream bundles or `train-seg` / `train-cls --data`."""

from __future__ import annotations

from pathlib import Path

import click

from cosingan_monai.commands.options import seed_option


@click.command("datalist")
@click.option(
    "--source",
    required=True,
    type=click.Path(exists=True, file_okay=False, resolve_path=True, path_type=Path),
    help="COVID-19-CT-Seg folder (NIfTI volumes, or one DICOM series folder per case) or MedSeg folder "
    "(images/*.png + masks/*.png).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, resolve_path=True, path_type=Path),
    help="Datalist JSON to write; converted slices/volumes go beside it (2D also writes <stem>_cls.json).",
)
@click.option("--dims", type=click.Choice(["2", "3"]), default="2", show_default=True, help="Slices or volumes.")
@click.option(
    "--split",
    default="0.6,0.2,0.2",
    show_default=True,
    help="training,validation,test fractions (or counts); per case for volumes, stratified by infection.",
)
@seed_option
def datalist(source: Path, out: Path, dims: str, split: str, seed: int) -> None:
    """Write a MONAI datalist of HU NIfTI cases with COVID-19-CT-Seg labels (0-3) from a real data folder."""
    from cosingan_monai.core.errors import CaseError
    from cosingan_monai.data.datalists import parse_split, write_datalist_file

    try:
        spec = parse_split(split)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--split") from None
    try:
        written = write_datalist_file(source, out, dims=int(dims), split=spec, seed=seed, echo=click.echo)
    except (CaseError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    for name, path in written.datalists.items():
        counts = ", ".join(f"{k} {v}" for k, v in written.counts[name].items())
        click.echo(f"{path}: {counts}")
