"""`cosingan-monai train-seg --dims 2|3`: train, evaluate and export the covid_seg_2d / covid_seg_3d bundle."""

from __future__ import annotations

from typing import Any

import click

from cosingan_monai.commands.options import downstream_options, run_command


@click.command("train-seg")
@click.option("--dims", required=True, type=click.Choice(["2", "3"]), help="2D slice UNet or 3D volume UNet")
@downstream_options
def train_seg(dims: str, **kwargs: Any) -> None:
    """Train the lung/infection segmenter bundle (covid_seg_2d or covid_seg_3d), evaluate it and export it."""
    run_command("covid_seg_2d" if dims == "2" else "covid_seg_3d", kwargs)
