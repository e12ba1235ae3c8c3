"""Realism of the demo-preset CoSinGAN on real CT: train on one MedSeg-dev slice, sample the others' masks, compare.

For each training slice (an argument, e.g. medseg_0051):
- trains the GAN through the bundle's code path (MultiScaleTrainer, the cosingan_train preset's config, checkpoints
  and TensorBoard on as the bundle runs them) with the per-scale realism hook on (16 other real slices);
- samples one synthetic slice for every other MedSeg-dev slice's mask (with that slice's body mask, as the
  pipeline's conditions carry it), plus `--div-samples` samples for the training mask itself (diversity);
- compares them with all real MedSeg-dev slices at 128 px (cosingan_monai.metrics.realism.compare_sets);
- measures the reconstruction (L1, its fine texture against the real training slice) and how far the training
  mask's samples lie from the reconstruction;
- writes benchmarks/results/realism/<tag>_<slice>.json (config, seed, threads, wall times, load average, per-scale
  realism, the report) and prints the markdown table and the issue's target numbers.

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_realism.py medseg_0051 --threads 1 --tag baseline \
          [--set field=value ...] [--grid docs/realism_grid.png]
Skips with a message (exit 0) when ../shared/data/medseg100-dev is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cosingan_monai.core.files import atomic_write_path  # noqa: E402
from cosingan_monai.data.cases import label_map  # noqa: E402
from cosingan_monai.data.conditions import lesion_density_map  # noqa: E402
from cosingan_monai.data.io import find_label, load_case  # noqa: E402
from cosingan_monai.data.lungmask import body_mask  # noqa: E402
from cosingan_monai.data.transforms import hu_to_unit, label_to_condition, with_lesion_density  # noqa: E402
from cosingan_monai.engines.handlers import render_grid  # noqa: E402
from cosingan_monai.engines.realism_log import flat_numbers  # noqa: E402
from cosingan_monai.engines.synthesis import label_on_grid  # noqa: E402
from cosingan_monai.engines.train_loop import MultiScaleTrainer  # noqa: E402
from cosingan_monai.metrics.realism import (  # noqa: E402
    abs_laplacian,
    compare_sets,
    erode,
    format_markdown,
    resample_image,
)
from cosingan_monai.networks import CoSinGAN, CoSinGANConfig  # noqa: E402

TRAIN_BUNDLE = REPO / "bundles" / "cosingan_train"
DATA = REPO.parent / "shared" / "data" / "medseg100-dev"
RESULTS = REPO / "benchmarks" / "results" / "realism"
SIZE = 128
# the issue's targets (demo preset, MedSeg-dev)
TARGETS = {
    "healthy_lung_laplacian_ratio": ">= 0.75",
    "healthy_lung_gradient_ratio": ">= 0.75",
    "body_gradient_ratio": ">= 0.75",
    "lesion_mean_hu_diff": "|.| <= 50",
    "healthy_lung_mean_hu_diff": "|.| <= 50",
    "lesion_spread_ratio": ">= 0.7",
    "diversity_ratio": ">= 2x baseline",
}


def parse_value(text: str) -> object:
    """A --set value: JSON (numbers, true/false, null) or else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_sets(items: list[str]) -> dict[str, object]:
    """--set field=value pairs -> {field: value}."""
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set wants field=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = parse_value(value.strip())
    return out


def load_medseg(folder: Path) -> list[dict]:
    """Every MedSeg-dev slice: name, HU (x, y), COVID-19-CT-Seg label (automatic lungs), body mask, spacing."""
    out = []
    for image in sorted((folder / "images").glob("*.png")):
        case = load_case(image, find_label(image))
        hu, lab = case.hu()[..., 0], label_map(case)[..., 0]
        out.append(
            {
                "name": image.stem,
                "hu": hu.astype(np.float32),
                "label": lab.astype(np.uint8),
                "body": body_mask(hu),
                "spacing": tuple(float(s) for s in case.spacing[:2]),
            }
        )
    return out


