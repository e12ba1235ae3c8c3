"""CoSinGAN losses: WGAN critic/generator terms, the WGAN-GP gradient penalty (AMP-safe), mixed L1 + (1 - SSIM),
and the region-level guard of the random path."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn as nn
from monai.losses import SSIMLoss


def weighted_mean(scores: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean of patch scores, optionally weighted (normalised by the weights, so the scale stays comparable)."""
    scores = scores.float()
    if weight is None:
        return scores.mean()
    w = weight.float().expand_as(scores)
    return (scores * w).sum() / w.sum().clamp_min(1e-8)


def critic_loss(d_real: torch.Tensor, d_fake: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN critic loss E[D(fake)] - E[D(real)] (the negative Wasserstein estimate)."""
    return weighted_mean(d_fake, weight) - weighted_mean(d_real, weight)


def generator_adv_loss(d_fake: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN generator loss -E[D(fake)]."""
    return -weighted_mean(d_fake, weight)


def gradient_penalty(
    critic: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    cond: torch.Tensor,
    scaler: torch.amp.GradScaler | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> torch.Tensor:
    """WGAN-GP penalty E[(|grad_x D(x_hat)| - 1)^2] on random real/fake interpolates, the condition held fixed.

    As in SinGAN the norm is per pixel over channels of the summed patch scores (size-independent). With an fp16
    GradScaler the inner gradient is taken on the scaled output and unscaled before the norm (PyTorch AMP recipe),
    so the double backward neither underflows nor leaks the scale into the penalty.
    """
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = (alpha * real.detach() + (1.0 - alpha) * fake.detach()).requires_grad_(True)
    with autocast():
        out = critic(x_hat, cond).float().sum()
    if scaler is not None:
        (grad,) = torch.autograd.grad(scaler.scale(out), x_hat, create_graph=True)
        grad = grad / scaler.get_scale()
    else:
        (grad,) = torch.autograd.grad(out, x_hat, create_graph=True)
    return ((grad.float().norm(2, dim=1) - 1.0) ** 2).mean()


class MixedReconstructionLoss(nn.Module):
    """L1 + w * (1 - SSIM) between a reconstruction and the real slice, both in [-1, 1] (MONAI SSIMLoss)."""

    def __init__(self, ssim_weight: float = 1.0, win_size: int = 7) -> None:
        super().__init__()
        self.ssim_weight = float(ssim_weight)
        self.win_size = int(win_size)
        self.ssim = SSIMLoss(spatial_dims=2, data_range=2.0, win_size=self.win_size)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = pred.float(), target.float()
        loss = (pred - target).abs().mean()
        if self.ssim_weight > 0 and min(pred.shape[-2:]) >= self.win_size:  # SSIM needs a full window
            loss = loss + self.ssim_weight * self.ssim(pred, target)
        return loss


def condition_regions(cond: torch.Tensor) -> torch.Tensor:
    """(B, R, H, W) region weights from a condition: healthy lung, lesion, and, with a body channel, body and outside.

    Channels of the condition (data.transforms.label_to_condition): 0 lung (all lung labels), 1 infection, [2 body].
    Soft masks (area-resized conditions) stay soft, so a region's mean is a weighted mean.
    """
    lung, lesion = cond[:, 0:1], cond[:, 1:2]
    parts = [lung * (1.0 - lesion), lesion]
    if cond.shape[1] >= 3:
        body = cond[:, 2:3]
        parts += [body * (1.0 - lung), 1.0 - body]
    return torch.cat(parts, 1).clamp(0.0, 1.0)


def region_level_guard(
    fake: torch.Tensor,
    real: torch.Tensor,
    cond: torch.Tensor,
    tol: float,
    lesion_tol: float = 0.0,
    min_fraction: float = 0.02,
) -> torch.Tensor:
    """Hinge on each region's mean level: mean over (sample, region) of relu(|mean_fake - mean_real| - band).

    `fake` and `real` (the un-jittered augmented slice) share the condition, so the real slice says what level each
    region has. The band is `tol`, plus `lesion_tol` for the lesion (whose density the augmentation varies), so
    texture and lesion density stay free; only a drift of a whole region (a random-path stage that darkens every
    lung by 300 HU while its zero-noise reconstruction stays exact, measured on the demo model of seed 1,
    docs/design.md "Region-level guard") pays. Regions under `min_fraction` of the window are skipped. Written here
    because no MONAI loss compares masked region means.
    """
    w = condition_regions(cond.float())
    area = w.sum(dim=(-2, -1))
    valid = area >= min_fraction * w.shape[-2] * w.shape[-1]
    denom = area.clamp_min(1e-6)
    mean_fake = (fake.float() * w).sum(dim=(-2, -1)) / denom
    mean_real = (real.float() * w).sum(dim=(-2, -1)) / denom
    band = torch.full_like(mean_fake[:1], float(tol))
    band[:, 1] += float(lesion_tol)
    gap = torch.relu((mean_fake - mean_real).abs() - band)
    return (gap * valid).sum() / valid.sum().clamp_min(1)


def lesion_contrast_floor(
    fake: torch.Tensor, real: torch.Tensor, cond: torch.Tensor, fraction: float, min_px: float = 16.0
) -> torch.Tensor:
    """Mask consistency of the lesions: mean over samples of relu(fraction x contrast_real - contrast_fake), where
    contrast = mean lesion level - mean healthy-lung level under the shared condition.

    A one-sided floor: lesions may be as dense as the critic accepts, but not fade below `fraction` of the training
    slice's contrast (`real` = the un-jittered augmented slice). Why: the random path rendered 17% of the lesions of
    a MedSeg-dev synthetic set under 100 HU above the lung (real: 10%; painted control: none), and a segmenter
    trained on them learns lesions that are not there (docs/design.md "Lesion contrast floor"). Samples whose
    lesion or healthy lung covers under `min_px` (soft) pixels are skipped. Written here for the same reason as
    `region_level_guard`: no MONAI loss compares masked region means.
    """
    w = condition_regions(cond.float())[:, :2]  # healthy lung, lesion
    area = w.sum(dim=(-2, -1))
    valid = (area >= min_px).all(dim=1)
    means_fake = (fake.float() * w).sum(dim=(-2, -1)) / area.clamp_min(1e-6)
    means_real = (real.float() * w).sum(dim=(-2, -1)) / area.clamp_min(1e-6)
    contrast_fake = means_fake[:, 1] - means_fake[:, 0]
    contrast_real = means_real[:, 1] - means_real[:, 0]
    gap = torch.relu(float(fraction) * contrast_real.clamp_min(0.0) - contrast_fake)
    return (gap * valid).sum() / valid.sum().clamp_min(1)
