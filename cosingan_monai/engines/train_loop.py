"""Outer CoSinGAN training loop: one ScaleTrainer per pyramid scale, atomic checkpoints, resume (also mid-scale)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar
from monai.handlers import LrScheduleHandler, TensorBoardStatsHandler

from cosingan_monai.core.amp import amp_policy
from cosingan_monai.core.files import atomic_write_path
from cosingan_monai.data.transforms import hu_to_unit, with_lesion_density
from cosingan_monai.engines.augment import HierarchicalAugment
from cosingan_monai.engines.handlers import ImageGridHandler, PeriodicCheckpoint
from cosingan_monai.engines.realism_log import ScaleRealism, log_realism
from cosingan_monai.engines.scale_step import AugmentedPairs, ScaleStep, build_critics
from cosingan_monai.engines.scale_trainer import ScaleTrainer
from cosingan_monai.networks.config import CoSinGANConfig
from cosingan_monai.networks.pyramid import CheckpointError, CoSinGAN, torch_load_checked, upsample

CHECKPOINT_FORMAT = "cosingan-monai/checkpoint-v1"
#: the finest scale's last-iteration losses logged as hparams metrics (and read by the pipeline's summary line)
FINAL_LOSSES = ("rec", "loss_g", "loss_d")
logger = logging.getLogger("cosingan_monai.train")


def _as_2d(x: Any, what: str) -> np.ndarray:
    """(x, y), (1, x, y) or (x, y, 1) array/tensor -> float32 (x, y)."""
    arr = np.asarray(x.detach().cpu() if torch.is_tensor(x) else x, dtype=np.float32)
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a single 2D slice, got shape {np.shape(x)}")
    return arr


def pair_from_item(item: dict[str, Any], config: CoSinGANConfig) -> tuple[np.ndarray, np.ndarray]:
    """(image in [-1, 1] (x, y), condition (C, x, y)) from a dataset item with "image" (HU) and "condition"."""
    for key in ("image", "condition"):
        if key not in item:
            raise KeyError(f"training item lacks {key!r} (keys: {sorted(map(str, item))})")
    image = _as_2d(item["image"], "training image")
    cond = np.asarray(item["condition"].detach().cpu() if torch.is_tensor(item["condition"]) else item["condition"])
    cond = cond.astype(np.float32)
    if cond.ndim == 4 and cond.shape[-1] == 1:
        cond = cond[..., 0]
    if cond.ndim != 3 or cond.shape[1:] != image.shape:
        raise ValueError(f"condition must be (C, x, y) matching image {image.shape}, got {cond.shape}")
    if image.min() >= -1.01 and image.max() <= 1.01:
        raise ValueError("training image looks windowed to [-1, 1] already; pass HU (hu_to_unit runs inside)")
    if config.lesion_density_channel and cond.shape[0] == config.cond_channels - 1:
        cond = with_lesion_density(cond)  # the training slice's lesions are density 0 by definition
    return hu_to_unit(image), cond[: config.cond_channels]


class MultiScaleTrainer:
    """Train a CoSinGAN coarse to fine on one (image, condition) pair and write the model file.

    `max_epochs` is the number of epochs per scale, each `config.iters_per_scale` iterations (1 by default); it is
    exposed because MONAI's ConfigWorkflow requires a `train#trainer#max_epochs` id.
    `realism_reference` (real (HU, label) slices, or a datalist / images folder of them; default None = off) turns
    on realism numbers at the end of every scale (engines.realism_log), in train_stats.json and TensorBoard.
    """

    def __init__(
        self,
        dataset: Sequence[dict[str, Any]] | None = None,
        config: CoSinGANConfig | dict[str, Any] | None = None,
        output_dir: str | os.PathLike[str] = "runs/cosingan",
        model_path: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        max_epochs: int = 1,
        summary_writer: Any = None,
        amp: bool = True,
        resume: bool = True,
        checkpoint_every: int = 500,
        log_every: int = 10,
        image_every: int = 500,
        progress: bool = True,
        stop_after_scale: int | None = None,
        stop_at: tuple[int, int] | None = None,
        pair: tuple[np.ndarray, np.ndarray] | None = None,
        num_threads: int | None = None,
        realism_reference: Sequence[tuple[np.ndarray, np.ndarray]] | str | os.PathLike[str] | None = None,
        realism_masks: int = 8,
        realism_samples: int = 4,
    ) -> None:
        self.config = config if isinstance(config, CoSinGANConfig) else CoSinGANConfig.from_dict(config or {})
        if pair is None and dataset is None:
            raise ValueError("MultiScaleTrainer needs a dataset (first item: image HU + condition) or a pair")
        self.dataset, self.pair = dataset, pair
        self.output_dir = Path(output_dir)
        self.model_path = Path(model_path) if model_path is not None else self.output_dir / "model.pt"
        self.checkpoint_path = self.output_dir / "checkpoint.pt"
        self.device = torch.device(device)
        self.max_epochs = int(max_epochs)
        self.writer = summary_writer
        self.amp, self.resume = bool(amp), bool(resume)
        self.checkpoint_every, self.log_every, self.image_every = checkpoint_every, log_every, image_every
        self.progress = progress
        self.stop_after_scale, self.stop_at = stop_after_scale, stop_at
        self.num_threads = num_threads
        self.realism = None
        if realism_reference is not None:
            self.realism = ScaleRealism(realism_reference, realism_masks, realism_samples, self.config.seed)
        self.stats: list[dict[str, Any]] = []
        self.interrupted = False
        self.model: CoSinGAN | None = None

    # ------------------------------------------------------------------------------------------- checkpoints

    def save_checkpoint(self, trainer: ScaleTrainer | None, scale: int, iteration: int, scale_done: bool) -> None:
        """Write the resumable state atomically: model payload + this scale's critics, optimizers, schedulers."""
        # Not ignite Checkpoint/DiskSaver: with n_saved it deletes the previous file before writing the next (a kill
        # in between leaves no checkpoint), it lives in one engine while this file spans a fresh engine per scale and
        # the between-scales state, and its tmpXXXX temps escape core.files.remove_stale_temps (docs/design.md).
        assert self.model is not None
        state: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.payload(),
            "scale": int(scale),
            "iteration": int(iteration),
            "scale_done": bool(scale_done),
            "stats": [{k: v for k, v in s.items()} for s in self.stats],
        }
        if trainer is not None and not scale_done:
            state["scale_state"] = {
                "critic1": trainer.critic1.state_dict(),
                "critic2": trainer.critic2.state_dict(),
                "optimizer_g": trainer.optimizer_g.state_dict(),
                "optimizer_d": trainer.optimizer_d.state_dict(),
                "scheduler_g": self._sched_g.state_dict(),
                "scheduler_d": self._sched_d.state_dict(),
            }
        with atomic_write_path(self.checkpoint_path) as tmp:
            torch.save(state, tmp)

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint in output_dir if resuming and present; CheckpointError if it is damaged or foreign."""
        if not (self.resume and self.checkpoint_path.exists()):
            return None
        state = torch_load_checked(self.checkpoint_path)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(self.checkpoint_path, f"not a CoSinGAN training checkpoint ({state.get('format')!r})")
        for key in ("model", "scale", "iteration", "scale_done"):
            if key not in state:
                raise CheckpointError(self.checkpoint_path, f"partial checkpoint: missing {key!r}")
        return state

    # ------------------------------------------------------------------------------------------- setup

    def training_pair(self) -> tuple[np.ndarray, np.ndarray]:
        """The (image in [-1, 1], condition) pair: given directly or the dataset's first item."""
        if self.pair is not None:
            return self.pair
        if len(self.dataset) < 1:  # type: ignore[arg-type]
            raise ValueError("training dataset is empty")
        item = self.dataset[0]  # type: ignore[index]
        for key, name in (("case_path", "case"), ("label_path", "label"), ("slice_index", "slice")):
            if item.get(key) is not None:  # provenance, stored in the model file (not compared on resume)
                self.config.extra[name] = item[key] if isinstance(item[key], str) else int(item[key])
        return pair_from_item(item, self.config)

    def _initial_model(self, image: np.ndarray, cond: np.ndarray, state: dict[str, Any] | None) -> CoSinGAN:
        fresh = CoSinGAN.for_training_pair(image, cond, self.config)
        if state is None:
            return fresh.to(self.device)
        model = CoSinGAN.from_payload(state["model"], self.checkpoint_path).to(self.device)
        mine, theirs = fresh.config.to_dict(), model.config.to_dict()
        diff = sorted(k for k in mine if k not in ("extra",) and mine[k] != theirs.get(k))
        if diff or model.sizes != fresh.sizes:
            raise CheckpointError(
                self.checkpoint_path, f"was trained with a different config ({diff or 'sizes'}); use a new output dir"
            )
        if not torch.allclose(model.train_image.cpu(), fresh.train_image, atol=1e-4):
            raise CheckpointError(self.checkpoint_path, "was trained on a different slice; use a new output dir")
        return model

    def _handlers(self, scale: int) -> list[Any]:
        n = scale
        hs: list[Any] = [
            LrScheduleHandler(self._sched_g, print_lr=False, epoch_level=False),
            LrScheduleHandler(self._sched_d, print_lr=False, epoch_level=False),
            PeriodicCheckpoint(lambda e: self.save_checkpoint(e, n, e.state.iteration, False), self.checkpoint_every),
        ]
        if self.writer is not None:
            hs.append(
                TensorBoardStatsHandler(
                    summary_writer=self.writer,
                    iteration_log=max(1, self.log_every),
                    epoch_log=False,
                    output_transform=lambda out: {f"scale{n}/{k}": v for k, v in out.items()} | self._lrs(n),
                )
            )
            hs.append(ImageGridHandler(self.writer, n, every=self.image_every))
        return hs

    def _lrs(self, scale: int) -> dict[str, float]:
        """This scale's current learning rates as TensorBoard scalars (`scale<n>/lr_g`, `scale<n>/lr_d`)."""
        return {
            f"scale{scale}/lr_{k}": float(s.get_last_lr()[0]) for k, s in (("g", self._sched_g), ("d", self._sched_d))
        }

    def build_scale(self, scale: int, state: dict[str, Any] | None) -> ScaleTrainer:
        """The ScaleTrainer for `scale`, fresh or restored from a mid-scale checkpoint."""
        m, c = self.model, self.config
        assert m is not None
        if state is None:
            m.new_scale()
        g = m.generators[scale]
        d1, d2 = build_critics(m, scale)
        if c.channels_last:
            for net in (m, d1, d2):
                net.to(memory_format=torch.channels_last)
        iters = c.iters_at(scale, m.num_scales) * self.max_epochs
        opt_g = torch.optim.Adam(g.parameters(), lr=c.lr_g, betas=(c.beta1, c.beta2))
        opt_d = torch.optim.Adam([*d1.parameters(), *d2.parameters()], lr=c.lr_d, betas=(c.beta1, c.beta2))
        milestone = [max(1, round(c.lr_decay_at * iters))]
        self._sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, milestone, c.lr_gamma)
        self._sched_d = torch.optim.lr_scheduler.MultiStepLR(opt_d, milestone, c.lr_gamma)
        if state is not None:
            ss = state.get("scale_state")
            if ss is None:
                raise CheckpointError(self.checkpoint_path, "mid-scale checkpoint lacks the scale's training state")
            try:
                d1.load_state_dict(ss["critic1"])
                d2.load_state_dict(ss["critic2"])
                opt_g.load_state_dict(ss["optimizer_g"])
                opt_d.load_state_dict(ss["optimizer_d"])
                self._sched_g.load_state_dict(ss["scheduler_g"])
                self._sched_d.load_state_dict(ss["scheduler_d"])
            except (KeyError, RuntimeError, ValueError) as exc:
                raise CheckpointError(self.checkpoint_path, f"inconsistent scale state ({exc})") from None
        elif scale > 0:  # SinGAN's rule: noise amp = factor x RMSE(real, upsampled coarser reconstruction)
            m.noise_amps[scale] = max(c.noise_amp_min, c.noise_amp_factor * self._rec_rmse(scale))
        imgs, conds = m.training_pyramids()
        augment = HierarchicalAugment(c, m.sizes, seed=c.seed, device=self.device)
        data = AugmentedPairs(
            imgs[scale],
            conds[scale],
            augment,
            scale,
            c.batch_size,
            c.aug_bank_size,
            c.seed * 7919 + scale,
            c.bank_refresh_every,
        )
        step = ScaleStep(m, scale, (d1, d2), opt_g, opt_d, iters, self.device, self.amp)
        trainer = ScaleTrainer(step, data, iters, self._handlers(scale))
        if state is not None:
            trainer.state.iteration = int(state["iteration"])
            trainer.state.epoch = int(state["iteration"]) // iters
        if self.progress:
            ProgressBar(desc=f"scale {scale}/{m.num_scales - 1} {m.sizes[scale][0]}x{m.sizes[scale][1]}").attach(
                trainer, output_transform=lambda o: {"D": o["loss_d"], "G": o["loss_g"], "rec": o["rec"]}
            )
        if self.stop_at is not None and self.stop_at[0] == scale:

            @trainer.on(Events.ITERATION_COMPLETED(once=int(self.stop_at[1])))
            def _interrupt(engine: Engine) -> None:
                self.save_checkpoint(engine, scale, engine.state.iteration, False)
                self.interrupted = True
                engine.terminate()

        return trainer

    @torch.no_grad()
    def _rec_rmse(self, scale: int) -> float:
        """RMSE between the real slice at `scale` and the upsampled reconstruction of the coarser scales."""
        m = self.model
        assert m is not None
        imgs, conds = m.training_pyramids()
        with amp_policy(self.device, self.amp).autocast():
            prev = m.generate(conds, upto=scale - 1, rec=True).float()
        up = upsample(prev, imgs[scale].shape[-2:])
        return float(torch.sqrt(torch.mean((up - imgs[scale]) ** 2)).item())

    # ------------------------------------------------------------------------------------------- run

    def run(self) -> CoSinGAN:
        """Train every remaining scale, checkpointing after each; write the model file when all are done."""
        if self.num_threads:
            torch.set_num_threads(int(self.num_threads))
        torch.manual_seed(self.config.seed)
        image, cond = self.training_pair()
        state = self.load_checkpoint()
        self.model = self._initial_model(image, cond, state)
        m = self.model
        start, mid = 0, None
        if state is not None:
            self.stats = list(state.get("stats", []))
            start = int(state["scale"]) + (1 if state["scale_done"] else 0)
            mid = None if state["scale_done"] else state
            logger.info("resuming %s at scale %d iteration %s", self.checkpoint_path, start, state["iteration"])
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for n in range(start, m.num_scales):
            if self.stop_after_scale is not None and n > self.stop_after_scale:
                break
            trainer = self.build_scale(n, mid if n == start else None)
            it0, t0 = trainer.state.iteration, time.perf_counter()
            trainer.run()
            seconds = time.perf_counter() - t0
            done = trainer.state.iteration - it0
            self._record(n, done, seconds, trainer)
            if self.interrupted:
                return m
            self._scale_realism(n)
            self.save_checkpoint(None, n, trainer.state.iteration, True)
        self._write_stats()
        if m.num_trained == m.num_scales:
            m.save(self.model_path)
            self._log_hparams()
            logger.info("wrote %s (%d scales, sizes %s)", self.model_path, m.num_scales, m.sizes)
        return m.eval()

    def _record(self, n: int, done: int, seconds: float, trainer: ScaleTrainer) -> None:
        m = self.model
        assert m is not None
        entry = {
            "scale": n,
            "size": list(m.sizes[n]),
            "channels": m.config.channels_at(n),
            "iterations": int(done),
            "seconds": round(seconds, 3),
            "it_per_s": round(done / seconds, 3) if seconds > 0 else None,
            "noise_amp": m.noise_amps[n],
            "noise_amp2": m.noise_amps2[n],
            "last": trainer.state.output,
        }
        self.stats = [s for s in self.stats if s.get("scale") != n] + [entry]
        logger.info(
            "scale %d %s: %d it in %.1f s, noise amps %.4f / %.4f",
            n,
            m.sizes[n],
            done,
            seconds,
            m.noise_amps[n],
            m.noise_amps2[n],
        )

    def _scale_realism(self, n: int) -> None:
        """Realism numbers at the end of scale n (when a reference is set): into the stats and TensorBoard."""
        if self.realism is None or self.model is None:
            return
        t0 = time.perf_counter()
        numbers = self.realism(self.model)
        numbers["seconds"] = round(time.perf_counter() - t0, 3)
        self.stats[-1]["realism"] = numbers
        log_realism(self.writer, numbers, n)
        logger.info(
            "scale %d realism: summary %s, lung Laplacian ratio %s, diversity ratio %s",
            n,
            numbers.get("summary_score"),
            numbers.get("healthy_lung_laplacian_ratio"),
            numbers.get("diversity_ratio"),
        )

    def _log_hparams(self) -> None:
        """The config's scalar fields and the finest scale's final losses (and realism) as TensorBoard hparams."""
        if self.writer is None or not self.stats:
            return
        hparams = {k: v for k, v in self.config.to_dict().items() if isinstance(v, (bool, int, float, str))}
        last = self.stats[-1]
        finals = {f"hparam/final_{k}": float(v) for k, v in (last.get("last") or {}).items() if k in FINAL_LOSSES}
        score = (last.get("realism") or {}).get("summary_score")
        if score is not None and np.isfinite(score):
            finals["hparam/realism_summary_score"] = float(score)
        self.writer.add_hparams(hparams, finals, run_name=".")
        self.writer.flush()

    def _write_stats(self) -> None:
        with atomic_write_path(self.output_dir / "train_stats.json") as tmp:
            tmp.write_text(json.dumps({"scales": self.stats}, indent=1))


def train_cosingan(
    image_hu: np.ndarray,
    condition: np.ndarray,
    config: CoSinGANConfig,
    output_dir: str | os.PathLike[str],
    **kwargs: Any,
) -> CoSinGAN:
    """Train a CoSinGAN on one slice (HU (x, y) + condition (C, x, y)); kwargs go to MultiScaleTrainer."""
    item = {"image": image_hu, "condition": condition}
    return MultiScaleTrainer([item], config, output_dir, **kwargs).run()
