"""CoSinGAN networks: per-scale two-stage generators, conditional patch critics, and the CoSinGAN pyramid object."""

from cosingan_monai.networks.config import CoSinGANConfig
from cosingan_monai.networks.critic import PatchCritic
from cosingan_monai.networks.generator import ScaleGenerator
from cosingan_monai.networks.pyramid import CheckpointError, CoSinGAN

__all__ = ["CheckpointError", "CoSinGAN", "CoSinGANConfig", "PatchCritic", "ScaleGenerator"]
