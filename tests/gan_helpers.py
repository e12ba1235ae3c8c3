"""Shared helpers for the CoSinGAN tests: the training bundle's test preset as a CoSinGANConfig."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cosingan_monai.networks import CoSinGANConfig

REPO = Path(__file__).resolve().parents[1]
TRAIN_BUNDLE = REPO / "bundles" / "cosingan_train"
SAMPLE_BUNDLE = REPO / "bundles" / "cosingan_sample"
TEST_PRESET_CONFIG = TRAIN_BUNDLE / "configs" / "presets" / "test.json"


def preset_config(preset: Path, **overrides: Any) -> CoSinGANConfig:
    """train.json's config block with a preset's `config#...` overrides (and keyword overrides) applied."""
    base = json.loads((TRAIN_BUNDLE / "configs" / "train.json").read_text())["config"]
    base = {k: v for k, v in base.items() if not k.startswith("_")}
    for key, value in json.loads(Path(preset).read_text()).items():
        if key.startswith("config#"):
            base[key.split("#", 1)[1]] = value
    return CoSinGANConfig.from_dict(base, **overrides)
