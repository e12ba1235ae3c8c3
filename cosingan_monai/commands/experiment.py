"""`cosingan-monai experiment`: the paper's protocol comparing real, augmented, synthetic and painted training data."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from cosingan_monai.commands.options import (
    augmentation_option,
    device_option,
    parse_sets,
    preset_option,
    real_share_option,
    set_option,
    threads_option,
)

EXISTING = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command("experiment")
@click.option("--dataset", required=True, type=EXISTING, help="COVID-19-CT-Seg volumes or MedSeg-style PNG slices.")
@click.option("--test", "test", type=EXISTING, help="A separate labelled test set (else a listed split of --dataset).")
@click.option(
    "--k",
    "ks",
    type=int,
    multiple=True,
    default=(1,),
    show_default=True,
    help="Real training slices per arm; repeat it (--k 1 --k 2 --k 4) for a k-table that shares the GANs.",
)
@preset_option
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--seeds", type=int, default=3, show_default=True, help="Repeats, each with other training slices.")
@augmentation_option
@real_share_option
@threads_option
@device_option
@set_option
@click.option("--resume", is_flag=True, help="Skip finished arms.")
@click.option("--force", is_flag=True, help="Replace an existing experiment folder.")
def experiment(
    dataset: Path,
    test: Path | None,
    ks: tuple[int, ...],
    preset: str,
    out: Path,
    seeds: int,
    strong_aug: bool,
    real_share: float,
    threads: int | None,
    device: str | None,
    sets: tuple[str, ...],
    resume: bool,
    force: bool,
) -> None:
    """Arms (a) k real slices + strong aug, (b) CoSinGAN from the same k, (c) all real, (d) GAN-free painted masks."""
    from cosingan_monai.core.errors import CaseError
    from cosingan_monai.pipeline.experiment import ExperimentOptions, run_experiment
    from cosingan_monai.pipeline.run_folder import RunFolderError

    command = "cosingan-monai " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    opts = ExperimentOptions(
        dataset, out, tuple(dict.fromkeys(ks)), preset, seeds, test, resume, force, command, strong_aug, threads,
        device, parse_sets(sets), real_share,
    )  # fmt: skip
    try:
        click.echo(run_experiment(opts, echo=click.echo))
    except (CaseError, RunFolderError) as exc:
        raise click.ClickException(str(exc)) from None
