"""Benchmark the downstream bundles' training on this machine: seconds per epoch and peak memory.

A fixed phantom dataset (seeded) is prepared once; each (bundle, preset) pair then trains for a few epochs in its
own child process, so its peak resident memory (ru_maxrss) and CUDA peak are its own. Results go to
benchmarks/results/bench_downstream.json. Usage:

    python benchmarks/bench_downstream.py [--presets test,demo] [--epochs 2] [--threads 1] [--cases 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BUNDLES = {"covid_slice_classifier": "datalist_cls", "covid_seg_2d": "datalist", "covid_seg_3d": "datalist_3d"}
RESULTS = REPO / "benchmarks" / "results" / "bench_downstream.json"


def prepare(root: Path, cases: int, size: int, slices: int) -> dict[str, str]:
    """Write the fixed phantom dataset (seed 0) and its slice and volume datalists; returns name -> datalist path."""
    from cosingan_monai.data.datalists import prepare_slices, prepare_volumes
    from cosingan_monai.phantom.generator import write_phantom_dataset

    write_phantom_dataset(root / "ctseg", cases=cases, seed=0, size=size, slices=slices, healthy_fraction=0.5)
    split = {"training": cases - 2, "validation": 1, "test": 1}
    out = {**prepare_slices(root / "ctseg", root / "prep", split=split).datalists}
    out.update(prepare_volumes(root / "ctseg", root / "prep", split=split).datalists)
    return {k: str(v) for k, v in out.items()}


def run_one(name: str, preset: str, datalist: str, epochs: int, threads: int, workdir: Path) -> dict:
    """Child-process body: train one bundle for `epochs` epochs and report per-epoch times and peak memory."""
    import torch
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    from cosingan_monai.pipeline import bundle_runner as bundles

    torch.set_num_threads(threads)
    bundle = bundles.copy_bundle(name, workdir)
    overrides = {**bundles.preset_overrides(bundle, "train", preset), "datalist": datalist, "max_epochs": epochs}
    overrides.update({"val_interval": epochs, "bundle_root": str(bundle), "num_workers": 0})
    wf = ConfigWorkflow(
        config_file=str(bundle / "configs" / "train.json"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        **overrides,
    )
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    epoch_s: list[float] = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: epoch_s.append(e.state.times["EPOCH_COMPLETED"]))
    start = time.perf_counter()
    wf.run()
    wall = time.perf_counter() - start
    wf.finalize()
    n_train = len(wf.parser.get_parsed_content("train#dataset"))
    return {
        "bundle": name,
        "preset": preset,
        "epochs": epochs,
        "train_items": n_train,
        "iterations_per_epoch": len(wf.parser.get_parsed_content("train#dataloader")),
        "epoch_s": [round(t, 3) for t in epoch_s],
        "epoch_s_steady": round(min(epoch_s[1:] or epoch_s), 3),
        "wall_s_incl_validation": round(wall, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "cuda_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    """Prepare the data, run every (bundle, preset) in a child process, write the JSON results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="test,demo")
    ap.add_argument("--bundles", default=",".join(BUNDLES))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--slices", type=int, default=16)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--one", nargs=4, metavar=("NAME", "PRESET", "DATALIST", "WORKDIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        name, preset, datalist, workdir = args.one
        print("RESULT " + json.dumps(run_one(name, preset, datalist, args.epochs, args.threads, Path(workdir))))
        return
    with tempfile.TemporaryDirectory(prefix="bench_downstream_") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        datalists = prepare(root, args.cases, args.size, args.slices)
        prep_s = time.perf_counter() - t0
        runs = []
        for preset in args.presets.split(","):
            for name in args.bundles.split(","):
                cmd = [sys.executable, __file__, "--epochs", str(args.epochs), "--threads", str(args.threads)]
                cmd += ["--one", name, preset, datalists[BUNDLES[name]], str(root / f"{name}_{preset}")]
                env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
                line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
                if proc.returncode != 0 or line is None:
                    raise SystemExit(f"{name} {preset} failed:\n{proc.stderr[-3000:]}")
                result = json.loads(line[len("RESULT ") :])
                runs.append(result)
                print(
                    f"{name:<24}{preset:<6} {result['epoch_s_steady']:8.2f} s/epoch "
                    f"({result['train_items']} items, {result['iterations_per_epoch']} it)  "
                    f"peak RSS {result['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
    payload = {
        "benchmark": "downstream bundle training, seconds per epoch (validation excluded) and peak memory",
        "dataset": {"phantom_cases": args.cases, "size": args.size, "slices": args.slices, "seed": 0},
        "prepare_s": round(prep_s, 2),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "note": "CPU shared with other jobs during development; timings are indicative",
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(f"{args.out.name}.tmp-{os.getpid()}")
    tmp_out.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp_out, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
