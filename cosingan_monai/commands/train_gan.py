"""`cosingan-monai train-gan`: train CoSinGAN on one annotated slice by running the cosingan_train bundle."""

from __future__ import annotations

from pathlib import Path

import click

from cosingan_monai.commands.options import (
    device_option,
    device_override,
    parse_sets,
    preset_option,
    seed_option,
    set_option,
    threads_option,
)


def _slice(value: str) -> int | str:
    """--slice: an integer index or 'auto'."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither an integer slice index nor 'auto'") from None


@click.command("train-gan")
@click.option(
    "--case", "case", required=True, type=click.Path(exists=True, path_type=Path), help="CT image (NIfTI, DICOM, PNG)."
)
@click.option(
    "--label",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Label map (default: found beside the case).",
)
@click.option(
    "--slice",
    "slice_",
    default="auto",
    show_default=True,
    help="Axial slice index, or 'auto' (infected + healthy lung).",
)
@preset_option
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Run folder; the bundle is copied to OUT/bundles/cosingan_train.",
)
@click.option("--resume", is_flag=True, help="Continue the training in OUT from its last checkpoint.")
@click.option("--force", is_flag=True, help="Start again, replacing the training in OUT.")
@seed_option
@threads_option
@device_option
@set_option
def train_gan(
    case: Path,
    label: Path | None,
    slice_: str,
    preset: str,
    out: Path,
    resume: bool,
    force: bool,
    seed: int,
    threads: int | None,
    device: str | None,
    sets: tuple[str, ...],
) -> None:
    """Train the CoSinGAN pyramid on one slice; writes OUT/bundles/cosingan_train/models/model.pt."""
    from cosingan_monai.core.errors import CaseError
    from cosingan_monai.data.io import load_case
    from cosingan_monai.pipeline import bundle_runner as bundles

    slice_index = _slice(slice_)
    try:
        load_case(case, label)  # validate before copying anything
    except CaseError as exc:
        raise click.ClickException(str(exc)) from None
    if resume and force:
        raise click.UsageError("--resume and --force exclude each other")
    previous = out / "bundles" / "cosingan_train"
    if not (resume or force) and any((previous / f).is_file() for f in ("models/model.pt", "eval/checkpoint.pt")):
        raise click.ClickException(f"{previous} holds a training: --resume continues it, --force starts again")
    bundle = bundles.copy_bundle("cosingan_train", out / "bundles")
    overrides = {
        "case": str(case.resolve()),
        "label": str(label.resolve()) if label else None,
        "slice": slice_index,
        "seed": seed,
        "resume": resume,
        "tensorboard_dir": str((out / "tensorboard" / "cosingan_train").resolve()),
        **device_override(device),
        **parse_sets(sets),
    }
    click.echo(f"[cosingan_train] training ({preset} preset) on {case} slice {slice_}; log {bundle / 'logs'}")
    bundles.run_bundle(bundle, "train", preset, overrides, threads=threads)
    click.echo(f"model: {bundle / 'models' / 'model.pt'}")
