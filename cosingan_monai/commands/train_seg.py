"""`cosingan-monai train-seg --dims 2|3`: train, evaluate and export the covid_seg_2d / covid_seg_3d bundle.

Also holds `train_downstream`, the shared driver of `train-seg` and `train-cls`: data in (a datalist JSON, a
COVID-19-CT-Seg folder or a MedSeg PNG folder), a trained, evaluated, TorchScript-exported bundle out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

DATALIST_NAMES = {"covid_slice_classifier": "datalist_cls", "covid_seg_2d": "datalist", "covid_seg_3d": "datalist_3d"}


def _datalist_for(name: str, data: Path, out: Path, dims: int, seed: int, split: dict | None, echo: Callable) -> Path:
    """`data` itself when it is a datalist JSON, else the datalist prepared from that folder into `out`."""
    from cosingan_monai.datalists import prepare_any

    if data.is_file():
        return data
    prepared = prepare_any(data, out, dims=dims, split=split, seed=seed, echo=echo)
    return prepared.datalists[DATALIST_NAMES[name]]


def _has_split(datalist: Path, split: str) -> bool:
    """Whether a datalist JSON holds a non-empty `split` list."""
    return bool(json.loads(datalist.read_text()).get(split))


def train_downstream(
    name: str,
    data: Path,
    out: Path,
    preset: str = "demo",
    eval_data: Path | None = None,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    threads: int | None = None,
    export: bool = True,
    echo: Callable[[str], None] = click.echo,
) -> dict[str, Any]:
    """Train bundle `name` on `data` into OUT/bundles/<name>, evaluate it on the test split (or `eval_data`), export
    TorchScript; returns and writes OUT/<name>_metrics.json ({"datalist", "metrics", "model", "torchscript"})."""
    from cosingan_monai import bundles
    from cosingan_monai.io import atomic_write_path

    dims = 3 if name == "covid_seg_3d" else 2
    datalist = _datalist_for(name, data, out / "data", dims, seed, None, echo)
    for split in ("training", "validation"):
        if not _has_split(datalist, split):
            raise click.ClickException(f"{datalist}: the datalist has no '{split}' entries")
    bundle = bundles.copy_bundle(name, out / "bundles")
    values = {"datalist": str(datalist), "tensorboard_dir": str(out / "tensorboard" / name), "seed": seed}
    values.update(overrides or {})
    echo(f"[{name}] training ({preset} preset) on {datalist}")
    bundles.run_bundle(bundle, "train", preset, values, threads=threads)
    result: dict[str, Any] = {"datalist": str(datalist), "model": str(bundle / "models" / "model.pt"), "metrics": {}}
    eval_list = datalist
    if eval_data is not None:
        eval_list = _datalist_for(name, eval_data, out / "eval_data", dims, seed, {"test": 1.0}, echo)
    if _has_split(eval_list, "test"):
        echo(f"[{name}] evaluating on the test split of {eval_list}")
        run = bundles.run_bundle(
            bundle, "evaluate", preset, {**values, "eval_datalist": str(eval_list)}, threads=threads
        )
        result["metrics"] = run.metrics
        for key, value in sorted(run.metrics.items()):
            echo(f"  {key:<22}{value:8.4f}")
    if export:
        result["torchscript"] = str(bundles.export_torchscript(bundle))
    with atomic_write_path(out / f"{name}_metrics.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    return result


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
    if device is not None:
        out["device"] = f"$torch.device('{device}')"
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
        click.option("--preset", default="demo", show_default=True, type=click.Choice(["test", "demo", "full"])),
        click.option(
            "--eval",
            "eval_data",
            type=click.Path(exists=True, resolve_path=True, path_type=Path),
            help="held-out data (datalist or folder) to evaluate on; default: the test split of --data",
        ),
        click.option("--epochs", type=click.IntRange(min=1), help="override the preset's max_epochs"),
        click.option("--image-size", type=click.IntRange(min=32), help="override the preset's image_size (x16)"),
        click.option("--strong-aug", is_flag=True, help="strong augmentation (the paper's few-real-slices baseline)"),
        click.option("--device", type=click.Choice(["cpu", "cuda"]), help="default: cuda when available"),
        click.option("--seed", default=0, show_default=True, type=int, help="split and training seed"),
        click.option("--threads", type=click.IntRange(min=1), help="CPU threads (1 is fastest on a busy CPU)"),
        click.option("--set", "sets", multiple=True, metavar="ID=VALUE", help="any bundle config override"),
        click.option("--no-export", is_flag=True, help="skip the TorchScript export"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def run_command(name: str, kwargs: dict[str, Any]) -> None:
    """Shared body of the two commands: turn options into a `train_downstream` call with clean errors."""
    from cosingan_monai.io import CaseError

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
        )
    except (CaseError, RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"model: {result['model']}")
    if "torchscript" in result:
        click.echo(f"torchscript: {result['torchscript']}")


@click.command("train-seg")
@click.option("--dims", required=True, type=click.Choice(["2", "3"]), help="2D slice UNet or 3D volume UNet")
@downstream_options
def train_seg(dims: str, **kwargs: Any) -> None:
    """Train the lung/infection segmenter bundle (covid_seg_2d or covid_seg_3d), evaluate it and export it."""
    run_command("covid_seg_2d" if dims == "2" else "covid_seg_3d", kwargs)
