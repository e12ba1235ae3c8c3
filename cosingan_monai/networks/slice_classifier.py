"""The slice classifier: a 2D U-Net that maps infection per pixel, read out as "infection present" logits.

Why not a plain image-level CNN: trained from scratch on the demo's ~100 synthetic slices, DenseNet121 and a
ResNet-10 reached held-out AUC 0.44-0.59 (docs/results.md "Slice classifier"). The synthetic data come with their
masks, so this network learns from every pixel (training mode returns the per-pixel map, trained with Dice + CE
against the infection mask) and classifies by pooling the map (evaluation mode returns slice logits), the usual
segmentation-guided classification of few-data lesion detection (docs/design.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.nets import UNet


class MaskSupervisedClassifier(nn.Module):
    """Image (B, 1, H, W) -> slice logits (B, 2) in eval mode; -> infection map logits (B, 2, H, W) in train mode.

    The slice logit is the mean lesion logit of the `top_fraction` most lesion-like pixels (at least one pixel),
    so a slice is called infected when its strongest lesion evidence has probability above 0.5; logits are
    (0, score), so softmax gives sigmoid(score) for "infected". One Tensor in either mode keeps it TorchScript-able.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        strides: Sequence[int] = (2, 2, 2, 2),
        num_res_units: int = 2,
        norm: str = "batch",
        top_fraction: float = 0.002,
    ) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"MaskSupervisedClassifier classifies 2D slices; got spatial_dims={spatial_dims}")
        if not 0.0 < top_fraction <= 1.0:
            raise ValueError(f"top_fraction must be in (0, 1]; got {top_fraction}")
        self.unet = UNet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=2,
            channels=channels,
            strides=strides,
            num_res_units=num_res_units,
            norm=norm,
        )
        self.top_fraction = float(top_fraction)

    def slice_logits(self, pixel_logits: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) background/infection logits -> (B, 2) slice logits (0, mean of the top lesion logits)."""
        lesion = (pixel_logits[:, 1] - pixel_logits[:, 0]).flatten(1)
        k = max(1, int(self.top_fraction * lesion.shape[1]))
        score = torch.topk(lesion, k, dim=1).values.mean(dim=1)
        return torch.stack([torch.zeros_like(score), score], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel infection logits while training (the mask loss), slice logits otherwise (metrics, inference)."""
        pixel_logits = self.unet(x)
        if self.training:
            return pixel_logits
        return self.slice_logits(pixel_logits)
