"""Every CoSinGAN design choice as one flat, serialisable config (docs/design.md).

Flat primitives only, so the config travels inside the model file and loads with torch.load(weights_only=True),
and bundle presets can override any field as `config#<field>`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class CoSinGANConfig:
    """Pyramid, network, loss, augmentation, training-schedule and sampling settings of one CoSinGAN model."""

    # ---- pyramid
    max_size: int = 512  # finest scale's longer side (512 full, 128 demo, 32-48 tests)
    min_size: int = 25  # coarsest scale's shorter side stays >= this
    scale_factor: float = 0.75
    image_resize: str = "area"  # training slice to the finest size: "area" (box mean) or "bilinear" (antialiased)

    # ---- networks
    base_channels: int = 32
    channel_double_every: int = 4  # channels double every this many scales ...
    max_channels: int = 128  # ... capped here
    gen_layers: int = 5  # conv layers per generator stage (head + body + tail)
    critic_layers: int = 5
    kernel_size: int = 3
    batch_norm: bool = False  # optional, off as in ConSinGAN (also keeps a future batched "fleet" simple)
    use_body: bool = True  # third condition channel: body/foreground mask
    stage2_focus_floor: float = 0.3  # stage-2 residual weight outside the (slightly dilated) lungs; 1 inside
    critic2_masked_views: bool = True  # stage-2 critic also sees the lung- and lesion-masked image
    critic2_mask_weight: float = 1.0  # extra weight of stage-2 critic scores inside the lungs
    warm_start: bool = True  # a new scale starts from the previous scale's weights when the widths match

    # ---- training schedule
    iters_per_scale: int = 2000
    iters_coarsest_factor: float = 1.0  # iterations at the coarsest scale = iters_per_scale x this ...
    iters_finest_factor: float = 1.0  # ... at the finest x this, linear in between (texture is made at fine scales)
    stage2_start: float = 0.5  # fraction of a scale's iterations after which stage 2 joins
    joint_stage1: bool = True  # stage 1 keeps training once stage 2 has joined
    batch_size: int = 1  # augmented copies of the one training pair per step
    lr_g: float = 5e-4
    lr_d: float = 5e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_decay_at: float = 0.8  # fraction of a scale's iterations where the learning rates drop ...
    lr_gamma: float = 0.1  # ... by this factor
    d_steps: int = 1  # critic updates per generator update
    aug_bank_size: int = 64  # bank of (augmented pair, coarse input) per scale (0 = everything fresh every step)
    bank_refresh_every: int = 4  # replace one bank entry every this many steps
    crop_size: int = 0  # train scales larger than this on random crops of this side (0 = whole image)
    crop_margin: int = -1  # generator context around a crop in px (-1 = its receptive radius)
    channels_last: bool = True  # NHWC convolutions (measured faster on CPU; neutral on CUDA)
    gp_weight: float = 0.1  # WGAN-GP weight (SinGAN's 0.1)
    gp_every: int = 1  # lazy regularisation: penalty every k critic steps, weighted by k
    rec_alpha: float = 10.0  # weight of the mixed reconstruction loss (at the coarsest scale) ...
    rec_alpha_fine: float = 2.0  # ... at the finest, geometric in between (-1 = rec_alpha at every scale)
    rec_ssim_weight: float = 1.0  # mixed loss = L1 + w * (1 - SSIM)
    ssim_win: int = 7
    noise_amp_factor: float = 0.1  # noise amp per scale = factor x RMSE(real, upsampled reconstruction)
    noise_amp_coarsest: float = 1.0
    noise_amp_min: float = 0.1  # floor of every finer scale's noise amps (both stages), network units (75 HU)
    noise_body_weight: float = 0.5  # finer scales' noise weight in the body outside the lungs (lungs: 1) ...
    noise_air_weight: float = 0.1  # ... and outside the body (1, 1 = one amplitude everywhere, model files before)
    lesion_contrast_weight: float = 10.0  # weight of the random path's lesion contrast floor (0: off, old files) ...
    lesion_contrast_fraction: float = 0.75  # ... lesions keep >= this fraction of the real lesion-lung contrast ...
    lesion_contrast_finest_off: int = 0  # ... at every scale but the finest this many (they train without it)
    level_guard_weight: float = 10.0  # weight of the random-path region-level hinge (0 = off; docs/design.md) ...
    level_guard_ref: str = "residual"  # ... each stage against its own input ("residual") or the real slice ("real")
    level_guard_tol: float = 0.1  # ... free band around the real slice's region means, network units (75 HU) ...
    level_guard_min_area: float = 0.1  # ... for regions covering at least this fraction of the (cropped) window

    # ---- hierarchical augmentation (strength 1 at the coarsest scale, aug_fine_strength at the finest)
    aug_prob: float = 0.8  # probability of the joint geometric augmentation per step
    aug_fine_strength: float = 0.2
    aug_flip_prob: float = 0.5  # left-right flip
    aug_zoom_prob: float = 0.5  # isotropic zoom-out, padded with air / empty condition ...
    aug_zoom_out: float = 0.3  # ... by a factor down to 1 - aug_zoom_out (at every scale)
    air_hu: float = -1000.0  # air level used for padding when the training slice shows no air outside the body
    aug_rotate_deg: float = 10.0
    aug_scale: float = 0.1
    aug_translate: float = 0.06  # fraction of the side
    aug_elastic_spacing: float = 0.25  # control-point spacing as a fraction of the side
    aug_elastic_magnitude: float = 2.0  # elastic control-point displacement in pixels (Rand2DElastic magnitude)
    jitter_prob: float = 0.8  # global intensity/contrast jitter, applied at every scale
    jitter_gamma: float = 0.25  # gamma in [1/(1+g), 1+g]
    jitter_scale: float = 0.08  # multiplicative intensity factor in [1-s, 1+s]
    jitter_shift: float = 0.04  # additive shift in [-s, s] (network units; 0.04 = 30 HU)
    jitter_lesion_shift: float = 0.2  # extra shift in [-s, s] inside the infection channel only (lesion density)
    #: a 4th condition channel that tells the GAN the lesion density shift it trains on, so a sample's lesion
    #: density can be chosen per lesion at sampling time (docs/design.md "Lesion density"); needs use_body. False
    #: for model files written before the field existed.
    lesion_density_channel: bool = False

    # ---- sampling volumes: AR(1) noise along z, correlation per slice from coarse to fine
    volume_rho_coarse: float = 0.95
    volume_rho_fine: float = 0.3

    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes (e.g. the training case), kept in the file

    def __post_init__(self) -> None:
        checks = [
            (self.max_size >= 8, "max_size must be >= 8"),
            (1 <= self.min_size <= self.max_size, "min_size must be in [1, max_size]"),
            (0.0 < self.scale_factor < 1.0, "scale_factor must be in (0, 1)"),
            (self.base_channels >= 1 and self.max_channels >= self.base_channels, "bad channel widths"),
            (self.channel_double_every >= 1, "channel_double_every must be >= 1"),
            (self.gen_layers >= 2 and self.critic_layers >= 2, "networks need >= 2 conv layers"),
            (self.kernel_size % 2 == 1, "kernel_size must be odd"),
            (self.image_resize in ("area", "bilinear"), "image_resize must be 'area' or 'bilinear'"),
            (self.level_guard_ref in ("residual", "real"), "level_guard_ref must be 'residual' or 'real'"),
            (self.iters_per_scale >= 1, "iters_per_scale must be >= 1"),
            (self.iters_coarsest_factor > 0 and self.iters_finest_factor > 0, "iteration factors must be > 0"),
            (self.rec_alpha_fine == -1.0 or self.rec_alpha_fine > 0, "rec_alpha_fine must be > 0 or -1"),
            (self.noise_amp_min >= 0 and self.jitter_lesion_shift >= 0, "noise_amp_min, jitter_lesion_shift >= 0"),
            (self.use_body or not self.lesion_density_channel, "lesion_density_channel needs use_body"),
            (
                self.jitter_lesion_shift > 0 or not self.lesion_density_channel,
                "lesion_density_channel needs jitter_lesion_shift > 0 (the densities it learns)",
            ),
            (min(self.noise_body_weight, self.noise_air_weight) >= 0, "noise region weights must be >= 0"),
            (
                self.lesion_contrast_weight >= 0
                and self.lesion_contrast_fraction >= 0
                and self.lesion_contrast_finest_off >= 0,
                "lesion contrast: >= 0",
            ),
            (min(self.level_guard_weight, self.level_guard_tol, self.level_guard_min_area) >= 0, "level guard: >= 0"),
            (0.0 <= self.stage2_start <= 1.0, "stage2_start must be in [0, 1]"),
            (self.d_steps >= 1 and self.gp_every >= 1 and self.batch_size >= 1, "step counts must be >= 1"),
            (0.0 <= self.stage2_focus_floor <= 1.0, "stage2_focus_floor must be in [0, 1]"),
            (0.0 <= self.aug_prob <= 1.0 and 0.0 <= self.jitter_prob <= 1.0, "probabilities must be in [0, 1]"),
            (0.0 <= self.volume_rho_fine < 1.0 and 0.0 <= self.volume_rho_coarse < 1.0, "rho must be in [0, 1)"),
        ]
        bad = [msg for ok, msg in checks if not ok]
        if bad:
            raise ValueError("invalid CoSinGAN config: " + "; ".join(bad))

    @property
    def cond_channels(self) -> int:
        """Condition channels: lung, infection (+ body) (+ lesion density)."""
        return (3 if self.use_body else 2) + int(self.lesion_density_channel)

    def channels_at(self, scale: int) -> int:
        """Generator/critic width at a scale: base, doubling every `channel_double_every` scales, capped."""
        return min(self.base_channels * 2 ** (scale // self.channel_double_every), self.max_channels)

    @staticmethod
    def _fraction(scale: int, num_scales: int) -> float:
        return 0.0 if num_scales <= 1 else min(1.0, max(0.0, scale / (num_scales - 1)))

    def iters_at(self, scale: int, num_scales: int) -> int:
        """Iterations of a scale: iters_per_scale x a factor, iters_coarsest_factor to iters_finest_factor, linear."""
        t = self._fraction(scale, num_scales)
        factor = self.iters_coarsest_factor + (self.iters_finest_factor - self.iters_coarsest_factor) * t
        return max(1, round(self.iters_per_scale * factor))

    def rec_alpha_at(self, scale: int, num_scales: int) -> float:
        """Reconstruction weight of a scale: rec_alpha at the coarsest, rec_alpha_fine at the finest, geometric."""
        if self.rec_alpha_fine < 0 or self.rec_alpha <= 0:
            return self.rec_alpha
        t = self._fraction(scale, num_scales)
        return float(self.rec_alpha * (self.rec_alpha_fine / self.rec_alpha) ** t)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of primitives (what the model file stores)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_bundle(cls, bundle: str | Path, preset: str | None = None, **overrides: Any) -> CoSinGANConfig:
        """The config a cosingan_train bundle trains with: train.json's `config`, a preset's `config#...` values.

        References and expressions ("@seed", "$...") keep the dataclass defaults.
        """
        configs = Path(bundle) / "configs"
        base = json.loads((configs / "train.json").read_text())["config"]
        values = {k: v for k, v in base.items() if not k.startswith("_") and not str(v).startswith(("@", "$"))}
        if preset and preset != "full":
            for key, value in json.loads((configs / "presets" / f"{preset}.json").read_text()).items():
                if key.startswith("config#"):
                    values[key.split("#", 1)[1]] = value
        return cls.from_dict(values, **overrides)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None = None, **overrides: Any) -> CoSinGANConfig:
        """Build from a dict (+ keyword overrides), refusing unknown keys so typos in presets surface."""
        merged = {**(d or {}), **overrides}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ValueError(f"unknown CoSinGAN config keys: {unknown}")
        return cls(**merged)