def git_commit() -> str | None:
    """The repository's HEAD commit (None outside git)."""
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def train(item: dict, cfg: CoSinGANConfig, out: Path, reference: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Train through MultiScaleTrainer as the bundle does (TensorBoard, checkpoints); returns model and timings."""
    from torch.utils.tensorboard import SummaryWriter

    preset = json.loads((TRAIN_BUNDLE / "configs" / "presets" / "demo.json").read_text())
    writer = SummaryWriter(str(out / "tensorboard"))
    cond = label_to_condition(item["label"], item["body"])
    if cfg.lesion_density_channel:  # the training slice's lesions are density 0, as the bundle trains
        cond = with_lesion_density(cond)
    pair = (hu_to_unit(item["hu"]), cond)
    trainer = MultiScaleTrainer(
        pair=pair, config=cfg, output_dir=out, summary_writer=writer, resume=False, progress=False,
        checkpoint_every=preset["checkpoint_every"], image_every=preset["image_every"],
        realism_reference=reference or None,
    )  # fmt: skip
    t0 = time.perf_counter()
    model = trainer.run()
    wall = time.perf_counter() - t0
    writer.close()
    hook = sum(s.get("realism", {}).get("seconds", 0.0) for s in trainer.stats)
    return {"model": model, "wall_s": wall, "train_s": wall - hook, "hook_s": hook, "stats": trainer.stats}


def lung_laplacian(hu: np.ndarray, lab: np.ndarray) -> float:
    """Mean |Laplacian| (HU) in the 2-px-eroded healthy lung, the realism module's fine-texture measure."""
    region = erode((lab == 1) | (lab == 2), 2)
    return float(abs_laplacian(hu)[region].mean())


@torch.no_grad()
def reconstruction_numbers(model: CoSinGAN, item: dict, samples_hu: np.ndarray) -> dict:
    """Reconstruction L1 (network units), its lung fine texture against the real slice, samples vs reconstruction."""
    real_u, rec_u = model.train_image, model.reconstruct()
    real = model.to_hu(real_u)[0, 0].numpy()
    rec = model.to_hu(rec_u)[0, 0].numpy()
    lab = label_on_grid(item["label"], model.sizes[-1])
    lung = (lab > 0) & (lab < 3)
    lesion = lab == 3
    return {
        # the training slice's own levels: a one-slice GAN starts from these
        "train_healthy_lung_mean_hu": float(real[lung].mean()),
        "train_lesion_mean_hu": float(real[lesion].mean()) if lesion.any() else None,
        "samples_healthy_lung_mean_hu": float(np.mean([s[lung].mean() for s in samples_hu])),
        "samples_lesion_mean_hu": float(np.mean([s[lesion].mean() for s in samples_hu])) if lesion.any() else None,
        "rec_l1": float((rec_u - real_u).abs().mean()),
        "rec_lung_laplacian_ratio": lung_laplacian(rec, lab) / lung_laplacian(real, lab),
        "samples_lung_laplacian_ratio": float(np.mean([lung_laplacian(s, lab) for s in samples_hu]))
        / lung_laplacian(real, lab),
        # how far the training mask's samples are from the reconstruction inside the lungs (HU)
        "samples_vs_rec_lung_hu": float(np.mean([np.abs(s - rec)[lung].mean() for s in samples_hu])),
        "samples_vs_real_lung_hu": float(np.mean([np.abs(s - real)[lung].mean() for s in samples_hu])),
    }


@torch.no_grad()
def synthesize(
    model: CoSinGAN, items: list[dict], train_item: dict, div_samples: int, seed: int, spread: float = 1.0
) -> tuple:
    """(synthetic (HU, label) pairs, groups, training-mask samples): one per other mask, div_samples for the own.

    A model with the lesion density channel gets one density per lesion drawn as cosingan_sample draws it
    (`lesion_density_map`, spread `spread`); other models ignore it.
    """

    def draw(label: np.ndarray, body: np.ndarray, sample_seed: int) -> np.ndarray:
        density = None
        if model.config.lesion_density_channel:
            density = lesion_density_map(label, spread, np.random.default_rng(sample_seed))
        return model.to_hu(model.sample(label, n=1, seed=sample_seed, body=body, density=density))[0, 0].numpy()

    syn, groups = [], []
    for i, it in enumerate(items):
        hu = draw(it["label"], it["body"], seed * 1_000_003 + i)
        groups.append([len(syn)])
        syn.append((hu, label_on_grid(it["label"], model.sizes[-1])))
    if model.config.lesion_density_channel:  # a density draw per sample
        own_hu = np.stack(
            [draw(train_item["label"], train_item["body"], seed * 1_000_003 + 999 + j) for j in range(div_samples)]
        )
    else:  # one batch, as the earlier results were measured
        own = model.sample(train_item["label"], n=div_samples, seed=seed * 1_000_003 + 999, body=train_item["body"])
        own_hu = model.to_hu(own)[:, 0].numpy()
    own_lab = label_on_grid(train_item["label"], model.sizes[-1])
    groups.append(list(range(len(syn), len(syn) + div_samples)))
    syn += [(h, own_lab) for h in own_hu]
    return syn, groups, own_hu


def write_grid(model: CoSinGAN, train_item: dict, test_items: list[dict], own_hu: np.ndarray, path: Path) -> Path:
    """PNG at full 128 px: row 1 the training slice, its reconstruction and 3 samples of its mask; rows 2-3 real
    slices and synthetic slices for the same masks (unseen by the GAN), mask outlines in the bottom row."""
    from PIL import Image

    def unit(hu: np.ndarray) -> np.ndarray:
        return hu_to_unit(hu)

    rec = model.reconstruct()[0, 0].numpy()
    real_train = model.train_image[0, 0].numpy()
    row1 = [(real_train, None), (rec, None), *[(unit(h), None) for h in own_hu[:3]]]
    real_row, syn_row, outline_row = [], [], []
    for k, it in enumerate(test_items[:5]):
        lab = label_on_grid(it["label"], model.sizes[-1])
        cond = np.stack([(lab > 0), (lab == 3)]).astype(np.float32)
        hu = model.to_hu(model.sample(it["label"], n=1, seed=77 + k, body=it["body"]))[0, 0].numpy()
        real_row.append((unit(resample_image(it["hu"], model.sizes[-1][0])), None))
        syn_row.append((unit(hu), None))
        outline_row.append((unit(hu), cond))
    rows = [render_grid(r) for r in (row1, real_row, syn_row, outline_row)]
    width = max(r.shape[1] for r in rows)
    pad = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    gap = np.full((4, width, 3), 255, np.uint8)
    grid = np.concatenate([x for r in pad for x in (r, gap)][:-1], 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG", optimize=True)
    return path


def run_one(name: str, data: list[dict], cfg: CoSinGANConfig, args: argparse.Namespace) -> dict:
    """Train on slice `name`, synthesize, measure; the result dict written to JSON."""
    by_name = {d["name"]: d for d in data}
    if name not in by_name:
        raise SystemExit(f"{name}: not in {DATA} (have {data[0]['name']}..{data[-1]['name']})")
    train_item = by_name[name]
    others = [d for d in data if d["name"] != name]
    rng = np.random.default_rng(args.seed)
    ref_idx = sorted(rng.choice(len(others), size=min(args.hook_reference, len(others)), replace=False))
    reference = [(others[i]["hu"], others[i]["label"]) for i in ref_idx] if args.hook_reference else []
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        trained = train(train_item, cfg, Path(tmp), reference)
    model = trained["model"]
    t0 = time.perf_counter()
    syn, groups, own_hu = synthesize(model, others, train_item, args.div_samples, args.seed)
    sample_s = time.perf_counter() - t0
    real = [(d["hu"], d["label"]) for d in data]
    t0 = time.perf_counter()
    report = compare_sets(real, syn, size=SIZE, groups=groups, seed=args.seed)
    metrics_s = time.perf_counter() - t0
    numbers = flat_numbers(report)
    # only the training mask has several samples, so the report's diversity is that mask's
    numbers["diversity_training_mask_hu"] = report.diversity.synthetic
    numbers.update(reconstruction_numbers(model, train_item, own_hu))
    result = {
        "training_slice": name,
        "tag": args.tag,
        "command": "benchmarks/bench_realism.py " + " ".join(sys.argv[1:]),
        "sets": parse_sets(args.set),
        "seed": args.seed,
        "commit": git_commit(),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "threads": torch.get_num_threads(), "loadavg_start": load0, "loadavg_end": os.getloadavg()},
        "timing_s": {"train": round(trained["train_s"], 1), "realism_hook": round(trained["hook_s"], 1),
                     "sample": round(sample_s, 1), "metrics": round(metrics_s, 1)},
        "n_real": len(real), "n_synthetic": len(syn), "div_samples": args.div_samples,
        "numbers": numbers,
        "per_scale": [{k: s.get(k) for k in ("scale", "size", "channels", "iterations", "seconds", "noise_amp",
                                             "noise_amp2", "realism")} for s in trained["stats"]],
        "config": cfg.to_dict(),
        "report": report.to_dict(),
    }  # fmt: skip
    if args.grid:
        test_items = [others[i] for i in np.linspace(0, len(others) - 1, 5).round().astype(int)]
        result["grid"] = os.path.relpath(write_grid(model, train_item, test_items, own_hu, args.grid), REPO)
    return result, report


def targets_line(n: dict) -> str:
    """The issue's target numbers of one run, one line."""

    def f(k: str, d: int = 2) -> str:
        v = n.get(k)
        return "-" if v is None else f"{v:.{d}f}"

    return (
        f"lung lap {f('healthy_lung_laplacian_ratio')} grad {f('healthy_lung_gradient_ratio')} | body grad "
        f"{f('body_gradient_ratio')} | lesion dHU {f('lesion_mean_hu_diff', 0)} spread {f('lesion_spread_ratio')} | "
        f"lung dHU {f('healthy_lung_mean_hu_diff', 0)} | diversity {f('diversity_ratio', 3)} "
        f"(own {f('diversity_training_mask_hu', 1)} HU) | rec lap {f('rec_lung_laplacian_ratio')} | "
        f"samples-rec {f('samples_vs_rec_lung_hu', 1)} HU | summary {f('summary_score', 3)}"
    )


TABLE_COLUMNS = (
    ("healthy_lung_laplacian_ratio", "lung fine texture", 2),
    ("healthy_lung_gradient_ratio", "lung gradient", 2),
    ("body_gradient_ratio", "body gradient", 2),
    ("healthy_lung_mean_hu_diff", "lung dHU", 0),
    ("lesion_mean_hu_diff", "lesion dHU", 0),
    ("lesion_spread_ratio", "lesion spread", 2),
    ("diversity_ratio", "diversity", 3),
    ("summary_score", "summary", 3),
)


def table(folder: Path, tags: list[str] | None = None) -> str:
    """Markdown ablation table: one row per tag, each number the mean over its training slices (+ train time)."""
    runs: dict[str, list[dict]] = {}
    for f in sorted(folder.glob("*.json")):
        r = json.loads(f.read_text())
        runs.setdefault(r["tag"], []).append(r)
    order = tags or sorted(runs, key=lambda t: min(os.path.getmtime(folder / f"{t}_{r['training_slice']}.json")
                                                     for r in runs[t]))  # fmt: skip
    head = "| tag | overrides (`--set`) | slices | " + " | ".join(c[1] for c in TABLE_COLUMNS) + " | train s |"
    lines = [head, "|" + "---|" * (len(TABLE_COLUMNS) + 4)]
    for tag in order:
        rs = runs.get(tag, [])
        if not rs:
            continue
        sets = " ".join(f"{k}={json.dumps(v)}" for k, v in rs[0]["sets"].items()) or "(preset)"
        cells = []
        for key, _, digits in TABLE_COLUMNS:
            vals = [r["numbers"].get(key) for r in rs if r["numbers"].get(key) is not None]
            cells.append(f"{np.mean(vals):.{digits}f}" if vals else "-")
        secs = "/".join(f"{r['timing_s']['train']:.0f}" for r in rs)
        names = ", ".join(r["training_slice"].replace("medseg_", "") for r in rs)
        lines.append(f"| {tag} | {sets} | {names} | " + " | ".join(cells) + f" | {secs} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("slices", nargs="*", help="training slice names, e.g. medseg_0051 medseg_0019")
    ap.add_argument("--table", action="store_true", help="print the ablation table of the results in --out, exit")
    ap.add_argument("--preset", default="demo", choices=("test", "demo", "full"))
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a config field")
    ap.add_argument("--tag", default="baseline", help="name of this configuration in the result files")
    ap.add_argument("--seed", type=int, default=0, help="config seed and sampling seed")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--div-samples", type=int, default=6, help="samples of the training mask (diversity)")
    ap.add_argument("--hook-reference", type=int, default=16, help="real slices for the per-scale hook (0 = off)")
    ap.add_argument("--grid", type=Path, default=None, help="also write a real-vs-synthetic PNG grid here")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.table:
        print(table(args.out))
        return
    if not args.slices:
        ap.error("name at least one training slice")
    if not (args.data / "images").is_dir():
        print(f"bench_realism: {args.data} is absent (MedSeg-dev lives in ../shared/data); nothing to measure")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    sets = parse_sets(args.set)
    cfg = CoSinGANConfig.from_bundle(TRAIN_BUNDLE, args.preset, **{**sets, "seed": args.seed})
    data = load_medseg(args.data)
    for name in args.slices:
        result, report = run_one(name, data, cfg, args)
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"{args.tag}_{name}.json"
        with atomic_write_path(path) as tmp:
            tmp.write_text(json.dumps(result, indent=1) + "\n")
        print(format_markdown(report))
        print(f"\n{args.tag} {name}: train {result['timing_s']['train']} s | {targets_line(result['numbers'])}")
        for s in result["per_scale"]:
            r = s.get("realism") or {}
            print(
                f"  scale {s['scale']} {s['size']}: it {s['iterations']} {s['seconds']:.0f} s amp "
                f"{s['noise_amp']:.4f}/{s['noise_amp2']:.4f} | {targets_line(r) if r else ''}"
            )
        print(f"wrote {os.path.relpath(path, REPO)}", flush=True)


if __name__ == "__main__":
    main()
