"""The CoSinGAN object: the generator pyramid, its noise amplitudes and sizes, sampling, and one-file save/load."""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from cosingan_monai.core.amp import amp_policy
from cosingan_monai.core.files import atomic_write_path
from cosingan_monai.data.lungmask import body_from_lungs
from cosingan_monai.data.transforms import label_to_condition, pyramid_sizes, unit_to_hu, with_lesion_density
from cosingan_monai.networks.config import CoSinGANConfig
from cosingan_monai.networks.generator import ScaleGenerator

FORMAT = "cosingan-monai/model-v1"
#: config fields added after model files were first written, at the values that reproduce those files' behaviour
LEGACY_FIELDS: dict[str, Any] = {"noise_body_weight": 1.0, "noise_air_weight": 1.0, "lesion_contrast_weight": 0.0}


class CheckpointError(ValueError):
    """A model or checkpoint file is missing, truncated, corrupt or not ours; str() is "<path>: <problem>"."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def resize(x: torch.Tensor, size: Sequence[int], kind: str) -> torch.Tensor:
    """Resize (B, C, H, W): box average when shrinking (area fractions kept), antialiased bilinear when growing.

    Hand-rolled on F.interpolate (MONAI's Resize has no batch axis and this runs on device inside training).
    """
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    if kind == "area" and size[0] <= x.shape[-2] and size[1] <= x.shape[-1]:
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def upsample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Previous scale's output to the next scale's size (bilinear, as SinGAN)."""
    return F.interpolate(x, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False)


def first_line(exc: BaseException) -> str:
    """The first line of an exception message, for short user-facing errors."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def torch_load_checked(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """torch.load(weights_only=True) of a dict, turning every failure into a CheckpointError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, "no such file")
    if p.stat().st_size == 0:
        raise CheckpointError(p, "file is empty (an interrupted write?)")
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower():
            raise CheckpointError(p, f"corrupt or partial file, cannot be loaded ({first_line(exc)})") from None
        found = re.search(r"unsupported (?:GLOBAL|global:?)\s*([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            p,
            f"holds non-tensor objects{what}; refused unloaded: a model file may hold only tensors and plain values "
            "(torch.load weights_only=True), and unpickling anything else could run code",
        ) from None
    except Exception as exc:  # torch raises RuntimeError/UnpicklingError/EOFError/zip errors for damaged files
        raise CheckpointError(p, f"corrupt or partial file, cannot be loaded ({first_line(exc)})") from None
    if not isinstance(payload, dict):
        raise CheckpointError(p, f"expected a dict payload, found {type(payload).__name__}")
    return payload


