"""Ignite handlers for CoSinGAN training: TensorBoard image grids with mask outlines, and periodic checkpoints."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.transforms import LabelToContour

from cosingan_monai.data.io import ras_to_display

LUNG_RGB = (60, 220, 90)
LESION_RGB = (240, 60, 60)


def outline(mask: np.ndarray) -> np.ndarray:
    """One-pixel inner boundary of a 2D boolean mask (MONAI `LabelToContour`)."""
    return np.asarray(LabelToContour()(np.asarray(mask, np.float32)[None]))[0] > 0


def render_tile(unit: np.ndarray, cond: np.ndarray | None = None) -> np.ndarray:
    """A RAS (x, y) slice in [-1, 1] as an RGB display tile (radiological view), lung/lesion outlines drawn on it."""
    gray = ras_to_display(np.clip((np.asarray(unit, np.float32) + 1.0) * 127.5, 0, 255).astype(np.uint8))
    rgb = np.repeat(gray[..., None], 3, axis=2)
    if cond is not None:
        for ch, color in ((0, LUNG_RGB), (1, LESION_RGB)):
            edge = outline(ras_to_display(np.asarray(cond[ch]) > 0.5))
            rgb[edge] = color
    return rgb


def render_grid(tiles: Sequence[tuple[np.ndarray, np.ndarray | None]], gap: int = 2) -> np.ndarray:
    """Tiles side by side (padded to a common height) as one RGB uint8 image (H, W, 3)."""
    rendered = [render_tile(u, c) for u, c in tiles]
    h = max(t.shape[0] for t in rendered)
    cols = []
    for t in rendered:
        pad = np.zeros((h, t.shape[1], 3), np.uint8)
        pad[: t.shape[0]] = t
        cols += [pad, np.full((h, gap, 3), 255, np.uint8)]
    return np.concatenate(cols[:-1], axis=1)


def _np2d(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()


class ImageGridHandler:
    """Every `every` iterations and at the end of a scale: TensorBoard grid of real | reconstruction | samples.

    Samples use fresh noise on the training condition; all tiles carry the lung (green) and lesion (red) outlines.
    """

    def __init__(self, summary_writer, scale: int, every: int = 500, n_samples: int = 3, tag: str = "scale") -> None:
        self.writer, self.scale, self.every, self.n_samples, self.tag = summary_writer, scale, every, n_samples, tag

    def attach(self, engine: Engine) -> None:
        if self.every > 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self)
        engine.add_event_handler(Events.COMPLETED, self)

    @torch.no_grad()
    def grid(self, engine: Engine) -> np.ndarray:
        """The grid image for the engine's model at this scale."""
        model, n = engine.model, self.scale
        imgs, conds = model.training_pyramids()
        conds = [c.to(model.device) for c in conds[: n + 1]]
        with engine.amp_policy.autocast():
            rec = model.generate(conds, upto=n, rec=True).float()
            gen = torch.Generator(device=model.device).manual_seed(engine.state.iteration)
            batch = [c.expand(self.n_samples, -1, -1, -1) for c in conds]
            samples = model.generate(batch, upto=n, generator=gen).float()
        cond = _np2d(conds[n][0])
        tiles = [(_np2d(imgs[n][0, 0]), cond), (_np2d(rec[0, 0]), cond)]
        tiles += [(_np2d(s[0]), cond) for s in samples]
        return render_grid(tiles)

    def __call__(self, engine: Engine) -> None:
        if self.writer is None:
            return
        self.writer.add_image(
            f"{self.tag}{self.scale}/real_rec_samples", self.grid(engine), engine.state.iteration, dataformats="HWC"
        )
        self.writer.flush()


class PeriodicCheckpoint:
    """Call `save(engine)` every `every` iterations (the train loop writes one atomic checkpoint file)."""

    def __init__(self, save: Callable[[Engine], None], every: int) -> None:
        self.save, self.every = save, int(every)

    def attach(self, engine: Engine) -> None:
        if self.every > 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self.save)
