"""Hierarchical data augmentation for the single training pair (docs/design.md).

Joint geometric augmentation of image + condition (flip, zoom-out, small affine, elastic) is strongest at the
coarsest scale (global layout) and weakest at the finest (texture), plus a global intensity/contrast jitter on the
image alone so samples do not all copy the training slice's brightness and contrast. Built from stock MONAI random
transforms.

Geometric padding is air in the image and zero in every condition channel. A zoomed-in training slice (the body
fills the frame, common in PNG exports) then still teaches the GAN that "outside the body mask" means air;
without it, samples for a mask with a normal field of view filled the air around the body with tissue.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.transforms import (
    Compose,
    Rand2DElasticd,
    RandAdjustContrastd,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandZoomd,
)

from cosingan_monai.data.transforms import DENSITY_CHANNEL, density_level, hu_to_unit
from cosingan_monai.networks.config import CoSinGANConfig

IMAGE, COND = "image", "condition"


def scale_strength(config: CoSinGANConfig, scale: int, num_scales: int) -> float:
    """Augmentation strength at a scale: 1 at the coarsest, config.aug_fine_strength at the finest, linear between."""
    if num_scales <= 1:
        return 1.0
    t = scale / (num_scales - 1)
    return 1.0 + (config.aug_fine_strength - 1.0) * t


def build_scale_transforms(
    config: CoSinGANConfig, scale: int, num_scales: int, size: tuple[int, int], device: torch.device | None = None
) -> Compose:
    """MONAI Compose of one scale's joint geometric augmentation of (1, H, W) image and (C, H, W) condition.

    Ranges shrink with `scale_strength`, except the zoom-out: every scale's generator must learn to leave air where
    the body channel is off. Padding is zero for both keys, so the image must come in with air at 0
    (HierarchicalAugment shifts it) and conditions are padded with "no lung, no lesion, no body".
    """
    s = scale_strength(config, scale, num_scales)
    side = float(min(size))
    elastic_spacing = max(4.0, config.aug_elastic_spacing * side)
    keys = [IMAGE, COND]
    return Compose(
        [
            RandFlipd(keys, prob=config.aug_flip_prob, spatial_axis=0),
            RandZoomd(
                keys,
                prob=config.aug_zoom_prob,
                min_zoom=1.0 - config.aug_zoom_out,
                max_zoom=1.0,
                mode=("area", "area"),
                padding_mode=("constant", "constant"),
                keep_size=True,
            ),
            Rand2DElasticd(
                keys,
                spacing=(elastic_spacing, elastic_spacing),
                magnitude_range=(0.0, config.aug_elastic_magnitude * s),
                prob=config.aug_prob,
                rotate_range=math.radians(config.aug_rotate_deg) * s,
                translate_range=(config.aug_translate * s * size[0], config.aug_translate * s * size[1]),
                scale_range=(config.aug_scale * s, config.aug_scale * s),
                mode=("bilinear", "bilinear"),
                padding_mode=("zeros", "zeros"),
                device=device,
            ),
        ],
        lazy=False,
    )


def build_intensity_jitter(config: CoSinGANConfig) -> Compose:
    """MONAI Compose of the global gamma/contrast, scale and shift jitter of the image (same at every scale)."""
    g = 1.0 + config.jitter_gamma
    return Compose(
        [
            RandAdjustContrastd(IMAGE, prob=config.jitter_prob, gamma=(1.0 / g, g)),
            RandScaleIntensityd(IMAGE, factors=config.jitter_scale, prob=config.jitter_prob),
            RandShiftIntensityd(IMAGE, offsets=config.jitter_shift, prob=config.jitter_prob),
        ]
    )


def air_value(image: torch.Tensor, cond: torch.Tensor, config: CoSinGANConfig) -> float:
    """The image's air level in network units: its median outside the body channel, else config.air_hu.

    Scanner padding or black PNG borders outside the body are what the GAN should paint there; a slice whose body
    fills the frame (or a model without a body channel) falls back to air at config.air_hu.
    """
    if cond.shape[0] > 2:
        outside = cond[2] < 0.5
        if outside.float().mean() >= 0.02:
            return float(image[0][outside].median())
    return float(hu_to_unit(torch.tensor(config.air_hu)))


class HierarchicalAugment:
    """Per-scale augmentation of the training pair; call with batched (B, 1, H, W) and (B, C, H, W) tensors."""

    def __init__(
        self, config: CoSinGANConfig, sizes: list[tuple[int, int]], seed: int = 0, device: torch.device | None = None
    ) -> None:
        self.config = config
        self.sizes = list(sizes)
        self.device = device
        self.seed = int(seed)
        self._cache: dict[int, Compose] = {}
        self.jitter = build_intensity_jitter(config)
        self.jitter.set_random_state(seed=(self.seed * 7919 + 17) % (2**32))
        self.lesion_rng = np.random.RandomState((self.seed * 104729 + 29) % (2**32))

    def transforms(self, scale: int) -> Compose:
        """The (cached, seeded) geometric transform chain of one scale."""
        if scale not in self._cache:
            t = build_scale_transforms(self.config, scale, len(self.sizes), self.sizes[scale], self.device)
            t.set_random_state(seed=(self.seed * 1009 + scale) % (2**32))
            self._cache[scale] = t
        return self._cache[scale]

    def __call__(
        self, image: torch.Tensor, cond: torch.Tensor, scale: int, with_reference: bool = False
    ) -> tuple[torch.Tensor, ...]:
        """An augmented copy of each batch item (inputs are not modified): (image, condition[, reference]).

        The reference is the same geometric copy before the intensity and lesion-density jitter: the levels the
        region guard holds the random path to (docs/design.md "Region-level guard").
        """
        t = self.transforms(scale)
        imgs, conds, refs = [], [], []
        for b in range(image.shape[0]):
            air = air_value(image[b], cond[b], self.config)
            moved = t({IMAGE: image[b] - air, COND: cond[b].clone()})  # air at 0, so zero padding is air
            shifted = torch.as_tensor(moved[IMAGE]).as_subclass(torch.Tensor) + air
            jittered = torch.as_tensor(self.jitter({IMAGE: shifted})[IMAGE]).as_subclass(torch.Tensor)
            moved_cond = torch.as_tensor(moved[COND]).as_subclass(torch.Tensor)
            shift = self.lesion_shift()
            imgs.append(jittered + shift * moved_cond[1:2].to(jittered))
            if self.config.lesion_density_channel:  # tell the GAN the density it is shown (docs/design.md)
                moved_cond = moved_cond.clone()
                d = shift / self.config.jitter_lesion_shift
                moved_cond[DENSITY_CHANNEL : DENSITY_CHANNEL + 1] = density_level(moved_cond[1:2], d)
            conds.append(moved_cond)
            refs.append(shifted)
        img = torch.stack(imgs).to(image.device, image.dtype).clamp(-1.0, 1.0)
        cnd = torch.stack(conds).to(cond.device, cond.dtype).clamp(0.0, 1.0)
        if not with_reference:
            return img, cnd
        return img, cnd, torch.stack(refs).to(image.device, image.dtype).clamp(-1.0, 1.0)

    def lesion_shift(self) -> float:
        """A random lesion-density shift in [-s, s] (s = jitter_lesion_shift) with probability jitter_prob, else 0.

        One training slice shows one lesion density; real lesions range from faint ground glass to consolidation.
        Shifting the image inside the (soft) infection channel teaches the GAN a range of densities for one mask.
        """
        s = self.config.jitter_lesion_shift
        if s <= 0 or self.lesion_rng.rand() >= self.config.jitter_prob:
            return 0.0
        return float(self.lesion_rng.uniform(-s, s))


def displacement_rms(aug: HierarchicalAugment, scale: int, trials: int = 8) -> float:
    """RMS pixel displacement the geometric part produces at a scale (for tests and tuning the strengths)."""
    h, w = aug.sizes[scale]
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    coords = torch.as_tensor(np.stack([yy, xx]))[None]  # 2 channels of coordinates as a "condition"
    sq = []
    for _ in range(trials):
        img = torch.zeros(1, 1, h, w)
        out = aug.transforms(scale)({IMAGE: img[0], COND: coords[0].clone()})
        moved = torch.as_tensor(out[COND]).as_subclass(torch.Tensor)
        inner = (slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4))  # away from the zero padding
        sq.append(((moved - coords[0])[:, inner[0], inner[1]] ** 2).sum(0).mean().item())
    return float(np.sqrt(np.mean(sq)))