class CoSinGAN(nn.Module):
    """A trained (or training) CoSinGAN pyramid for one training slice.

    Holds the per-scale two-stage generators, the per-scale noise amplitudes, the pyramid sizes, the fixed
    reconstruction noise, the training pair at the finest size, and the config. Critics live in the trainer.
    """

    def __init__(self, config: CoSinGANConfig, sizes: Sequence[Sequence[int]]) -> None:
        super().__init__()
        if not sizes:
            raise ValueError("CoSinGAN needs at least one pyramid size")
        self.config = config
        self.sizes: list[tuple[int, int]] = [(int(s[0]), int(s[1])) for s in sizes]
        self.generators = nn.ModuleList()
        self.noise_amps: list[float] = []  # stage 1, per trained scale
        self.noise_amps2: list[float] = []  # stage 2, per trained scale (0 while stage 2 has not joined)
        self.stage2_on: list[bool] = []
        gen = torch.Generator().manual_seed(config.seed)
        self.register_buffer("z_opt", torch.randn(1, 1, *self.sizes[0], generator=gen))
        self.register_buffer("train_image", torch.zeros(1, 1, *self.sizes[-1]))
        self.register_buffer("train_condition", torch.zeros(1, config.cond_channels, *self.sizes[-1]))

    # ------------------------------------------------------------------------------------------- building

    @classmethod
    def for_training_pair(
        cls, image_unit: np.ndarray | torch.Tensor, condition: np.ndarray | torch.Tensor, config: CoSinGANConfig
    ) -> CoSinGAN:
        """A fresh (untrained) model for one slice: image (x, y) in [-1, 1], condition (C, x, y)."""
        img = torch.as_tensor(np.asarray(image_unit), dtype=torch.float32)
        cond = torch.as_tensor(np.asarray(condition), dtype=torch.float32)
        if img.ndim != 2:
            raise ValueError(f"training image must be a 2D (x, y) slice, got shape {tuple(img.shape)}")
        if cond.ndim != 3 or tuple(cond.shape[1:]) != tuple(img.shape):
            raise ValueError(f"condition must be (C, x, y) matching the image {tuple(img.shape)}, got {cond.shape}")
        if cond.shape[0] < config.cond_channels:
            raise ValueError(f"config needs {config.cond_channels} condition channels, got {cond.shape[0]}")
        sizes = pyramid_sizes(tuple(img.shape), config.max_size, config.min_size, config.scale_factor)
        model = cls(config, sizes)
        kind = "area" if config.image_resize == "area" else "image"  # area keeps the fine texture a box average has
        model.train_image.copy_(resize(img[None, None], sizes[-1], kind).clamp(-1, 1))
        model.train_condition.copy_(resize(cond[None, : config.cond_channels], sizes[-1], "area"))
        return model

    @property
    def num_scales(self) -> int:
        """Number of scales the pyramid will have when fully trained."""
        return len(self.sizes)

    @property
    def num_trained(self) -> int:
        """Number of scales that have a generator so far."""
        return len(self.generators)

    @property
    def device(self) -> torch.device:
        return self.z_opt.device

    def new_scale(self) -> ScaleGenerator:
        """Append the next scale's generator (warm-started from the previous one when widths match)."""
        n = self.num_trained
        if n >= self.num_scales:
            raise RuntimeError(f"all {self.num_scales} scales already exist")
        c = self.config
        # the coarsest scale's noise lays out the whole slice and stays uniform; finer scales' noise is texture
        weights = (c.noise_body_weight, c.noise_air_weight) if n > 0 else None
        if weights == (1.0, 1.0):
            weights = None
        g = ScaleGenerator(
            c.cond_channels,
            c.channels_at(n),
            c.gen_layers,
            c.kernel_size,
            c.batch_norm,
            c.stage2_focus_floor,
            noise_weights=weights,
            has_body=c.use_body,
        ).to(self.device)
        if c.warm_start and n > 0 and c.channels_at(n - 1) == c.channels_at(n):
            g.load_state_dict(self.generators[n - 1].state_dict())
        self.generators.append(g)
        self.noise_amps.append(c.noise_amp_coarsest if n == 0 else 0.0)
        self.noise_amps2.append(0.0)
        self.stage2_on.append(False)
        return g

    # ------------------------------------------------------------------------------------------- pyramids

    def sizes_for(self, finest: Sequence[int] | None = None) -> list[tuple[int, int]]:
        """The trained pyramid sizes, or the same scales stretched so the finest is `finest` (x, y)."""
        if finest is None or tuple(int(v) for v in finest) == self.sizes[-1]:
            return list(self.sizes)
        fx, fy = (int(finest[0]) / self.sizes[-1][0], int(finest[1]) / self.sizes[-1][1])
        return [(max(1, round(h * fx)), max(1, round(w * fy))) for h, w in self.sizes]

    @staticmethod
    def pyramid(x: torch.Tensor, sizes: Sequence[Sequence[int]], kind: str) -> list[torch.Tensor]:
        """(B, C, H, W) resized to every size, coarsest first."""
        return [resize(x, s, kind) for s in sizes]

    def training_pyramids(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(images, conditions) of the training pair at every trained size, coarsest first."""
        images = self.pyramid(self.train_image, self.sizes, "area")
        return images, self.pyramid(self.train_condition, self.sizes, "area")

    # ------------------------------------------------------------------------------------------- generation

    def draw_noise(
        self, conds: Sequence[torch.Tensor], upto: int, generator: torch.Generator | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Standard-normal (stage-1, stage-2) noise for scales 0..upto, shaped like the conditions' batch."""
        out = []
        for n in range(upto + 1):
            b, _, h, w = conds[n].shape
            kw = {"generator": generator, "device": conds[n].device, "dtype": conds[n].dtype}
            out.append((torch.randn(b, 1, h, w, **kw), torch.randn(b, 1, h, w, **kw)))
        return out

    def generate(
        self,
        conds: Sequence[torch.Tensor],
        upto: int | None = None,
        noise: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
        rec: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Run scales 0..upto coarse to fine for per-scale conditions; rec=True is the fixed reconstruction path."""
        upto = self.num_trained - 1 if upto is None else upto
        if upto >= self.num_trained:
            raise ValueError(f"scale {upto} requested but only {self.num_trained} scales are trained")
        if upto < 0:
            raise ValueError("nothing to generate: no trained scale")
        if not rec and noise is None:
            noise = self.draw_noise(conds, upto, generator)
        x = torch.zeros_like(conds[0][:, :1])
        for n in range(upto + 1):
            x = self.scale_forward(n, x, conds[n], None if rec else noise[n], rec)
        return x

    def scale_forward(
        self,
        n: int,
        prev: torch.Tensor,
        cond: torch.Tensor,
        noise: tuple[torch.Tensor, torch.Tensor] | None,
        rec: bool = False,
    ) -> torch.Tensor:
        """One scale: upsample the previous output, run stage 1 (+ stage 2 once joined) with scaled noise."""
        up = torch.zeros_like(cond[:, :1]) if n == 0 else upsample(prev, cond.shape[-2:])
        if rec:
            z1: torch.Tensor | float = self.noise_amps[n] * self.z_opt.expand_as(up) if n == 0 else 0.0
            z2 = torch.zeros_like(up) if self.stage2_on[n] else None
        else:
            z1 = self.noise_amps[n] * noise[0]
            z2 = self.noise_amps2[n] * noise[1] if self.stage2_on[n] else None
        x1, x2 = self.generators[n](up, cond, z1, z2)
        return x1 if x2 is None else x2

    @torch.no_grad()
    def reconstruct(self, upto: int | None = None) -> torch.Tensor:
        """The fixed-noise reconstruction of the training slice (1, 1, H, W) at scale `upto` (default finest)."""
        _, conds = self.training_pyramids()
        return self.generate(conds, upto, rec=True)

    # ------------------------------------------------------------------------------------------- sampling

    def to_condition(
        self,
        condition_or_label: np.ndarray | torch.Tensor,
        body: np.ndarray | None = None,
        spacing: Sequence[float] | None = None,
        density: float | np.ndarray | None = None,
    ) -> torch.Tensor:
        """A 2D label map (x, y) or condition (C, x, y) -> this model's condition (C, x, y) float32 tensor.

        `density` (scalar or (x, y) map in [-1, 1], default 0 = the training slice's) fills the lesion density
        channel of a model that has one; a condition that already carries that channel keeps its own.
        """
        src = condition_or_label
        arr = np.asarray(src.detach().cpu() if torch.is_tensor(src) else src)
        want = self.config.cond_channels
        if arr.ndim == 2:
            lab = arr.astype(np.int64)
            if lab.min() < 0 or lab.max() > 3:
                raise ValueError(f"label map values must be 0-3 (COVID-19-CT-Seg), found {lab.min()}..{lab.max()}")
            if self.config.use_body and body is None:
                body = body_from_lungs(lab > 0, spacing=spacing)
            cond = label_to_condition(lab, body if self.config.use_body else None)
        elif arr.ndim == 3:
            cond = arr.astype(np.float32)
            if cond.shape[0] == 2 and want == 3:
                b = body if body is not None else body_from_lungs(cond[0] > 0.5, spacing=spacing)
                cond = np.concatenate([cond, np.maximum(np.asarray(b, np.float32), cond[0])[None]], 0)
        else:
            raise ValueError(f"expected a 2D label map (x, y) or a condition (C, x, y), got shape {arr.shape}")
        if self.config.lesion_density_channel and cond.shape[0] == want - 1:
            cond = with_lesion_density(cond, 0.0 if density is None else density)
        if cond.shape[0] < want:
            raise ValueError(f"condition has {cond.shape[0]} channels, this model needs {want}")
        return torch.as_tensor(cond[:want], dtype=torch.float32)

    def condition_pyramid(self, cond: torch.Tensor, finest: Sequence[int] | None = None) -> list[torch.Tensor]:
        """(B, C, x, y) conditions at any resolution -> per-scale conditions on this model's device."""
        sizes = self.sizes_for(finest)
        return self.pyramid(cond.to(self.device, torch.float32), sizes, "area")

    @torch.no_grad()
    def sample(
        self,
        condition_or_label: np.ndarray | torch.Tensor,
        n: int = 1,
        seed: int = 0,
        body: np.ndarray | None = None,
        spacing: Sequence[float] | None = None,
        size: Sequence[int] | None = None,
        density: float | np.ndarray | None = None,
    ) -> torch.Tensor:
        """n synthetic slices (n, 1, H, W) in [-1, 1] for one label map or condition; same seed, same images.

        Output is on the model's finest grid (or `size`, stretching the pyramid); `to_hu` converts to HU.
        `density`: the lesion density (see `to_condition`), for a model with the lesion density channel.
        """
        cond = self.to_condition(condition_or_label, body, spacing, density)[None].expand(n, -1, -1, -1)
        conds = self.condition_pyramid(cond, size)
        gen = torch.Generator(device=self.device).manual_seed(int(seed))
        with amp_policy(self.device).autocast():
            out = self.generate(conds, generator=gen)
        return out.float().clamp(-1.0, 1.0)

    @torch.no_grad()
    def sample_volume(
        self,
        label_volume: np.ndarray,
        seed: int = 0,
        body: np.ndarray | None = None,
        spacing: Sequence[float] | None = None,
        batch_size: int = 16,
        density: float | np.ndarray | None = None,
    ) -> np.ndarray:
        """A synthetic HU volume (H, W, z) for a label volume (x, y, z), slice by slice on the model's grid.

        Noise follows an AR(1) process along z per scale (correlation volume_rho_coarse at the coarsest scale down
        to volume_rho_fine at the finest), so neighbouring slices share layout and the volume is coherent.
        `density`: scalar or (x, y, z) map of lesion densities (see `to_condition`).
        """
        lab = np.asarray(label_volume)
        if lab.ndim != 3:
            raise ValueError(f"label volume must be (x, y, z), got shape {lab.shape}")
        if self.config.use_body and body is None:
            body = body_from_lungs(lab > 0, spacing=spacing)
        dens = None if density is None or np.ndim(density) == 0 else np.asarray(density)
        if dens is not None and dens.shape != lab.shape:
            raise ValueError(f"density map shape {dens.shape} does not match the label volume {lab.shape}")
        conds = torch.stack(
            [
                self.to_condition(
                    lab[..., k],
                    None if body is None else body[..., k],
                    density=density if dens is None else dens[..., k],
                )
                for k in range(lab.shape[2])
            ]
        )
        sizes = self.sizes_for(None)
        noise = self.volume_noise(lab.shape[2], sizes, seed)
        out = []
        with amp_policy(self.device).autocast():
            for start in range(0, lab.shape[2], batch_size):
                sl = slice(start, start + batch_size)
                cp = self.condition_pyramid(conds[sl])
                nz = [(z1[sl].to(self.device), z2[sl].to(self.device)) for z1, z2 in noise]
                out.append(self.generate(cp, noise=nz).float().clamp(-1.0, 1.0).cpu())
        vol = torch.cat(out)[:, 0]  # (z, H, W)
        return self.to_hu(vol).permute(1, 2, 0).numpy()

    def volume_noise(
        self, depth: int, sizes: Sequence[Sequence[int]], seed: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-scale unit-variance noise (depth, 1, h, w), AR(1)-correlated along z (coarse: smooth, fine: free)."""
        gen = torch.Generator().manual_seed(int(seed))
        c, last = self.config, max(1, len(sizes) - 1)
        out = []
        for n, (h, w) in enumerate(sizes):
            rho = c.volume_rho_coarse + (c.volume_rho_fine - c.volume_rho_coarse) * n / last
            pair = []
            for _ in range(2):
                eps = torch.randn(depth, 1, h, w, generator=gen)
                z = torch.empty_like(eps)
                z[0] = eps[0]
                for k in range(1, depth):
                    z[k] = rho * z[k - 1] + (1.0 - rho**2) ** 0.5 * eps[k]
                pair.append(z)
            out.append((pair[0], pair[1]))
        return out

    @staticmethod
    def to_hu(x: torch.Tensor) -> torch.Tensor:
        """Network units [-1, 1] -> HU (window [-1250, 250])."""
        return unit_to_hu(x.float().clamp(-1.0, 1.0))

    # ------------------------------------------------------------------------------------------- persistence

    def payload(self) -> dict[str, Any]:
        """Everything needed to rebuild this model, as weights_only-loadable primitives and tensors."""
        return {
            "format": FORMAT,
            "config": self.config.to_dict(),
            "sizes": [list(s) for s in self.sizes],
            "noise_amps": list(map(float, self.noise_amps)),
            "noise_amps2": list(map(float, self.noise_amps2)),
            "stage2_on": list(map(bool, self.stage2_on)),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any], source: str | os.PathLike[str] = "<memory>") -> CoSinGAN:
        """Rebuild a model from `payload()`; problems raise CheckpointError naming `source`."""
        if payload.get("format") != FORMAT:
            raise CheckpointError(source, f"not a CoSinGAN model (format {payload.get('format')!r}, want {FORMAT!r})")
        try:
            config = CoSinGANConfig.from_dict({**LEGACY_FIELDS, **payload["config"]})
            model = cls(config, payload["sizes"])
            for _ in range(len(payload["noise_amps"])):
                model.new_scale()
            model.noise_amps = [float(v) for v in payload["noise_amps"]]
            model.noise_amps2 = [float(v) for v in payload["noise_amps2"]]
            model.stage2_on = [bool(v) for v in payload["stage2_on"]]
            model.load_state_dict(payload["state_dict"], strict=True)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(source, f"inconsistent CoSinGAN model ({first_line(exc)})") from None
        return model

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model as ONE file atomically (temp file + os.replace)."""
        with atomic_write_path(path) as tmp:
            torch.save(self.payload(), tmp)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> CoSinGAN:
        """Load a model file written by `save` (or a training checkpoint holding one) with weights_only=True."""
        payload = torch_load_checked(path, "cpu")
        if "model" in payload and isinstance(payload["model"], dict):  # a training checkpoint
            payload = payload["model"]
        model = cls.from_payload(payload, path).to(device).eval()
        if model.config.channels_last:  # same memory format as in training, so the same conv kernels run
            model.to(memory_format=torch.channels_last)
        return model
