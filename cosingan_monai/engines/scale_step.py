"""One pyramid scale's CoSinGAN training step in plain PyTorch, plus its data: the engine and the benchmark share it.

Each step: the coarse input (frozen coarser scales, fresh noise) comes from the data bank; one critic step per
active stage (WGAN-GP, real and fake batched through the critic, lazy penalty), then one generator step
(adversarial + alpha x mixed L1/SSIM reconstruction on the cached fixed-noise path + the region-level guard on the
random path). Scales larger than crop_size train on random crops; the generator runs on the crop grown by its
receptive radius so crop edges are exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch

from cosingan_monai.core.amp import amp_policy
from cosingan_monai.engines.augment import HierarchicalAugment
from cosingan_monai.engines.losses import (
    MixedReconstructionLoss,
    critic_loss,
    generator_adv_loss,
    gradient_penalty,
    lesion_contrast_floor,
    region_level_guard,
)
from cosingan_monai.networks.critic import PatchCritic
from cosingan_monai.networks.pyramid import CoSinGAN, resize, upsample


def build_critics(model: CoSinGAN, scale: int) -> tuple[PatchCritic, PatchCritic]:
    """The scale's two conditional patch critics (stage 2's also sees the lung/lesion-masked views)."""
    c = model.config
    ch = c.channels_at(scale)
    d1 = PatchCritic(c.cond_channels, ch, c.critic_layers, c.kernel_size, c.batch_norm, with_masked_views=False)
    d2 = PatchCritic(c.cond_channels, ch, c.critic_layers, c.kernel_size, c.batch_norm, c.critic2_masked_views)
    return d1.to(model.device), d2.to(model.device)


class AugmentedPairs:
    """Endless iterable of training batches for one scale: augmented (image, condition), the coarse input "prev"
    and the un-jittered "reference" image.

    A bank of `bank_size` entries is built on first use: an augmented pair (MONAI transforms) and the upsampled
    output of the frozen coarser scales for it with fresh noise. Each step draws `batch_size` entries, and one entry
    is replaced every `refresh_every` steps, so 2000 steps see ~2000/refresh_every fresh pairs and coarse samples
    while MONAI's CPU resampling and the coarse forward passes stay out of most steps (they otherwise cost as much
    as the training step itself). bank_size 0 = everything fresh every step.
    """

    def __init__(
        self,
        image: torch.Tensor,
        cond: torch.Tensor,
        augment: HierarchicalAugment,
        scale: int,
        batch_size: int = 1,
        bank_size: int = 64,
        seed: int = 0,
        refresh_every: int = 4,
    ) -> None:
        self.image, self.cond, self.augment, self.scale = image, cond, augment, scale
        self.batch_size, self.bank_size, self.refresh_every = int(batch_size), int(bank_size), max(1, refresh_every)
        self.gen = torch.Generator().manual_seed(int(seed))
        self.prev_fn: Callable[[torch.Tensor], torch.Tensor] | None = None  # set by the ScaleTrainer
        self.bank: list[torch.Tensor] | None = None
        self._steps = 0

    def _fresh(self, k: int) -> list[torch.Tensor]:
        img, cond, ref = self.augment(
            self.image.expand(k, -1, -1, -1), self.cond.expand(k, -1, -1, -1), self.scale, with_reference=True
        )
        prev = self.prev_fn(cond) if self.prev_fn is not None else torch.zeros_like(img)
        return [img, cond, prev, ref]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            if self.bank_size <= 0:
                img, cond, prev, ref = self._fresh(self.batch_size)
            else:
                if self.bank is None:
                    self.bank = self._fresh(self.bank_size)
                elif self._steps % self.refresh_every == 0:
                    slot = int(torch.randint(0, self.bank_size, (1,), generator=self.gen))
                    for t, new in zip(self.bank, self._fresh(1), strict=True):
                        t[slot] = new[0]
                idx = torch.randint(0, self.bank_size, (self.batch_size,), generator=self.gen).to(self.bank[0].device)
                img, cond, prev, ref = (t[idx] for t in self.bank)
            self._steps += 1
            yield {"image": img, "condition": cond, "prev": prev, "reference": ref}


def crop_windows(
    shape: Sequence[int], crop: int, margin: int, generator: torch.Generator | None = None
) -> tuple[tuple[slice, slice], tuple[slice, slice], tuple[slice, slice]]:
    """Random crop of side `crop` (inner) and the same crop grown by `margin` (outer, clipped to the image).

    Returns (inner, outer, inner-within-outer) slice pairs. The generator runs on the outer window, so every inner
    pixel sees its full receptive field; losses and critics use the inner window only.
    """
    h, w = int(shape[0]), int(shape[1])
    ch, cw = min(crop, h), min(crop, w)
    i = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
    j = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
    oi, oj = max(0, i - margin), max(0, j - margin)
    oi1, oj1 = min(h, i + ch + margin), min(w, j + cw + margin)
    inner = (slice(i, i + ch), slice(j, j + cw))
    outer = (slice(oi, oi1), slice(oj, oj1))
    rel = (slice(i - oi, i - oi + ch), slice(j - oj, j - oj + cw))
    return inner, outer, rel


class ScaleStep:
    """Training state and step of scale `scale`: stage 1 from the start, stage 2 joining after `stage2_start`."""

    def __init__(
        self,
        model: CoSinGAN,
        scale: int,
        critics: tuple[PatchCritic, PatchCritic],
        optimizer_g: torch.optim.Optimizer,
        optimizer_d: torch.optim.Optimizer,
        iterations: int,
        device: torch.device | str = "cpu",
        amp: bool = True,
    ) -> None:
        self.model, self.scale = model, int(scale)
        self.critic1, self.critic2 = critics
        self.optimizer_g, self.optimizer_d = optimizer_g, optimizer_d
        self.device = torch.device(device)
        self.amp_policy = amp_policy(device, amp)
        self.scaler: torch.amp.GradScaler | None = None
        c = model.config
        self.channels_last = bool(c.channels_last)
        self.rec_loss = MixedReconstructionLoss(c.rec_ssim_weight, c.ssim_win)
        self.rec_alpha = c.rec_alpha_at(self.scale, model.num_scales)
        #: the lesion contrast floor's weight at this scale (0 at the finest `lesion_contrast_finest_off` scales)
        fine = self.scale >= model.num_scales - c.lesion_contrast_finest_off
        self.floor_weight = 0.0 if fine else c.lesion_contrast_weight
        self.join_iteration = math.floor(c.stage2_start * iterations + 0.5) if c.stage2_start < 1.0 else None
        self._gp_count = 0
        self._rec1: torch.Tensor | None = None
        imgs, conds = model.training_pyramids()
        self.real_rec = self._fmt(imgs[self.scale])
        self.cond_rec = self._fmt(conds[self.scale])
        self.rec_up = self._rec_input(conds)

    # ------------------------------------------------------------------------------------------- helpers

    def _fmt(self, x: torch.Tensor) -> torch.Tensor:
        """Move to the device, channels_last when asked (measured faster for convs on CPU)."""
        x = x.to(self.device, torch.float32)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.no_grad()
    def _rec_input(self, conds: list[torch.Tensor]) -> torch.Tensor:
        """Cached fixed-noise reconstruction input of this scale: upsampled output of the frozen coarser scales."""
        if self.scale == 0:
            return torch.zeros_like(self.real_rec)
        with self.amp_policy.autocast():
            prev = self.model.generate([c.to(self.device) for c in conds], upto=self.scale - 1, rec=True)
        return self._fmt(upsample(prev.float(), self.real_rec.shape[-2:]))

    @torch.no_grad()
    def join_stage2(self) -> float:
        """Switch stage 2 on; its noise amp = factor x RMSE(real, stage-1 reconstruction) at this moment."""
        m, n = self.model, self.scale
        z1 = m.noise_amps[n] * m.z_opt.expand_as(self.rec_up) if n == 0 else 0.0
        with self.amp_policy.autocast():
            r1 = m.generators[n].forward_stage1(self.rec_up, self.cond_rec, z1).float()
        rmse = torch.sqrt(torch.mean((r1 - self.real_rec) ** 2)).item()
        m.noise_amps2[n] = max(m.config.noise_amp_min, m.config.noise_amp_factor * rmse)
        m.stage2_on[n] = True
        return m.noise_amps2[n]

    @torch.no_grad()
    def _frozen_rec1(self) -> torch.Tensor:
        """Stage 1's full-size reconstruction, computed once after it froze (joint_stage1=False)."""
        if self._rec1 is None:
            m, n = self.model, self.scale
            z1 = m.noise_amps[n] * m.z_opt.expand_as(self.rec_up) if n == 0 else 0.0
            with self.amp_policy.autocast():
                self._rec1 = self._fmt(m.generators[n].forward_stage1(self.rec_up, self.cond_rec, z1).float())
        return self._rec1

    def _step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
        else:
            loss.backward()
            optimizer.step()

    # ------------------------------------------------------------------------------------------- iteration

    @torch.no_grad()
    def coarse_input(self, cond: torch.Tensor) -> torch.Tensor:
        """Random-path input of this scale for a batch of conditions: the frozen coarser scales, fresh noise."""
        m, n = self.model, self.scale
        if n == 0:
            return torch.zeros_like(cond[:, :1])
        with self.amp_policy.autocast():
            conds = [self._fmt(resize(cond, s, "area")) for s in m.sizes[:n]]
            prev = m.generate(conds, upto=n - 1).float()
        return self._fmt(upsample(prev, cond.shape[-2:]))

    def _windows(self, shape: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...], tuple[slice, ...]]:
        """(inner, outer, inner-in-outer) crop windows; whole-image windows when cropping is off or not needed."""
        c = self.model.config
        if c.crop_size <= 0 or max(shape) <= c.crop_size:
            full = (slice(None), slice(None))
            return full, full, full
        margin = (c.gen_layers * (c.kernel_size // 2)) if c.crop_margin < 0 else c.crop_margin
        return crop_windows(shape, c.crop_size, margin)

    def _level_guard(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor | None,
        up: torch.Tensor,
        ref: torch.Tensor,
        cond: torch.Tensor,
        rel: tuple[slice, slice],
    ) -> torch.Tensor:
        """Region-level guard of the random path (docs/design.md "Region-level guard").

        "residual": each active stage may not move a region's mean by more than the band from its own input (stage 1
        from the upsampled coarser output, stage 2 from stage 1); "real": the stages' outputs stay within the band
        of the un-jittered real slice's region means.
        """
        m, n, c = self.model, self.scale, self.model.config
        band = (c.level_guard_tol, c.jitter_lesion_shift, c.level_guard_min_area)
        stage2, train1 = m.stage2_on[n], not m.stage2_on[n] or c.joint_stage1
        guard = ref.new_zeros(())
        if c.level_guard_ref == "real":
            for fake, on in ((x1, train1), (x2, stage2)):
                if on:
                    guard = guard + region_level_guard(fake, ref, cond, *band)
            return guard
        if train1 and n > 0:  # the coarsest scale has no coarser input to keep
            guard = guard + region_level_guard(x1, up[..., rel[0], rel[1]], cond, *band)
        if stage2:
            guard = guard + region_level_guard(x2, x1.detach(), cond, *band)
        return guard

    def __call__(self, iteration: int, batchdata: dict[str, torch.Tensor]) -> dict[str, float]:
        """Run training iteration `iteration` (1-based) of this scale on one batch; returns the scalar losses."""
        m, n, c = self.model, self.scale, self.model.config
        if self.join_iteration is not None and not m.stage2_on[n] and iteration > self.join_iteration:
            self.join_stage2()
        stage2 = m.stage2_on[n]
        train1 = not stage2 or c.joint_stage1
        g, ac = m.generators[n], self.amp_policy.autocast
        full_real, full_cond = self._fmt(batchdata["image"]), self._fmt(batchdata["condition"])
        inner, outer, rel = self._windows(full_real.shape[-2:])
        real, cond = self._fmt(full_real[..., inner[0], inner[1]]), self._fmt(full_cond[..., inner[0], inner[1]])
        ref = self._fmt(batchdata.get("reference", batchdata["image"])[..., inner[0], inner[1]])
        g_cond = self._fmt(full_cond[..., outer[0], outer[1]])
        up = self._fmt(batchdata["prev"][..., outer[0], outer[1]])
        z1 = m.noise_amps[n] * torch.randn_like(up)
        z2 = m.noise_amps2[n] * torch.randn_like(up) if stage2 else None

        with ac():
            with torch.set_grad_enabled(train1):
                x1o = g.forward_stage1(up, g_cond, z1)
            x2o = g.forward_stage2(x1o, g_cond, z2) if stage2 else None
        x1 = x1o[..., rel[0], rel[1]]
        x2 = x2o[..., rel[0], rel[1]] if x2o is not None else None
        w2 = 1.0 + c.critic2_mask_weight * cond[:, :1] if stage2 else None

        # ---- critic step: WGAN-GP per active stage; real and fake go through the critic as one batch
        critics = [d for d, on in ((self.critic1, train1), (self.critic2, stage2)) if on]
        for d in critics:
            d.requires_grad_(True)
        self._gp_count += 1
        do_gp = c.gp_weight > 0 and self._gp_count % c.gp_every == 0  # lazy: every gp_every steps, weight x gp_every
        out: dict[str, torch.Tensor] = {}
        two_cond = torch.cat([cond, cond])
        for _ in range(c.d_steps):
            loss_d = real.new_zeros(())
            for key, d, fake, w in (("1", self.critic1, x1, None), ("2", self.critic2, x2, w2)):
                if d not in critics:
                    continue
                with ac():
                    d_real, d_fake = d(torch.cat([real, fake.detach()]), two_cond).chunk(2)
                    wl = critic_loss(d_real, d_fake, w)
                loss_d = loss_d + wl
                out[f"wdist{key}"] = -wl.detach()
                if do_gp:
                    gp = gradient_penalty(d, real, fake, cond, self.scaler, ac)
                    loss_d = loss_d + c.gp_weight * c.gp_every * gp
                    out[f"gp{key}"] = gp.detach()
            self._step(loss_d, self.optimizer_d)
        out["loss_d"] = loss_d.detach()

        # ---- generator step: adversarial + alpha x mixed reconstruction on the fixed-noise path (same window)
        for d in critics:
            d.requires_grad_(False)
        rec_up = self.rec_up[..., outer[0], outer[1]]
        rec_cond = self.cond_rec[..., outer[0], outer[1]]
        rec_real = self.real_rec[..., inner[0], inner[1]]
        zr = m.noise_amps[n] * m.z_opt[..., outer[0], outer[1]] if n == 0 else 0.0
        with ac():
            adv = real.new_zeros(())
            if train1:
                adv = adv + generator_adv_loss(self.critic1(x1, cond))
            if stage2:
                adv = adv + generator_adv_loss(self.critic2(x2, cond), w2)
            # a frozen stage 1's reconstruction is a constant of the rest of the scale: computed once
            r = g.forward_stage1(rec_up, rec_cond, zr) if train1 else self._frozen_rec1()[..., outer[0], outer[1]]
            rec = self.rec_loss(r[..., rel[0], rel[1]], rec_real) if train1 else real.new_zeros(())
            if stage2:
                r = g.forward_stage2(r, rec_cond, torch.zeros_like(r))
                rec = rec + self.rec_loss(r[..., rel[0], rel[1]], rec_real)
            guard = real.new_zeros(()) if c.level_guard_weight <= 0 else self._level_guard(x1, x2, up, ref, cond, rel)
            floor = real.new_zeros(())
            if self.floor_weight > 0:  # on the scale's output: stage 2 once joined, else stage 1
                floor = lesion_contrast_floor(x2 if stage2 else x1, ref, cond, c.lesion_contrast_fraction)
        loss_g = adv + self.rec_alpha * rec + c.level_guard_weight * guard + self.floor_weight * floor
        self._step(loss_g, self.optimizer_g)
        if self.scaler is not None:
            self.scaler.update()
        out.update(loss_g=loss_g.detach(), adv_g=adv.detach(), rec=rec.detach(), level_gap=guard.detach())
        if self.floor_weight > 0:
            out["contrast_gap"] = floor.detach()
        keys = list(out)
        values = torch.stack([out[k].float() for k in keys]).tolist()  # one device sync per iteration
        result = dict(zip(keys, values, strict=True))
        result.update(noise_amp=float(m.noise_amps[n]), noise_amp2=float(m.noise_amps2[n]))
        result["stage"] = 2.0 if stage2 else 1.0
        return result
