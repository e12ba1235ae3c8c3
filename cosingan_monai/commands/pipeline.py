"""`cosingan-monai pipeline`: one annotated case in, trained and evaluated MONAI bundles plus a report out."""

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
    seed_option,
    set_option,
    threads_option,
)

EXISTING = click.Path(exists=True, path_type=Path)


@click.command("pipeline")
@click.option(
    "--case", "case", required=True, type=click.Path(exists=True, path_type=Path), help="CT: NIfTI, DICOM or PNG."
)
@click.option(
    "--label", type=click.Path(exists=True, path_type=Path), help="Label map (found automatically if omitted)."
)
@preset_option
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    required=True,
    help="Run folder (refused when it holds a run: --resume or --force).",
)
@click.option(
    "--eval", "eval_dir", type=click.Path(exists=True, path_type=Path), help="Real labelled cases to evaluate on."
)
@click.option("--train-slices", "train_slices", type=int, default=1, show_default=True, help="K training slices.")
@augmentation_option
@real_share_option
@click.option(
    "--volume-warp",
    "volume_warp",
    type=click.FloatRange(min=0.0, max=2.0),
    default=0.0,
    show_default=True,
    help="Warp strength of the label volumes that the synthetic volumes but the first render, so the 3D segmenter "
    "trains and validates on several anatomies (1: the 2D conditions' warps); 0 renders the case's own label volume "
    'every time (docs/design.md "Volume anatomies").',
)
@click.option(
    "--parallel-stages",
    "lanes",
    type=click.IntRange(min=1),
    default=None,
    help="Independent stages (the downstream trainings, the evaluations) run at once. Default: 2 on a CPU with 2+ "
    "cores, sharing them; 1 on a GPU.",
)
@click.option("--intensity", type=click.Choice(["auto", "hu", "windowed"]), default="auto", show_default=True)
@seed_option
@threads_option
@device_option
@set_option
@click.option("--resume", is_flag=True, help="Skip finished stages and continue an interrupted one.")
@click.option("--force", is_flag=True, help="Replace an existing run folder.")
def pipeline(
    case: Path,
    label: Path | None,
    preset: str,
    out: Path,
    eval_dir: Path | None,
    train_slices: int,
    strong_aug: bool,
    real_share: float,
    volume_warp: float,
    lanes: int | None,
    intensity: str,
    seed: int,
    threads: int | None,
    device: str | None,
    sets: tuple[str, ...],
    resume: bool,
    force: bool,
) -> None:
    """Train CoSinGAN on one case, synthesize data, train the classifier and 2D/3D segmenters, evaluate, report."""
    from cosingan_monai.core.errors import CaseError
    from cosingan_monai.pipeline.pipeline import PipelineOptions, run_pipeline
    from cosingan_monai.pipeline.run_folder import RunFolderError

    command = "cosingan-monai " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    options = PipelineOptions(
        case=case,
        label=label,
        preset=preset,
        out=out,
        eval_dir=eval_dir,
        train_slices=train_slices,
        strong_aug=strong_aug,
        real_share=real_share,
        volume_warp=volume_warp,
        lanes=lanes,
        intensity=intensity,
        seed=seed,
        threads=threads,
        device=device,
        sets=parse_sets(sets),
        resume=resume,
        force=force,
        command=command,
    )
    try:
        summary = run_pipeline(options, echo=click.echo)
    except (CaseError, RunFolderError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(summary)
