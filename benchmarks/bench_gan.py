"""Benchmark CoSinGAN on this machine's CPU: demo-preset training, engine overhead, sampling speed, peak RSS.

Writes benchmarks/results/bench_gan.json (and the README's sample grid PNG):
- training through the engine (MultiScaleTrainer: Ignite/MONAI, progress off, TensorBoard + checkpoints on, as the
  bundle runs), iterations/s per scale and total time;
- the same training in a plain PyTorch loop (same ScaleStep networks/losses/data, no Ignite/MONAI engine, no
  handlers), and the engine overhead ratio;
- the 128 px x 2000 iterations/scale speed target: measured with --target, else extrapolated from the measured
  per-scale iteration times (stated in the JSON);
- sampling images/s at 128 and 256 px, volume slices/s, peak RSS, and sample-quality numbers on an unseen mask.

Run: .venv/bin/python benchmarks/bench_gan.py [--threads N] [--target] [--iters N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cosingan_monai.data.io import atomic_write_path  # noqa: E402
from cosingan_monai.data.lungmask import body_mask  # noqa: E402
from cosingan_monai.data.transforms import hu_to_unit, label_to_condition, select_slices  # noqa: E402
from cosingan_monai.engines.handlers import render_grid  # noqa: E402
from cosingan_monai.engines.scale_step import AugmentedPairs, ScaleStep, build_critics  # noqa: E402
from cosingan_monai.engines.train_loop import MultiScaleTrainer  # noqa: E402
from cosingan_monai.networks import CoSinGAN, CoSinGANConfig  # noqa: E402
from cosingan_monai.networks.pyramid import resize, upsample  # noqa: E402
from cosingan_monai.phantom.generator import make_phantom_case  # noqa: E402

TRAIN_BUNDLE = REPO / "bundles" / "cosingan_train"
TARGET_ITERS, TARGET_SECONDS = 2000, 14 * 60


def phantom_slice(seed: int, size: int = 256) -> dict:
    """The auto-selected training slice of phantom case `seed`: HU image, label, body, spacing."""
    case = make_phantom_case(seed, size=size, slices=32)
    z = select_slices(case.label, 1)[0]
    img, lab = case.image[..., z], case.label[..., z]
    return {
        "hu": img,
        "label": lab,
        "body": body_mask(img),
        "spacing": tuple(np.abs(np.diag(case.affine)[:2])),
        "slice": int(z),
    }


def train_engine(pair: tuple[np.ndarray, np.ndarray], cfg: CoSinGANConfig, out: Path) -> tuple[CoSinGAN, dict]:
    """Train through the engine as the bundle does (TensorBoard writer, checkpoints); per-scale timings."""
    from torch.utils.tensorboard import SummaryWriter

    preset = json.loads((TRAIN_BUNDLE / "configs" / "presets" / "demo.json").read_text())
    writer = SummaryWriter(str(out / "tensorboard"))
    t0 = time.perf_counter()
    trainer = MultiScaleTrainer(
        pair=pair, config=cfg, output_dir=out, summary_writer=writer, resume=False, progress=False,
        checkpoint_every=preset["checkpoint_every"], image_every=preset["image_every"],
    )  # fmt: skip
    model = trainer.run()
    total = time.perf_counter() - t0
    writer.close()
    keys = ("scale", "size", "channels", "iterations", "seconds", "it_per_s")
    scales = [{k: s[k] for k in keys} for s in trainer.stats]
    return model, {"total_s": round(total, 2), "scales": scales}


@torch.no_grad()
def _noise_amp(model: CoSinGAN, n: int) -> float:
    imgs, conds = model.training_pyramids()
    prev = model.generate(conds, upto=n - 1, rec=True)
    up = upsample(prev, imgs[n].shape[-2:])
    return model.config.noise_amp_factor * float(torch.sqrt(torch.mean((up - imgs[n]) ** 2)))


def train_plain(pair: tuple[np.ndarray, np.ndarray], cfg: CoSinGANConfig) -> dict:
    """The same training as a plain PyTorch loop: same ScaleStep, data and schedules, no Ignite/MONAI engine."""
    from cosingan_monai.engines.augment import HierarchicalAugment

    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    m = CoSinGAN.for_training_pair(pair[0], pair[1], cfg)
    scales = []
    for n in range(m.num_scales):
        ts = time.perf_counter()
        m.new_scale()
        if n > 0:
            m.noise_amps[n] = _noise_amp(m, n)
        d1, d2 = build_critics(m, n)
        if cfg.channels_last:
            for net in (m, d1, d2):
                net.to(memory_format=torch.channels_last)
        g = m.generators[n]
        opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
        opt_d = torch.optim.Adam([*d1.parameters(), *d2.parameters()], lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
        milestone = [max(1, round(cfg.lr_decay_at * cfg.iters_per_scale))]
        scheds = [torch.optim.lr_scheduler.MultiStepLR(o, milestone, cfg.lr_gamma) for o in (opt_g, opt_d)]
        imgs, conds = m.training_pyramids()
        data = AugmentedPairs(
            imgs[n],
            conds[n],
            HierarchicalAugment(cfg, m.sizes, seed=cfg.seed),
            n,
            cfg.batch_size,
            cfg.aug_bank_size,
            cfg.seed * 7919 + n,
            cfg.bank_refresh_every,
        )
        step = ScaleStep(m, n, (d1, d2), opt_g, opt_d, cfg.iters_per_scale, "cpu", amp=False)
        data.prev_fn = step.coarse_input
        stream = iter(data)
        for i in range(1, cfg.iters_per_scale + 1):
            step(i, next(stream))
            for s in scheds:
                s.step()
        sec = time.perf_counter() - ts
        scales.append(
            {
                "scale": n,
                "size": list(m.sizes[n]),
                "seconds": round(sec, 3),
                "it_per_s": round(cfg.iters_per_scale / sec, 3),
            }
        )
    return {"total_s": round(time.perf_counter() - t0, 2), "scales": scales}


@torch.no_grad()
def sampling_speed(model: CoSinGAN, cond: torch.Tensor, size: tuple[int, int], n: int = 8, reps: int = 3) -> float:
    """Images per second for batches of n samples at `size` (the pyramid stretched to it)."""
    model.sample(cond, n=n, seed=0, size=size)  # warm-up
    t0 = time.perf_counter()
    for r in range(reps):
        model.sample(cond, n=n, seed=r + 1, size=size)
    return round(n * reps / (time.perf_counter() - t0), 2)


@torch.no_grad()
def quality(model: CoSinGAN, unseen: dict) -> dict:
    """Numbers behind the grid: reconstruction L1 vs a constant image; lesion/lung/air HU on the unseen mask."""
    real, rec = model.train_image, model.reconstruct()
    hu = model.to_hu(model.sample(unseen["label"], n=8, seed=11, spacing=unseen["spacing"]))[:, 0].numpy()
    t = torch.as_tensor(unseen["label"].astype(np.float32))[None, None]
    lab = torch.nn.functional.interpolate(t, size=model.sizes[-1], mode="nearest-exact")[0, 0].numpy()
    cond = model.to_condition(unseen["label"], spacing=unseen["spacing"])
    outside = resize(cond[None], model.sizes[-1], "area")[0, 2].numpy() < 0.05
    return {
        "rec_l1": round(float((rec - real).abs().mean()), 4),
        "const_l1": round(float((real - real.mean()).abs().mean()), 4),
        "unseen_infection_hu": round(float(hu[:, lab == 3].mean()), 1),
        "unseen_healthy_lung_hu": round(float(hu[:, (lab == 1) | (lab == 2)].mean()), 1),
        "unseen_outside_body_hu": round(float(hu[:, outside].mean()), 1),
        "unseen_sample_std_in_lung": round(float(hu[:, lab > 0].std(0).mean()), 1),
    }


def compile_check(size: int = 74, reps: int = 20) -> dict:
    """Does torch.compile pay on this CPU? Generator stage 1 + critic forward/backward at the demo crop size."""
    from cosingan_monai.networks.critic import PatchCritic
    from cosingan_monai.networks.generator import ScaleGenerator

    g = ScaleGenerator(3, 32).to(memory_format=torch.channels_last)
    d = PatchCritic(3, 32).to(memory_format=torch.channels_last)
    up = torch.randn(1, 1, size, size).contiguous(memory_format=torch.channels_last)
    cond = torch.rand(1, 3, size, size).contiguous(memory_format=torch.channels_last)

    def step(gm, dm, u, c, z):
        x = gm.forward_stage1(u, c, z)
        loss = -dm(x, c).mean() + (x - u).abs().mean()
        loss.backward()
        return loss

    def timed(fn) -> float:
        for _ in range(3):
            fn(g, d, up, cond, 0.1 * torch.randn_like(up))
        t0 = time.perf_counter()
        for _ in range(reps):
            fn(g, d, up, cond, 0.1 * torch.randn_like(up))
        return round((time.perf_counter() - t0) / reps * 1e3, 1)

    eager = timed(step)
    t0 = time.perf_counter()
    compiled_fn = torch.compile(step)
    compiled_fn(g, d, up, cond, 0.1 * torch.randn_like(up))
    compile_s = round(time.perf_counter() - t0, 1)
    return {"size": size, "eager_ms": eager, "compiled_ms": timed(compiled_fn), "compile_s": compile_s}


def generated_body(hu: np.ndarray) -> np.ndarray:
    """The body a synthetic slice shows: tissue above -500 HU, largest component, holes filled (lungs inside)."""
    return body_mask(hu)


def body_ablation(pair_item: dict, unseen_seeds: list[int], iters: int, tmp: Path) -> dict:
    """Train the demo preset with and without the body channel; score the generated body against the true one.

    Both models sample the unseen cases' label maps; the body model is also given their true body mask (what the
    channel is for). Score: IoU of the generated body (tissue > -500 HU, filled) with the true body, and the mean HU
    outside the true body (air is -1000 HU).
    """
    out: dict = {"iters_per_scale": iters, "unseen_phantom_seeds": unseen_seeds}
    for use_body in (True, False):
        cfg = CoSinGANConfig.from_bundle(TRAIN_BUNDLE, "demo", iters_per_scale=iters, use_body=use_body)
        pair = (hu_to_unit(pair_item["hu"]), label_to_condition(pair_item["label"], pair_item["body"]))
        model = MultiScaleTrainer(
            pair=pair, config=cfg, output_dir=tmp / f"body_{use_body}", resume=False, progress=False
        ).run()
        ious, outside = [], []
        for seed in unseen_seeds:
            u = phantom_slice(seed)
            body = u["body"] if use_body else None
            hu = model.to_hu(model.sample(u["label"], n=4, seed=seed, body=body, spacing=u["spacing"]))[:, 0].numpy()
            truth = resize(torch.as_tensor(u["body"], dtype=torch.float32)[None, None], model.sizes[-1], "area")
            truth = truth[0, 0].numpy() > 0.5
            for h in hu:
                gen = generated_body(h)
                ious.append(float((gen & truth).sum() / max(1, (gen | truth).sum())))
                outside.append(float(h[~truth].mean()))
        out["with_body" if use_body else "without_body"] = {
            "body_iou_mean": round(float(np.mean(ious)), 3),
            "body_iou_min": round(float(np.min(ious)), 3),
            "outside_body_hu": round(float(np.mean(outside)), 1),
        }
    return out


def sample_grid(model: CoSinGAN, unseen: dict, path: Path) -> Path:
    """PNG: real | reconstruction | 4 samples for the unseen mask; top row plain, bottom row with mask outlines."""
    from PIL import Image

    real, rec = model.train_image[0, 0].numpy(), model.reconstruct()[0, 0].numpy()
    samples = model.sample(unseen["label"], n=4, seed=3, spacing=unseen["spacing"])[:, 0].numpy()
    train_c = model.train_condition[0].numpy()
    cond = resize(model.to_condition(unseen["label"], spacing=unseen["spacing"])[None], model.sizes[-1], "area")
    cond = cond[0].numpy()
    images = [real, rec, *samples]
    conds = [train_c, train_c] + [cond] * 4
    top = render_grid([(u, None) for u in images])
    bottom = render_grid(list(zip(images, conds, strict=True)))
    grid = np.concatenate([top, np.full((2, top.shape[1], 3), 255, np.uint8), bottom], 0)
    with atomic_write_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG", optimize=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_gan.json")
    ap.add_argument("--grid", type=Path, default=TRAIN_BUNDLE / "docs" / "sample_grid.png")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--iters", type=int, default=None, help="iterations per scale (default: the demo preset's)")
    ap.add_argument("--target", action="store_true", help="also run the 2000-iteration target for real")
    ap.add_argument("--skip-plain", action="store_true")
    ap.add_argument("--overhead-reps", type=int, default=2)
    ap.add_argument("--overhead-iters", type=int, default=100)
    ap.add_argument(
        "--body-ablation",
        type=int,
        default=0,
        metavar="ITERS",
        help="also train with/without the body channel for ITERS iterations/scale and compare bodies",
    )
    ap.add_argument("--only-ablation", action="store_true", help="run just the body ablation, merged into --out")
    ap.add_argument("--compile-check", action="store_true", help="also time torch.compile against eager")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = CoSinGANConfig.from_bundle(TRAIN_BUNDLE, "demo")
    if args.iters:
        cfg = CoSinGANConfig.from_dict({**cfg.to_dict(), "iters_per_scale": args.iters})
    result: dict = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "loadavg_start": os.getloadavg()},
        "preset": "demo", "config": cfg.to_dict(),
    }  # fmt: skip
    train, unseen = phantom_slice(0), phantom_slice(3)
    result["training_slice"] = {
        "phantom_seed": 0,
        "slice": train["slice"],
        "unseen_mask": {"phantom_seed": 3, "slice": unseen["slice"]},
    }
    pair = (hu_to_unit(train["hu"]), label_to_condition(train["label"], train["body"]))
    if args.only_ablation:  # merge just the extra measurements into an existing result file
        result = json.loads(args.out.read_text()) if args.out.is_file() else result
        if args.compile_check:
            result["torch_compile"] = compile_check()
        with tempfile.TemporaryDirectory() as tmp:
            if args.body_ablation:
                result["body_channel_ablation"] = body_ablation(train, [3, 4, 5], args.body_ablation, Path(tmp))
        with atomic_write_path(args.out) as tmp_out:
            tmp_out.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps({k: result.get(k) for k in ("torch_compile", "body_channel_ablation")}, indent=1))
        return
    if args.compile_check:
        result["torch_compile"] = compile_check()
    with tempfile.TemporaryDirectory() as tmp:
        if args.body_ablation:
            result["body_channel_ablation"] = body_ablation(train, [3, 4, 5], args.body_ablation, Path(tmp))
        model, engine = train_engine(pair, cfg, Path(tmp) / "engine")
        result["engine"] = engine
        print(f"engine: {engine['total_s']} s", flush=True)
        if not args.skip_plain:
            plain = train_plain(pair, cfg)
            result["plain_loop"] = plain
            print(f"plain: {plain['total_s']} s", flush=True)
            # the shared CPU's load drifts between runs, so the ratio comes from alternating shorter runs
            short = CoSinGANConfig.from_dict({**cfg.to_dict(), "iters_per_scale": args.overhead_iters})
            ratios = []
            for rep in range(args.overhead_reps):
                e = train_engine(pair, short, Path(tmp) / f"overhead_{rep}")[1]["total_s"]
                p = train_plain(pair, short)["total_s"]
                ratios.append(round(e / p, 3))
            result["engine_overhead"] = {
                "method": f"{args.overhead_reps} alternating engine/plain runs of {args.overhead_iters} it/scale",
                "ratios": ratios,
                "ratio_median": float(np.median(ratios)),
            }
            print(f"overhead ratios {ratios}", flush=True)
        per_it = {s["scale"]: s["seconds"] / s["iterations"] for s in engine["scales"]}
        result["target_128px_2000it"] = {
            "method": "extrapolated: sum over scales of 2000 x measured seconds per iteration (engine, demo preset)",
            "seconds": round(sum(TARGET_ITERS * v for v in per_it.values()), 1),
            "limit_seconds": TARGET_SECONDS,
        }
        if args.target:
            tcfg = CoSinGANConfig.from_dict({**cfg.to_dict(), "iters_per_scale": TARGET_ITERS})
            target_model, measured = train_engine(pair, tcfg, Path(tmp) / "target")
            result["target_128px_2000it"].update(
                method="measured (engine, demo preset with 2000 iterations/scale)",
                seconds=measured["total_s"],
                scales=measured["scales"],
            )
            result["quality_target_model"] = quality(target_model, unseen)
            grid = args.grid.with_name(args.grid.stem + "_2000it.png")
            result["sample_grid_target_model"] = os.path.relpath(sample_grid(target_model, unseen, grid), REPO)
        tr = result["target_128px_2000it"]
        tr["meets_target"] = tr["seconds"] <= TARGET_SECONDS
        cond = model.to_condition(unseen["label"], spacing=unseen["spacing"])
        result["sampling_images_per_s"] = {
            "128": sampling_speed(model, cond, (128, 128)),
            "256": sampling_speed(model, cond, (256, 256)),
        }
        vol = np.repeat(unseen["label"][..., None], 16, axis=2)
        t0 = time.perf_counter()
        model.sample_volume(vol, seed=0, spacing=unseen["spacing"])
        result["volume_slices_per_s_128"] = round(16 / (time.perf_counter() - t0), 2)
        result["quality_demo_model"] = quality(model, unseen)
        sample_grid(model, unseen, args.grid)
        result["sample_grid"] = os.path.relpath(args.grid, REPO)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["machine"]["loadavg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write_path(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=1))


if __name__ == "__main__":
    main()
