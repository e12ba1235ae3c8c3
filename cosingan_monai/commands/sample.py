"""`cosingan-monai sample`: synthesize CT slices/volumes for label maps with trained CoSinGANs (cosingan_sample)."""

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


@click.command("sample")
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="A trained model.pt (repeat to use several in turn).",
)
@click.option(
    "--conditions",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Folder of 2D/3D label maps, a conditions JSON or a MONAI datalist.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Run folder; data goes to OUT/synthetic.",
)
@preset_option
@click.option("-n", "--samples-per-condition", type=int, default=None, help="Slices per condition (default: preset).")
@click.option(
    "--volume-label",
    "volume_labels",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Label volume for volume mode (repeatable).",
)
@click.option("--volumes", "n_volumes", type=int, default=0, show_default=True, help="Number of volumes to synthesize.")
@click.option(
    "--lesion-free/--no-lesion-free",
    default=True,
    show_default=True,
    help="Add infection-free copies of infected conditions.",
)
@click.option(
    "--lesion-density-spread",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Each lesion's density is drawn from [-S, S] of the range the GAN trained on (0: the training slice's "
    "density; default: the bundle's 1.0). Models without the lesion density channel ignore it.",
)
@click.option(
    "--model-assignment",
    type=click.Choice(["fit", "round_robin", "all"]),
    default=None,
    help="With several --model: which renders a condition. fit (the bundle's default): the model whose training "
    "slice fits it best, an equal share each; round_robin: in turn; all: every model (the set grows with them).",
)
@seed_option
@threads_option
@device_option
@set_option
def sample(
    models: tuple[Path, ...],
    conditions: Path | None,
    out: Path,
    preset: str,
    samples_per_condition: int | None,
    volume_labels: tuple[Path, ...],
    n_volumes: int,
    lesion_free: bool,
    lesion_density_spread: float | None,
    model_assignment: str | None,
    seed: int,
    threads: int | None,
    device: str | None,
    sets: tuple[str, ...],
) -> None:
    """Write OUT/synthetic: images/, labels/, previews/, datalist.json, datalist_cls.json [+ volumes/, 3D list]."""
    from cosingan_monai.networks.pyramid import CheckpointError, CoSinGAN  # function-local: keeps --help fast
    from cosingan_monai.pipeline import bundle_runner as bundles

    if conditions is None and n_volumes == 0:
        raise click.UsageError("give --conditions and/or --volumes with --volume-label")
    for model in models:  # refuse a bad or crafted model file here, not as a traceback from inside the bundle
        try:
            CoSinGAN.load(model)
        except CheckpointError as exc:
            raise click.ClickException(str(exc)) from None
    bundle = bundles.copy_bundle("cosingan_sample", out / "bundles")
    overrides = {
        "models": [str(m.resolve()) for m in models],
        "conditions": str(conditions.resolve()) if conditions else None,
        "output_dir": str((out / "synthetic").resolve()),
        "volume_labels": [str(v.resolve()) for v in volume_labels],
        "n_volumes": n_volumes,
        "lesion_free_copies": lesion_free,
        "seed": seed,
    }
    if samples_per_condition is not None:
        overrides["samples_per_condition"] = samples_per_condition
    if lesion_density_spread is not None:
        overrides["lesion_density_spread"] = lesion_density_spread
    if model_assignment is not None:
        overrides["model_assignment"] = model_assignment
    overrides.update({**device_override(device), **parse_sets(sets)})
    bundles.run_bundle(bundle, "inference", preset, overrides, threads=threads)
    click.echo(f"synthetic data: {out / 'synthetic'}")
