"""`cosingan-monai phantom`: write synthetic chest CT volumes with lung/infection labels (COVID-19-CT-Seg layout)."""

from __future__ import annotations

import os
from pathlib import Path

import click
from tqdm import tqdm

PROGRESS_MIN_CASES = 4  # show a progress bar (stderr) only when a run is long enough to want one


@click.command("phantom")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="output folder")
@click.option("--cases", default=4, show_default=True, type=click.IntRange(min=1), help="number of volumes")
@click.option("--seed", default=0, show_default=True, type=int, help="case i uses seed + i")
@click.option("--size", default=256, show_default=True, type=click.IntRange(min=32), help="in-plane pixels")
@click.option("--slices", default=48, show_default=True, type=click.IntRange(min=1), help="axial slices")
@click.option(
    "--healthy-fraction",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0.0, 1.0),
    help="share of cases without infection",
)
@click.option(
    "--workers",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="processes generating cases at once (0: one per CPU core); the cases are the same for any count",
)
def phantom(
    out_dir: Path, cases: int, seed: int, size: int, slices: int, healthy_fraction: float, workers: int
) -> None:
    """Synthetic chest CT volumes (NIfTI, HU) with lung and COVID-like infection labels; existing cases are kept."""
    from cosingan_monai.phantom.generator import write_phantom_dataset

    workers = workers or os.cpu_count() or 1

    # disable=None: tqdm hides the bar when stderr is not a terminal (logs, CI), keeping output clean
    bar = tqdm(total=cases, unit="case", disable=True if cases < PROGRESS_MIN_CASES else None, leave=False)

    def report(i: int, image: Path, label: Path, info: dict) -> None:
        shape = "x".join(map(str, info["shape"]))
        state = "kept" if info["skipped"] else ("healthy" if info["healthy"] else "infected")
        bar.write(f"{image}  {shape}  infection {info['infection_pct']:.1f}% of lung  ({state})")
        bar.update(1)

    try:
        pairs = write_phantom_dataset(
            out_dir,
            cases,
            seed,
            size=size,
            slices=slices,
            healthy_fraction=healthy_fraction,
            on_case=report,
            workers=workers,
        )
    except ValueError as exc:  # e.g. resuming into a folder holding cases of another size
        raise click.ClickException(str(exc)) from exc
    finally:
        bar.close()
    click.echo(f"wrote {len(pairs)} phantom cases to {out_dir} (images, labels, lung and infection masks)")
