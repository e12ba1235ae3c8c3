"""`cosingan-monai train-cls`: train, evaluate and export the covid_slice_classifier bundle (infection yes/no)."""

from __future__ import annotations

from typing import Any

import click

from cosingan_monai.commands.options import downstream_options, run_command


@click.command("train-cls")
@downstream_options
def train_cls(**kwargs: Any) -> None:
    """Train the slice classifier bundle (U-Net infection map read out per slice), evaluate it and export it."""
    run_command("covid_slice_classifier", kwargs)
