"""A trained CoSinGAN pyramid as one `nn.Module` mapping (condition, noise) -> image: the `network_def` of the
cosingan_sample bundle, so MONAI's `verify_net_in_out` and `ckpt_export` (TorchScript) apply to it."""

from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from cosingan_monai.networks.generator import ScaleGenerator, lung_focus, noise_weight
from cosingan_monai.networks.pyramid import CoSinGAN


class ScaleStages(nn.Module):
    """One scale's two stages with tensor-only arguments (ScaleGenerator.forward takes `Tensor | float` noise,
    which TorchScript cannot compile). Shares the ScaleGenerator's stage networks and parameter names; the
    formulas are ScaleGenerator's, checked against `CoSinGAN.generate` in tests/test_gan_bundles.py."""

    def __init__(self, scale: ScaleGenerator) -> None:
        super().__init__()
        self.stage1 = scale.stage1
        self.stage2 = scale.stage2
        self.focus_floor = float(scale.focus_floor)
        self.weighted = scale.noise_weights is not None
        self.body_weight, self.air_weight = scale.noise_weights if scale.noise_weights is not None else (1.0, 1.0)
        self.has_body = bool(scale.has_body)

    def forward(self, up: torch.Tensor, cond: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, stage2: bool):
        """Stage 1 on the upsampled previous output plus scaled noise z1; then stage 2 with z2 when it is on."""
        if self.weighted:
            w = noise_weight(cond, self.body_weight, self.air_weight, self.has_body)
            z1, z2 = z1 * w, z2 * w
        x = up + torch.tanh(self.stage1(torch.cat([up + z1, cond], 1)))
        if stage2:
            x = x + lung_focus(cond, self.focus_floor) * torch.tanh(self.stage2(torch.cat([x, cond, z2], 1)))
        return x


class CoSinGANGenerator(nn.Module):
    """The generator pyramid of a trained CoSinGAN, coarse to fine, as a plain TorchScript-able forward.

    `forward(condition, noise)`: condition (B, C, H, W) in [0, 1] (channels lung, infection[, body]) at any size;
    noise (B, 2 * num_scales, H, W) standard normal, or None to draw it. Scale n takes channels (2n, 2n + 1) as its
    stage-1 and stage-2 noise, nearest-subsampled to its size (subsampled normal noise stays unit-variance and
    independent, so this is the same distribution as `CoSinGAN.sample`). Returns (B, 1, H, W) in [-1, 1]
    (window [-1250, 250] HU). The state_dict keys equal the model file's `state_dict`, so `ckpt_export
    --key_in_ckpt state_dict` loads cosingan_train's model.pt into it.
    """

    def __init__(self, model: CoSinGAN) -> None:
        super().__init__()
        if model.num_trained != model.num_scales:
            raise ValueError(f"the pyramid is not fully trained ({model.num_trained} of {model.num_scales} scales)")
        self.generators = nn.ModuleList([ScaleStages(g) for g in model.generators])
        # the model file's buffers, kept so the state_dict matches it key for key
        self.register_buffer("z_opt", model.z_opt.detach().clone())
        self.register_buffer("train_image", model.train_image.detach().clone())
        self.register_buffer("train_condition", model.train_condition.detach().clone())
        self.sizes = [[int(h), int(w)] for h, w in model.sizes]
        self.noise_amps = [float(a) for a in model.noise_amps]
        self.noise_amps2 = [float(a) if on else 0.0 for a, on in zip(model.noise_amps2, model.stage2_on, strict=True)]
        self.stage2_on = [bool(v) for v in model.stage2_on]
        self.cond_channels = int(model.config.cond_channels)
        self.has_density = bool(model.config.lesion_density_channel)
        self.num_scales = len(self.sizes)

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> CoSinGANGenerator:
        """The generator of a model file written by cosingan_train (`CoSinGAN.save`), in eval mode."""
        return cls(CoSinGAN.load(path, "cpu")).to(device).eval()

    def scale_sizes(self, height: int, width: int) -> list[list[int]]:
        """The trained pyramid's sizes stretched so the finest is (height, width), as `CoSinGAN.sizes_for`."""
        fh = float(height) / float(self.sizes[-1][0])
        fw = float(width) / float(self.sizes[-1][1])
        out: list[list[int]] = []
        for s in self.sizes:
            out.append([max(1, int(round(s[0] * fh))), max(1, int(round(s[1] * fw)))])
        return out

    def forward(self, condition: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:  # noqa: UP045
        """(B, C, H, W) condition [+ (B, 2 * num_scales, H, W) noise] -> (B, 1, H, W) synthetic slice in [-1, 1]."""
        cond = condition[:, : self.cond_channels].float()
        if self.has_density and cond.shape[1] == self.cond_channels - 1:
            # no density channel given: the training slice's own density (data.transforms.density_level at d = 0)
            cond = torch.cat([cond, 0.5 * cond[:, 1:2]], 1)
        b, h, w = cond.shape[0], cond.shape[2], cond.shape[3]
        if noise is None:
            noise = torch.randn(b, 2 * self.num_scales, h, w, device=cond.device, dtype=cond.dtype)
        sizes = self.scale_sizes(h, w)
        x = torch.zeros(b, 1, sizes[0][0], sizes[0][1], device=cond.device, dtype=cond.dtype)
        for n, gen in enumerate(self.generators):
            size = sizes[n]
            c = cond if size[0] == h and size[1] == w else F.interpolate(cond, size=size, mode="area")
            z = noise[:, 2 * n : 2 * n + 2]
            if z.shape[2] != size[0] or z.shape[3] != size[1]:
                z = F.interpolate(z, size=size, mode="nearest")
            if n == 0:
                up = torch.zeros_like(c[:, :1])
            else:
                up = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            x = gen(up, c, self.noise_amps[n] * z[:, :1], self.noise_amps2[n] * z[:, 1:2], self.stage2_on[n])
        return x.clamp(-1.0, 1.0)
