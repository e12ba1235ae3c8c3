"""Does a CoSinGAN change help downstream on real CT? Arm b of a finished experiment, retrained with other GAN
settings, paired with that experiment's own arms.

For each seed of EXPERIMENT (a `cosingan-monai experiment` run folder, k = 1 or one --k of a k-table), this
- trains the seed's GAN(s) on the same training slices with the same seed and the `--set` overrides,
- samples the seed's own conditions (the same masks and splits arm b had),
- mixes in the real slice(s) at the same share, trains the same 2D segmenter with the same seed and settings,
- evaluates it on the experiment's own test set,
and writes a JSON with the variant's infection Dice next to arms a, b, c and d of the same seed: only the GAN
differs from arm b, so the per-seed difference b' - b is the change's effect (one experiment seed costs one GAN, one
synthesis and one 2D training).

Run:  python benchmarks/arm_b_variant.py runs/exp_k124 --multi-k --k 1 --tag lcf10 --set lesion_contrast_weight=10 \
          [--seeds 0 1 2] [--preset demo] [--real-share 0.25] [--out benchmarks/results/arm_b/lcf10.json]
The experiment's arms are read from its stage manifests, so a running experiment's finished seeds can be used.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cosingan_monai.core.files import read_json, write_json  # noqa: E402
from cosingan_monai.data.datalists import mix_real_slices  # noqa: E402
from cosingan_monai.pipeline.downstream import evaluate_bundle, train_bundle  # noqa: E402
from cosingan_monai.pipeline.experiment import ARMS, pick_training_slices, write_conditions  # noqa: E402
from cosingan_monai.pipeline.pipeline import PIPELINE_PRESETS, pipeline_epochs, synthesize, train_gans  # noqa: E402


def parse_sets(items: list[str]) -> dict[str, object]:
    """--set field=value pairs -> {"config#field": value} (values as JSON where they parse)."""
    out: dict[str, object] = {}
    for item in items:
        key, _, text = item.partition("=")
        try:
            out[f"config#{key}"] = json.loads(text)
        except json.JSONDecodeError:
            out[f"config#{key}"] = text
    return out


def manifest(experiment: Path, stage: str) -> dict | None:
    """A finished stage's manifest in the experiment folder (None while it has not finished)."""
    path = experiment / "manifests" / f"{stage}.json"
    return read_json(path) if path.is_file() else None


def seed_arms(experiment: Path, k: int, seed: int, multi_k: bool) -> dict[str, float | None]:
    """Infection Dice of arms a-d of one seed and k, from the experiment's stage manifests."""
    tag = f"k{k}_seed{seed}" if multi_k else f"seed{seed}"
    out: dict[str, float | None] = {}
    for arm in ARMS:
        done = manifest(experiment, f"seed{seed}_{arm}" if arm == "c_all_real" else f"{tag}_{arm}")
        out[arm] = None if done is None else done["metrics"].get("test_dice_infection")
    return out


def finished_evaluation(folder: Path) -> dict[str, float] | None:
    """The metrics of an evaluation that finished before (its metrics.csv, written last), else None."""
    path = folder / "metrics.csv"
    if not path.is_file():
        return None
    rows = (line.split(",") for line in path.read_text().splitlines() if line.strip())
    return {key: float(value) for key, value in rows}


