"""Mean HU of a trained CoSinGAN's outputs inside the training mask's regions, per scale: drift finder.

For every scale: the real training slice, the fixed-noise reconstruction and `--samples` random samples, each as the
mean HU of healthy lung (all lung labels), body outside the lungs and air outside the body. At the finest scale the
random path is also split by stage and noise (stage 1 / stage 2, with and without their noise), which is how the
stage-2 noise drift of docs/design.md "Region-level guard" was found. Writes JSON with `--out`.

Run:  .venv/bin/python benchmarks/gan_region_levels.py RUN/bundles/cosingan_train/models/model.pt [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cosingan_monai.core.files import atomic_write_path  # noqa: E402
from cosingan_monai.networks.pyramid import CoSinGAN, upsample  # noqa: E402

REGIONS = ("lung", "body", "air")


def region_masks(cond: torch.Tensor) -> dict[str, torch.Tensor]:
    """Boolean (H, W) masks of one condition (1, C, H, W): lung, body outside the lungs, outside the body."""
    lung = cond[0, 0] > 0.5
    body = cond[0, -1] > 0.5
    return {"lung": lung, "body": body & ~lung, "air": ~body}


def levels(model: CoSinGAN, x: torch.Tensor, masks: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean HU of a batch (B, 1, H, W) inside each region, pooled over the batch."""
    hu = model.to_hu(x.float())[:, 0]
    return {k: round(float(hu[:, m].mean()), 1) for k, m in masks.items()}


@torch.no_grad()
def measure(model: CoSinGAN, samples: int, seed: int) -> dict:
    """Per-scale levels of real / reconstruction / samples, plus the finest scale's stage-and-noise split."""
    imgs, conds = model.training_pyramids()
    batch = [c.expand(samples, -1, -1, -1) for c in conds]
    out: dict = {"scales": []}
    for n in range(model.num_trained):
        masks = region_masks(conds[n])
        gen = torch.Generator().manual_seed(seed)
        out["scales"].append(
            {
                "scale": n,
                "size": list(conds[n].shape[-2:]),
                "real": levels(model, imgs[n], masks),
                "reconstruction": levels(model, model.generate(conds, upto=n, rec=True), masks),
                "samples": levels(model, model.generate(batch, upto=n, generator=gen), masks),
            }
        )
    n = model.num_trained - 1
    masks, g = region_masks(conds[n]), model.generators[n]
    gen = torch.Generator().manual_seed(seed + 1)
    prev = upsample(model.generate(batch, upto=n - 1, generator=gen), batch[n].shape[-2:]) if n > 0 else None
    up = prev if prev is not None else torch.zeros_like(batch[n][:, :1])
    split = {}
    for name, use1, use2 in (("no noise", 0.0, 0.0), ("stage-1 noise", 1.0, 0.0), ("stage-2 noise", 0.0, 1.0)):
        z1 = use1 * model.noise_amps[n] * torch.randn(up.shape, generator=gen)
        z2 = use2 * model.noise_amps2[n] * torch.randn(up.shape, generator=gen)
        x1, x2 = g(up, batch[n], z1, z2 if model.stage2_on[n] else None)
        split[name] = {
            "stage1": levels(model, x1, masks),
            "stage2": levels(model, x2, masks) if x2 is not None else None,
        }
    out["finest_split"] = split
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a cosingan_train models/model.pt")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the numbers as JSON here")
    args = ap.parse_args()
    model = CoSinGAN.load(args.model)
    result = {
        "model": str(Path(args.model).resolve()),
        "samples": args.samples,
        **measure(model, args.samples, args.seed),
    }
    print("| scale | size | real lung / body / air | reconstruction | samples |\n|---|---|---|---|---|")
    for row in result["scales"]:
        cells = [" / ".join(f"{row[k][r]:.0f}" for r in REGIONS) for k in ("real", "reconstruction", "samples")]
        print(f"| {row['scale']} | {row['size'][0]}x{row['size'][1]} | " + " | ".join(cells) + " |")
    for name, v in result["finest_split"].items():
        s2 = v["stage2"]
        print(
            f"finest, {name}: stage 1 lung {v['stage1']['lung']:.0f}"
            + (f", stage 2 lung {s2['lung']:.0f}" if s2 else "")
        )
    if args.out:
        with atomic_write_path(args.out) as tmp:
            Path(tmp).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
