"""The slice classifier of a finished pipeline run, retrained from its 2D segmenter for several epoch counts.

For each `--epochs N` the covid_slice_classifier bundle starts from RUN's trained covid_seg_2d (`pretrained_map`),
trains N epochs on RUN's classifier list with the run's settings (N = 0 adopts the map as it is, what the pipeline
does), and is scored on RUN's held-out classifier slices. With the run's own classifier AUC beside it, this shows
what training on the classifier's list (its lesion-free copies as negatives) does to the segmenter's map.
Resumes: an epoch count whose evaluation finished before is read back, not retrained. Writes JSON with `--out`.

Run:  .venv/bin/python benchmarks/classifier_from_segmenter.py runs/demo_s0 --epochs 0 --epochs 5 \
          --out benchmarks/results/classifier/from_segmenter_demo_s0.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cosingan_monai.core.files import read_json, write_json  # noqa: E402
from cosingan_monai.pipeline.downstream import classifier_start, evaluate_bundle, train_bundle  # noqa: E402

CLASSIFIER = "covid_slice_classifier"


def finished_metrics(folder: Path) -> dict[str, float] | None:
    """The metrics of an evaluation that finished before (MONAI MetricsSaver's metrics.csv, written last)."""
    path = folder / "metrics.csv"
    if not path.is_file():
        return None
    rows = (line.split(",") for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {key: float(value) for key, value in rows}


def run_settings(run: Path) -> dict:
    """The preset and training overrides RUN's own classifier ran with (its logged train_args.json)."""
    args = read_json(run / "bundles" / CLASSIFIER / "logs" / "train_args.json")
    preset = (run / "bundles" / CLASSIFIER / "logs" / "train_preset.txt").read_text(encoding="utf-8").strip()
    keep = ("strong_aug", "seed", "val_interval", "datalist")
    return {"preset": preset, **{k: args[k] for k in keep if k in args}}


def retrain(run: Path, epochs: int, out: Path, threads: int) -> dict:
    """Classifier from RUN's 2D segmenter, `epochs` epochs on RUN's classifier list, scored on RUN's held-out."""
    settings = run_settings(run)
    preset, datalist = settings.pop("preset"), settings.pop("datalist")
    folder = out / f"epochs_{epochs}"
    t0 = time.perf_counter()
    metrics = finished_metrics(folder / "eval")
    if metrics is None:
        values = {**settings, **classifier_start(run / "bundles" / "covid_seg_2d"), "max_epochs": epochs}
        if epochs and "val_interval" in values:
            values["val_interval"] = min(int(values["val_interval"]), epochs)
        bundle = train_bundle(CLASSIFIER, Path(datalist), folder, preset, threads=threads, **values)
        eval_list = run / "data" / "eval" / "eval_datalist_cls.json"
        metrics = evaluate_bundle(bundle, eval_list, folder / "eval", preset, threads)
    return {
        "epochs": epochs,
        **{k.removeprefix("test_"): round(v, 4) for k, v in metrics.items()},
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished pipeline run with --eval (e.g. runs/demo_s0)")
    parser.add_argument("--epochs", type=int, action="append", help="epoch counts (repeatable; default 0 and 5)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None, help="work folder (default RUN/classifier_from_segmenter)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    args = parser.parse_args()
    run = args.run.resolve()
    work = (args.work or run / "classifier_from_segmenter").resolve()
    run_metrics = read_json(run / "metrics.json")
    own = run_metrics.get("evaluation", {}).get(CLASSIFIER, {}).get("test_auc")
    rows = [retrain(run, n, work, args.threads) for n in (args.epochs or [0, 5])]
    result = {"run": str(args.run), "run_classifier_auc": own, "from_segmenter": rows}
    print(json.dumps(result, indent=1))
    if args.out:
        write_json(args.out, result, indent=1)


if __name__ == "__main__":
    main()