def run_seed(experiment: Path, k: int, seed: int, sets: dict[str, object], out: Path, args: argparse.Namespace) -> dict:
    """Arm b' of one seed: GAN(s) with `sets`, the seed's conditions, the same mix and 2D training; its Dice."""
    preset, share, threads = args.preset, args.real_share, args.threads
    real = manifest(experiment, "prepare_real")["outputs"]
    slices = pick_training_slices(real["train"], k, seed)
    root, kroot = out / f"seed_{seed}", out / f"seed_{seed}" / f"k{k}"
    t0 = time.perf_counter()
    models = []
    for e in slices:  # one GAN per slice and seed, shared by every k of this variant (as in the experiment)
        folder = root / "gans" / Path(e["image"]).name.split(".")[0]
        done = folder / "bundles" / "cosingan_train" / "models" / "model.pt"
        models.append(str(done) if done.is_file() else train_gans([e], folder, preset, seed, overrides=sets)[0])
    conditions = experiment / f"seed_{seed}" / "conditions" / "conditions.json"
    if not conditions.is_file():  # the experiment has not reached this seed yet: the same deterministic masks
        count = PIPELINE_PRESETS[preset]["conditions"]
        conditions = write_conditions(real["train"], count, seed, root / "conditions")
    metrics = finished_evaluation(kroot / "b_variant" / "eval_seg")
    if metrics is None:  # resume: a seed whose evaluation finished before is not trained again
        settings = PIPELINE_PRESETS[preset]
        syn = synthesize(models, conditions, kroot / "b" / "synthetic", kroot / "b", preset, settings, seed)
        mixed = mix_real_slices(syn / "datalist.json", slices, share, kroot / "b" / "mixed")
        seg = train_bundle(
            "covid_seg_2d", mixed["datalist"], kroot / "b_variant", preset, threads=threads,
            strong_aug=not args.light_aug, seed=seed, **pipeline_epochs("covid_seg_2d", preset),
        )  # fmt: skip
        metrics = evaluate_bundle(seg, real["test_seg"], kroot / "b_variant" / "eval_seg", preset, threads)
    arms = seed_arms(experiment, k, seed, args.multi_k)
    dice = metrics.get("test_dice_infection")
    return {
        "seed": seed,
        "slices": [Path(e["image"]).name.split(".")[0] for e in slices],
        "b_variant": dice,
        **arms,
        "b_variant_minus_b": None if dice is None or arms["b_cosingan"] is None else dice - arms["b_cosingan"],
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", type=Path, help="a finished `cosingan-monai experiment` run folder")
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--multi-k", action="store_true", help="the experiment ran several --k (k<K>_seed<S> stages)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--preset", default="demo", help="the experiment's --preset")
    ap.add_argument("--real-share", type=float, default=0.25, help="the experiment's --real-share")
    ap.add_argument("--light-aug", action="store_true", help="the experiment ran with --light-aug")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="CoSinGAN config override")
    ap.add_argument("--tag", required=True, help="name of the variant (output folder and JSON)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="JSON (default benchmarks/results/arm_b/<tag>.json)")
    args = ap.parse_args()
    args.experiment = args.experiment.resolve()  # the bundles run in their own folders: relative paths would break
    sets = parse_sets(args.set)
    work = args.experiment / "variants" / args.tag
    rows = [run_seed(args.experiment, args.k, s, sets, work, args) for s in args.seeds]
    diffs = [r["b_variant_minus_b"] for r in rows if r["b_variant_minus_b"] is not None]
    doc = {
        "experiment": str(args.experiment),
        "k": args.k,
        "tag": args.tag,
        "sets": sets,
        "command": " ".join(sys.argv),
        "rows": rows,
        "mean_b_variant_minus_b": float(np.mean(diffs)) if diffs else None,
        "sd_b_variant_minus_b": float(np.std(diffs)) if diffs else None,
    }
    out = args.out or REPO / "benchmarks" / "results" / "arm_b" / f"{args.tag}.json"
    write_json(out, doc)
    for r in rows:
        cells = " ".join(f"{a[:1]} {r[a]:.3f}" for a in ARMS if r[a] is not None)
        diff = "n/a" if r["b_variant_minus_b"] is None else f"{r['b_variant_minus_b']:+.3f}"
        print(f"seed {r['seed']} {','.join(r['slices'])}: b' {r['b_variant']:.3f} | {cells} | b'-b {diff}")
    if diffs:
        print(f"mean b' - b: {doc['mean_b_variant_minus_b']:+.3f} ± {doc['sd_b_variant_minus_b']:.3f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
