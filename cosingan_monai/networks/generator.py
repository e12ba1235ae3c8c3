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


class ScaleGenerator(nn.Module):
    """One pyramid scale: stage 1 (structure) and stage 2 (texture refinement), both residual, both conditioned.

    stage 1: x1 = up + tanh(S1([up + amp1 * z1, cond]))
    stage 2: x2 = x1 + focus(cond) * tanh(S2([x1, cond, amp2 * z2]))   (tail zero-initialised: joins as identity)
    Noise is passed in already scaled, so the networks hold no global state (a later "fleet" can batch them).
    """

    def __init__(
        self,
        cond_channels: int,
        channels: int,
        layers: int = 5,
        kernel_size: int = 3,
        batch_norm: bool = False,
        focus_floor: float = 0.3,
    ) -> None:
        super().__init__()
        self.focus_floor = float(focus_floor)
        self.stage1 = ConvStack(1 + cond_channels, channels, 1, layers, kernel_size, batch_norm)
        self.stage2 = ConvStack(2 + cond_channels, channels, 1, layers, kernel_size, batch_norm)
        nn.init.zeros_(self.stage2.tail.weight)
        nn.init.zeros_(self.stage2.tail.bias)

    def forward_stage1(self, up: torch.Tensor, cond: torch.Tensor, noise: torch.Tensor | float) -> torch.Tensor:
        """Structure stage on the upsampled previous output plus scaled noise."""
        return up + torch.tanh(self.stage1(torch.cat([up + noise, cond], 1)))

    def forward_stage2(self, x1: torch.Tensor, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Refinement stage: residual concentrated on lung/lesion texture."""
        res = torch.tanh(self.stage2(torch.cat([x1, cond, noise], 1)))
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
