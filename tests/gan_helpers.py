"""Shared helpers for the CoSinGAN tests: bundle paths and the training bundle's test preset as a config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cosingan_monai.networks import CoSinGANConfig

REPO = Path(__file__).resolve().parents[1]
TRAIN_BUNDLE = REPO / "bundles" / "cosingan_train"
SAMPLE_BUNDLE = REPO / "bundles" / "cosingan_sample"


def config_for_test_preset(**overrides: Any) -> CoSinGANConfig:
    """train.json's config with the test preset's `config#...` overrides (and keyword overrides) applied."""
    return CoSinGANConfig.from_bundle(TRAIN_BUNDLE, "test", **overrides)
