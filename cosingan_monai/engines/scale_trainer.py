"""One pyramid scale's adversarial training as a `monai.engines.Trainer` subclass (the MAISI bundle's pattern).

No stock MONAI GAN trainer fits (DESIGN.md): GanTrainer is unconditional and AdversarialTrainer shows the critic the
input. Each iteration: frozen coarser scales make the upsampled input under no_grad, one critic step (WGAN-GP) per
stage, then one generator step (adversarial + alpha x mixed reconstruction on the cached fixed-noise path).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from monai.engines import Trainer
from monai.engines.workflow import Workflow

from cosingan_monai.augment import HierarchicalAugment
from cosingan_monai.engines.amp import amp_policy
from cosingan_monai.losses import MixedReconstructionLoss, critic_loss, generator_adv_loss, gradient_penalty
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
    """Endless iterable of augmented (image, condition) batches of the training pair at one scale.

    Geometric + intensity augmentation runs through MONAI transforms into a bank of `bank_size` variants built on
    first use (0 = augment every step); each step then draws `batch_size` of them. The bank keeps MONAI's CPU-side
    resampling out of the inner loop, which otherwise costs more than the networks at small scales.
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
    ) -> None:
        self.image, self.cond, self.augment, self.scale = image, cond, augment, scale
        self.batch_size, self.bank_size = int(batch_size), int(bank_size)
        self.gen = torch.Generator().manual_seed(int(seed))
        self.bank: tuple[torch.Tensor, torch.Tensor] | None = None

    def _fresh(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.augment(self.image.expand(k, -1, -1, -1), self.cond.expand(k, -1, -1, -1), self.scale)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            if self.bank_size <= 0:
                img, cond = self._fresh(self.batch_size)
            else:
                if self.bank is None:
                    self.bank = self._fresh(self.bank_size)
                idx = torch.randint(0, self.bank_size, (self.batch_size,), generator=self.gen)
                img, cond = self.bank[0][idx.to(self.bank[0].device)], self.bank[1][idx.to(self.bank[1].device)]
            yield {"image": img, "condition": cond}


class ScaleTrainer(Trainer):
    """Trains scale `scale` of a CoSinGAN: stage 1 from the start, stage 2 joining after `stage2_start`."""

    def __init__(
        self,
        device: torch.device | str,
        model: CoSinGAN,
        scale: int,
        critics: tuple[PatchCritic, PatchCritic],
        optimizer_g: torch.optim.Optimizer,
        optimizer_d: torch.optim.Optimizer,
        data_loader: AugmentedPairs,
        iterations: int,
        handlers: Sequence[Any] | None = None,
        amp: bool = True,
        channels_last: bool = False,
    ) -> None:
        super().__init__(
            device=torch.device(device),
            max_epochs=1,
            data_loader=data_loader,
            epoch_length=int(iterations),
            amp=False,  # AMP is ours (bf16/fp16 by device, see run()); the base would make a deprecated fp16 scaler
            decollate=False,
        )
        self.model, self.scale = model, int(scale)
        self.critic1, self.critic2 = critics
        self.optimizer_g, self.optimizer_d = optimizer_g, optimizer_d
        self.amp_policy = amp_policy(device, amp)
        self.channels_last = bool(channels_last)
        c = model.config
        self.rec_loss = MixedReconstructionLoss(c.rec_ssim_weight, c.ssim_win)
        self.join_iteration = math.floor(c.stage2_start * iterations + 0.5) if c.stage2_start < 1.0 else None
        self._gp_count = 0
        imgs, conds = model.training_pyramids()
        self.real_rec = self._fmt(imgs[self.scale])
        self.cond_rec = self._fmt(conds[self.scale])
        self.rec_up = self._rec_input(conds)
        for h in handlers or ():
            h.attach(self)

    # ------------------------------------------------------------------------------------------- helpers

    def _fmt(self, x: torch.Tensor) -> torch.Tensor:
        """Move to the device, channels_last when asked (measured faster for convs on CPU)."""
        x = x.to(self.state.device, torch.float32)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.no_grad()
    def _rec_input(self, conds: list[torch.Tensor]) -> torch.Tensor:
        """Cached fixed-noise reconstruction input of this scale: upsampled output of the frozen coarser scales."""
        if self.scale == 0:
            return torch.zeros_like(self.real_rec)
        with self.amp_policy.autocast():
            prev = self.model.generate([c.to(self.state.device) for c in conds], upto=self.scale - 1, rec=True)
        return self._fmt(upsample(prev.float(), self.real_rec.shape[-2:]))

    @torch.no_grad()
    def join_stage2(self) -> float:
        """Switch stage 2 on; its noise amp = factor x RMSE(real, stage-1 reconstruction) at this moment."""
        m, n = self.model, self.scale
        z1 = m.noise_amps[n] * m.z_opt.expand_as(self.rec_up) if n == 0 else 0.0
        with self.amp_policy.autocast():
            r1 = m.generators[n].forward_stage1(self.rec_up, self.cond_rec, z1).float()
        rmse = torch.sqrt(torch.mean((r1 - self.real_rec) ** 2)).item()
        m.noise_amps2[n] = m.config.noise_amp_factor * rmse
        m.stage2_on[n] = True
        return m.noise_amps2[n]

    def _step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
        else:
            loss.backward()
            optimizer.step()

    def run(self) -> None:  # type: ignore[override]
        """Run the remaining iterations of this scale with this device's AMP policy."""
        self.scaler = self.amp_policy.scaler()
        Workflow.run(self)

    # ------------------------------------------------------------------------------------------- iteration

    def _iteration(self, engine: ScaleTrainer, batchdata: dict[str, torch.Tensor]) -> dict[str, float]:
        m, n, c = self.model, self.scale, self.model.config
        if self.join_iteration is not None and not m.stage2_on[n] and engine.state.iteration > self.join_iteration:
            self.join_stage2()
        stage2 = m.stage2_on[n]
        train1 = not stage2 or c.joint_stage1
        real, cond = self._fmt(batchdata["image"]), self._fmt(batchdata["condition"])
        g = m.generators[n]
        ac = self.amp_policy.autocast

        # frozen coarser scales on the augmented condition, fresh noise: the random-path input of this scale
        with torch.no_grad(), ac():
            if n == 0:
                up = torch.zeros_like(real)
            else:
                conds = [resize(cond, s, "area") for s in m.sizes[:n]]
                up = self._fmt(upsample(m.generate(conds, upto=n - 1).float(), real.shape[-2:]))
        z1 = m.noise_amps[n] * torch.randn_like(real)
        z2 = m.noise_amps2[n] * torch.randn_like(real) if stage2 else None

        with ac():
            with torch.set_grad_enabled(train1):
                x1 = g.forward_stage1(up, cond, z1)
            x2 = g.forward_stage2(x1, cond, z2) if stage2 else None
        w2 = 1.0 + c.critic2_mask_weight * cond[:, :1] if stage2 else None

        # ---- critic step: WGAN-GP per active stage (lazy penalty every gp_every steps, weighted by gp_every)
        critics = [d for d, on in ((self.critic1, train1), (self.critic2, stage2)) if on]
        for d in critics:
            d.requires_grad_(True)
        self._gp_count += 1
        do_gp = c.gp_weight > 0 and self._gp_count % c.gp_every == 0
        out: dict[str, torch.Tensor] = {}
        for _ in range(c.d_steps):
            loss_d = real.new_zeros(())
            for key, d, fake, w in (("1", self.critic1, x1, None), ("2", self.critic2, x2, w2)):
                if d not in critics:
                    continue
                with ac():
                    wl = critic_loss(d(real, cond), d(fake.detach(), cond), w)
                loss_d = loss_d + wl
                out[f"wdist{key}"] = -wl.detach()
                if do_gp:
                    gp = gradient_penalty(d, real, fake, cond, self.scaler, ac)
                    loss_d = loss_d + c.gp_weight * c.gp_every * gp
                    out[f"gp{key}"] = gp.detach()
            self._step(loss_d, self.optimizer_d)
        out["loss_d"] = loss_d.detach()

        # ---- generator step: adversarial + alpha x mixed reconstruction on the fixed-noise path
        for d in critics:
            d.requires_grad_(False)
        zr = m.noise_amps[n] * m.z_opt.expand_as(self.rec_up) if n == 0 else 0.0
        with ac():
            adv = real.new_zeros(())
            if train1:
                adv = adv + generator_adv_loss(self.critic1(x1, cond))
            if stage2:
                adv = adv + generator_adv_loss(self.critic2(x2, cond), w2)
            with torch.set_grad_enabled(train1):
                r = g.forward_stage1(self.rec_up, self.cond_rec, zr)
            rec = self.rec_loss(r, self.real_rec) if train1 else real.new_zeros(())
            if stage2:
                r = g.forward_stage2(r, self.cond_rec, torch.zeros_like(r))
                rec = rec + self.rec_loss(r, self.real_rec)
        loss_g = adv + c.rec_alpha * rec
        self._step(loss_g, self.optimizer_g)
        if self.scaler is not None:
            self.scaler.update()
        out.update(loss_g=loss_g.detach(), adv_g=adv.detach(), rec=rec.detach())
        keys = list(out)
        values = torch.stack([out[k].float() for k in keys]).tolist()  # one device sync per iteration
        result = dict(zip(keys, values, strict=True))
        result.update(noise_amp=float(m.noise_amps[n]), noise_amp2=float(m.noise_amps2[n]))
        result["stage"] = 2.0 if stage2 else 1.0
        return result
