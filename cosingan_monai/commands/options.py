"""Click options shared by the commands (one name, one meaning everywhere), and the glue of the commands that
train downstream bundles (`train-seg`, `train-cls`). Imports nothing heavy, so `--help` stays fast."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from cosingan_monai.core.constants import PRESETS
from cosingan_monai.core.errors import CaseError

#: --preset: the size preset of every bundle a command runs (overlay files configs/presets/<preset>.json).
preset_option = click.option(
    "--preset",
    type=click.Choice(PRESETS),
    default="demo",
    show_default=True,
    help="Bundle size preset: test (seconds, for checks), demo (minutes on a CPU), full (the paper's sizes, GPU).",
)
#: --seed: every command that draws random numbers takes it with this meaning.
seed_option = click.option(
    "--seed",
    default=0,
    show_default=True,
    type=int,
    help="Random seed (data splits, training, sampling); same seed and inputs, same results on one machine.",
)
#: --threads: CPU threads of each bundle run.
threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="CPU threads per bundle run (default: the environment's; 1 is fastest on a busy shared CPU).",
)
#: --device: where the bundles run.
device_option = click.option(
    "--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Device (default: cuda when available)."
)
#: --strong-aug/--light-aug: the augmentation of the bundles trained on synthetic data (pipeline, experiment arms b-d).
augmentation_option = click.option(
    "--strong-aug/--light-aug",
    "strong_aug",
    default=True,
    show_default=True,
    help="Augmentation of the bundles trained on synthetic data (strong: flips, affine, elastic, intensity, noise, "
    'as the real-slice baseline always gets; docs/results.md "Augmentation settings").',
)
#: --real-share: the real training slices' share of a synthetic arm's training set (docs/design.md "Synthetic arm").
real_share_option = click.option(
    "--real-share",
    "real_share",
    type=click.FloatRange(0.0, 0.9),
    default=0.25,
    show_default=True,
    help="Share of the training set of the 2D segmenter and classifier trained on synthetic data that is the real "
    "training slice(s), repeated; 0 trains on synthetic slices alone (the paper's setting).",
)
#: --set ID=VALUE: any bundle config override, on every command that runs a bundle.
set_option = click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="ID=VALUE",
    help="Bundle config override (repeatable), e.g. --set max_epochs=3 --set 'network_def#channels=[8,16,32]'; "
    "VALUE is read as JSON when it parses; `pipeline` and `experiment` also take BUNDLE:ID=VALUE for one bundle.",
)


def device_override(device: str | None) -> dict[str, Any]:
    """The bundle override `--device` asks for ({} = the bundle's own choice)."""
    return {} if device is None else {"device": f"$torch.device('{device}')"}


def parse_sets(pairs: Sequence[str]) -> dict[str, Any]:
    """`--set id=value` pairs as overrides; values are read as JSON when they parse, else kept as strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected id=value, got {pair!r}", param_hint="--set")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def common_overrides(epochs: int | None, image_size: int | None, strong_aug: bool, device: str | None) -> dict:
    """The overrides the shared CLI options ask for (None/False options are left to the preset)."""
    out: dict[str, Any] = {}
    if epochs is not None:
        out["max_epochs"] = epochs
    if image_size is not None:
        out["image_size"] = image_size
    if strong_aug:
        out["strong_aug"] = True
    out.update(device_override(device))
    return out


def downstream_options(func: Callable) -> Callable:
    """The click options `train-seg` and `train-cls` share."""
    options = [
        click.option(
            "--data",
            required=True,
            # absolute: the bundle runs with its own working directory, where a relative datalist path would not resolve
            type=click.Path(exists=True, resolve_path=True, path_type=Path),
            help="datalist JSON, COVID-19-CT-Seg folder, or folder with images/*.png + masks/*.png",
        ),
        click.option(
            "--out",
            required=True,
            type=click.Path(file_okay=False, resolve_path=True, path_type=Path),
            help="run folder",
        ),
        preset_option,
        click.option(
            "--eval",
            "eval_data",
            type=click.Path(exists=True, resolve_path=True, path_type=Path),
            help="held-out data (datalist or folder) to evaluate on; default: the test split of --data",
        ),
        click.option("--epochs", type=click.IntRange(min=1), help="override the preset's max_epochs"),
        click.option("--image-size", type=click.IntRange(min=32), help="override the preset's image_size (x16)"),
        click.option("--strong-aug", is_flag=True, help="strong augmentation (the paper's few-real-slices baseline)"),
        device_option,
        seed_option,
        threads_option,
        set_option,
        click.option("--no-export", is_flag=True, help="skip the TorchScript export"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def run_command(name: str, kwargs: dict[str, Any]) -> None:
    """Shared body of the two commands: turn options into a `train_downstream` call with clean errors."""
    from cosingan_monai.pipeline.downstream import train_downstream  # here, not at the top: keeps --help fast

    overrides = common_overrides(kwargs["epochs"], kwargs["image_size"], kwargs["strong_aug"], kwargs["device"])
    overrides.update(parse_sets(kwargs["sets"]))
    try:
        result = train_downstream(
            name,
            kwargs["data"],
            kwargs["out"],
            preset=kwargs["preset"],
            eval_data=kwargs["eval_data"],
            overrides=overrides,
            seed=kwargs["seed"],
            threads=kwargs["threads"],
            export=not kwargs["no_export"],
            echo=click.echo,
        )
    except (CaseError, RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"model: {result['model']}")
    if "torchscript" in result:
        click.echo(f"torchscript: {result['torchscript']}")
