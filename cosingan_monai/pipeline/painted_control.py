"""The GAN-free control arm: paint each synthesis mask with the training slice's per-region HU statistics plus noise.

It answers "how much does the GAN itself add?": same masks, same downstream training, but no learned texture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REGIONS = ("outside", "body", "lung", "infection")


@dataclass
class RegionStats:
    """Mean and standard deviation of HU per region of one training slice."""

    mean: dict[str, float]
    std: dict[str, float]


def _regions(label: np.ndarray, body: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks of the four painted regions for a COVID-19-CT-Seg label slice and its body mask."""
    lung = (label == 1) | (label == 2)
    infection = label == 3
    inside = body.astype(bool) | lung | infection
    return {"outside": ~inside, "body": inside & ~lung & ~infection, "lung": lung, "infection": infection}


def region_stats(hu: np.ndarray, label: np.ndarray, body: np.ndarray) -> RegionStats:
    """Per-region HU mean/std of the training slice; a region absent there falls back to typical CT values."""
    typical = {"outside": (-1000.0, 20.0), "body": (20.0, 80.0), "lung": (-850.0, 60.0), "infection": (-450.0, 150.0)}
    mean, std = {}, {}
    for name, mask in _regions(label, body).items():
        if mask.sum() >= 10:
            mean[name], std[name] = float(hu[mask].mean()), float(hu[mask].std())
        else:
            mean[name], std[name] = typical[name]
    return RegionStats(mean, std)


def paint(label: np.ndarray, body: np.ndarray, stats: RegionStats, rng: np.random.Generator) -> np.ndarray:
    """A float32 HU slice: each region filled with its training mean plus i.i.d. Gaussian noise of its training std."""
    out = np.empty(label.shape, np.float32)
    for name, mask in _regions(label, body).items():
        out[mask] = rng.normal(stats.mean[name], stats.std[name], int(mask.sum()))
    return out
