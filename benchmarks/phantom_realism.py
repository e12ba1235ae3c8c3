"""How close the phantom is to real CT, and how far the GAN-free painted control is from the phantom.

Three comparisons with `cosingan_monai.metrics.realism.compare_sets` (128 px analysis grid):

1. phantom vs MedSeg-dev (real CT slices with infection masks; development/evaluation only, read in place);
2. painted control vs phantom: each phantom slice's mask painted with the per-region HU statistics of one
   phantom training slice plus white noise (`pipeline.painted_control`), i.e. what the control arm can make;
3. a second, independent phantom draw vs the phantom (the reference: what "the same generator" scores).

Usage (the markdown tables go to stdout, the JSON to --out):

    python benchmarks/phantom_realism.py [--medseg ../shared/data/medseg100-dev] [--cases 6] [--out FILE]
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

from cosingan_monai.data.cases import label_map  # noqa: E402
from cosingan_monai.data.io import load_case  # noqa: E402
from cosingan_monai.data.lungmask import body_mask  # noqa: E402
from cosingan_monai.metrics.realism import analysis_slice, compare_sets, format_markdown  # noqa: E402
from cosingan_monai.phantom.generator import make_phantom_case  # noqa: E402
from cosingan_monai.pipeline.painted_control import paint, region_stats  # noqa: E402

SIZE = 128


def medseg_slices(root: Path) -> list:
    """Every MedSeg-dev slice (HU, COVID-19-CT-Seg labels with automatic lungs) on the analysis grid."""
    out = []
    for image in sorted((root / "images").glob("*.png")):
        case = load_case(image, root / "masks" / image.name, label_kind="infection-only")
        lab = label_map(case)
        out.append(analysis_slice(case.hu()[:, :, 0], lab[:, :, 0], SIZE, case.spacing[:2], image.stem))
    return out


def phantom_slices(seeds: list[int], stride: int = 3, min_lung: float = 0.05) -> tuple[list, list]:
    """Lung-bearing slices (every `stride`-th) of infected phantoms, as analysis slices and as full-size arrays."""
    slices, raw = [], []
    for seed in seeds:
        case = make_phantom_case(seed, size=256, slices=48)
        sp = tuple(float(s) for s in np.diag(case.affine)[:2])
        for z in range(0, case.image.shape[2], stride):
            lab = case.label[:, :, z]
            if np.count_nonzero(lab) < min_lung * lab.size:
                continue
            hu = case.image[:, :, z]
            slices.append(analysis_slice(hu, lab, SIZE, sp, f"phantom_{seed}_z{z}"))
            raw.append((hu, lab))
    return slices, raw


def painted(raw: list, seed: int = 0) -> list:
    """The painted control on every phantom mask, from the statistics of the most-infected phantom slice."""
    train_hu, train_lab = max(raw, key=lambda r: int(np.count_nonzero(r[1] == 3)))
    stats = region_stats(train_hu, train_lab, body_mask(train_hu))
    rng = np.random.default_rng(seed)
    out = []
    for hu, lab in raw:
        out.append(analysis_slice(paint(lab, body_mask(hu), stats, rng), lab, SIZE))
    return out


def lesion_spread(slices: list) -> dict[str, float]:
    """Lesion and healthy-lung mean HU over slices and the sd of the per-slice lesion mean (the issue's figures)."""
    les = [float(s.hu[s.label == 3].mean()) for s in slices if np.count_nonzero(s.label == 3) >= 20]
    lung = [float(s.hu[(s.label == 1) | (s.label == 2)].mean()) for s in slices if np.count_nonzero(s.label) >= 20]
    return {
        "lesion_mean_hu": float(np.mean(les)),
        "lesion_sd_across_slices": float(np.std(les)),
        "lung_mean_hu": float(np.mean(lung)),
        "lesion_slices": len(les),
    }


def main() -> None:
    """Run the three comparisons and print their tables."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--medseg", type=Path, default=REPO.parent / "shared" / "data" / "medseg100-dev")
    ap.add_argument("--cases", type=int, default=6)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    real = medseg_slices(args.medseg)
    ph, raw = phantom_slices(list(range(1000, 1000 + args.cases)))
    ph2, _ = phantom_slices(list(range(2000, 2000 + args.cases)))
    control = painted(raw)
    results = {}
    for name, ref, syn in (
        ("phantom_vs_medseg", real, ph),
        ("painted_control_vs_phantom", ph, control),
        ("phantom_redraw_vs_phantom", ph, ph2),
    ):
        rep = compare_sets(ref, syn, size=SIZE)
        results[name] = rep.to_dict()
        print(f"### {name}\n\n{format_markdown(rep)}")
    results["spread"] = {"medseg": lesion_spread(real), "phantom": lesion_spread(ph)}
    print(json.dumps(results["spread"], indent=1))
    print(f"{len(real)} MedSeg-dev slices, {len(ph)} phantom slices, {time.perf_counter() - t0:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
