"""Conditional patch critics: stage 1 sees (image, condition); stage 2 also sees lung- and lesion-masked views."""

from __future__ import annotations

import torch
import torch.nn as nn

from cosingan_monai.networks.generator import ConvStack


def masked_views(image: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """The image inside the lungs and inside the lesions, window minimum (-1) elsewhere: (B, 2, H, W)."""
    return torch.cat([(image + 1.0) * cond[:, 0:1] - 1.0, (image + 1.0) * cond[:, 1:2] - 1.0], 1)


class PatchCritic(nn.Module):
    """Fully convolutional WGAN critic: one score per receptive-field patch, conditioned on the label channels."""

    def __init__(
        self,
        cond_channels: int,
        channels: int,
        layers: int = 5,
        kernel_size: int = 3,
        batch_norm: bool = False,
        with_masked_views: bool = False,
    ) -> None:
        super().__init__()
        self.with_masked_views = bool(with_masked_views)
        cin = 1 + cond_channels + (2 if with_masked_views else 0)
        self.net = ConvStack(cin, channels, 1, layers, kernel_size, batch_norm)

    def forward(self, image: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Patch scores (B, 1, H, W) for an image in [-1, 1] under its condition."""
        parts = [image, cond]
        if self.with_masked_views:
            parts.append(masked_views(image, cond))
        return self.net(torch.cat(parts, 1))
