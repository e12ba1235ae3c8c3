"""Per-scale two-stage conditional generator: stage 1 builds structure, stage 2 refines lung and lesion texture."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution

LEAKY = ("leakyrelu", {"negative_slope": 0.2})


def conv_block(cin: int, cout: int, kernel_size: int, batch_norm: bool) -> nn.Module:
    """Conv -> [BatchNorm] -> LeakyReLU(0.2), 'same' padding (MONAI Convolution block)."""
    return Convolution(
        spatial_dims=2,
        in_channels=cin,
        out_channels=cout,
        kernel_size=kernel_size,
        act=LEAKY,
        norm="batch" if batch_norm else None,
        adn_ordering="NA",
        bias=not batch_norm,
    )


class ConvStack(nn.Module):
    """head block, (layers - 2) body blocks, and a plain conv tail to `out_channels`: one stage's network."""

    def __init__(
        self, in_channels: int, channels: int, out_channels: int, layers: int, kernel_size: int, batch_norm: bool
    ) -> None:
        super().__init__()
        blocks = [conv_block(in_channels, channels, kernel_size, batch_norm)]
        blocks += [conv_block(channels, channels, kernel_size, batch_norm) for _ in range(layers - 2)]
        self.body = nn.Sequential(*blocks)
        self.tail = nn.Conv2d(channels, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.body(x))


def lung_focus(condition: torch.Tensor, floor: float) -> torch.Tensor:
    """Stage-2 residual weight: 1 in the (3x3-dilated) lungs, `floor` elsewhere."""
    lung = F.max_pool2d(condition[:, :1], kernel_size=3, stride=1, padding=1)
    return floor + (1.0 - floor) * lung


def noise_weight(condition: torch.Tensor, body_weight: float, air_weight: float, has_body: bool) -> torch.Tensor:
    """Per-pixel noise weight from the condition: 1 in the (3x3-dilated) lungs, `body_weight` in the rest of the
    body, `air_weight` outside it (soft conditions interpolate). Without a body channel the body is everywhere.

    Why: one noise amplitude everywhere made the finer scales paint lung-strength noise into the body and the air
    (streaky air, body gradients 1.6x real on MedSeg-dev), while real CT is textured mostly inside the lungs
    (docs/design.md "Noise per region").
    """
    lung = F.max_pool2d(condition[:, :1], kernel_size=3, stride=1, padding=1)
    body = torch.maximum(condition[:, 2:3], lung) if has_body else torch.ones_like(lung)
    return air_weight + (body_weight - air_weight) * body + (1.0 - body_weight) * lung


class ScaleGenerator(nn.Module):
    """One pyramid scale: stage 1 (structure) and stage 2 (texture refinement), both residual, both conditioned.

    stage 1: x1 = up + tanh(S1([up + w(cond) * amp1 * z1, cond]))
    stage 2: x2 = x1 + focus(cond) * tanh(S2([x1, cond, w(cond) * amp2 * z2]))   (tail zero-initialised)
    Noise is passed in already scaled by its amplitude, so the networks hold no global state (a later "fleet" can
    batch them); w is `noise_weight` when `noise_weights` (body, air) is given, else 1.
    """

    def __init__(
        self,
        cond_channels: int,
        channels: int,
        layers: int = 5,
        kernel_size: int = 3,
        batch_norm: bool = False,
        focus_floor: float = 0.3,
        noise_weights: tuple[float, float] | None = None,
        has_body: bool = True,
    ) -> None:
        super().__init__()
        self.focus_floor = float(focus_floor)
        self.noise_weights = None if noise_weights is None else (float(noise_weights[0]), float(noise_weights[1]))
        self.has_body = bool(has_body)
        self.stage1 = ConvStack(1 + cond_channels, channels, 1, layers, kernel_size, batch_norm)
        self.stage2 = ConvStack(2 + cond_channels, channels, 1, layers, kernel_size, batch_norm)
        nn.init.zeros_(self.stage2.tail.weight)
        nn.init.zeros_(self.stage2.tail.bias)

    def weigh_noise(self, noise: torch.Tensor | float, cond: torch.Tensor) -> torch.Tensor | float:
        """Noise times the region weight of `noise_weight` (unchanged without `noise_weights` or for scalar 0)."""
        if self.noise_weights is None or not torch.is_tensor(noise):
            return noise
        return noise * noise_weight(cond, *self.noise_weights, self.has_body)

    def forward_stage1(self, up: torch.Tensor, cond: torch.Tensor, noise: torch.Tensor | float) -> torch.Tensor:
        """Structure stage on the upsampled previous output plus scaled noise."""
        return up + torch.tanh(self.stage1(torch.cat([up + self.weigh_noise(noise, cond), cond], 1)))

    def forward_stage2(self, x1: torch.Tensor, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Refinement stage: residual concentrated on lung/lesion texture."""
        res = torch.tanh(self.stage2(torch.cat([x1, cond, self.weigh_noise(noise, cond)], 1)))
        return x1 + lung_focus(cond, self.focus_floor) * res

    def forward(
        self,
        up: torch.Tensor,
        cond: torch.Tensor,
        noise1: torch.Tensor | float,
        noise2: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(stage-1 output, stage-2 output or None when stage 2 is off)."""
        x1 = self.forward_stage1(up, cond, noise1)
        x2 = None if noise2 is None else self.forward_stage2(x1, cond, noise2)
        return x1, x2
