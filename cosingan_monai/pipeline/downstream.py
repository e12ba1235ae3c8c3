"""Train and evaluate one downstream bundle (classifier, 2D or 3D segmenter): the pipeline, the experiment and the
`train-seg` / `train-cls` commands all go through these functions."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cosingan_monai.core.errors import CaseError
from cosingan_monai.core.files import atomic_write_path, move_files, read_json, write_json
from cosingan_monai.data.datalists import prepare_any
from cosingan_monai.pipeline import bundle_runner as bundles
from cosingan_monai.pipeline.figures import read_scalars


def train_bundle(
    name: str,
    datalist: Path,
    root: Path,
    preset: str,
    suffix: str = "",
    threads: int | None = None,
    **overrides: Any,
) -> Path:
    """Train downstream bundle `name` on a datalist (copied to ROOT/bundles/<name><suffix>); returns the bundle.

    `threads` caps the bundle's CPU threads (None: the environment's)."""
    bundle = bundles.copy_bundle(name, root / "bundles", suffix=suffix)
    # MONAI's CheckpointSaver writes in place (DiskSaver atomic=False): let it write into a staging folder and move
    # each finished file into models/ afterwards, so a crash or a full disk never leaves a truncated models/model.pt
    staging = bundle / f"models.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    args: dict[str, Any] = {"datalist": str(datalist), "tensorboard_dir": str(root / "tensorboard" / bundle.name)}
    args.update(overrides)
    args["ckpt_dir"] = str(staging)
    try:
        bundles.run_bundle(bundle, "train", preset, args, threads=threads)
        move_files(staging, bundle / "models")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _unstage_config(bundle, name, str(staging))
    return bundle


#: Epochs the pipeline and the experiment train the slice classifier after starting it from the 2D segmenter trained
#: on the same synthetic set: 0 adopts that map network as it is (bundle covid_slice_classifier, `pretrained_map`).
#: Measured on the demo, seeds 0-2 (docs/results.md "Demo recipe, 2026-12-07"): held-out AUC 0.651 +- 0.032 trained
#: alone for 30 epochs, 0.756 +- 0.007 adopted, 0.746 +- 0.021 after 5 more epochs on the classifier's list. `--set
#: covid_slice_classifier:max_epochs=N` fine-tunes instead.
CLASSIFIER_EPOCHS = 0


def classifier_start(segmenter: Path) -> dict[str, Any]:
    """Overrides that start covid_slice_classifier from the trained 2D segmenter bundle `segmenter` (same U-Net, the
    classifier reads out its infection map), for CLASSIFIER_EPOCHS epochs; CaseError when it has no model yet."""
    model = Path(segmenter) / "models" / "model.pt"
    if not model.is_file():
        raise CaseError(model, "the slice classifier starts from the 2D segmenter's weights, which are not there")
    return {"pretrained_map": str(model.resolve()), "max_epochs": CLASSIFIER_EPOCHS}


def hparam_metrics(tensorboard_dir: str | os.PathLike[str]) -> dict[str, float]:
    """The hparams metrics a training wrote to its TensorBoard folder, without the `hparam/` prefix: the downstream
    bundles' best validation key metric (`best_val_mean_dice`, `best_val_auc`), the GAN's final losses (`final_rec`,
    ...). The newest value of each wins (a redone training appends to the folder); {} when there is none."""
    scalars = read_scalars(tensorboard_dir) if Path(tensorboard_dir).is_dir() else {}
    return {k.removeprefix("hparam/"): float(v[-1][1]) for k, v in scalars.items() if k.startswith("hparam/") and v}


def _unstage_config(bundle: Path, name: str, staging: str) -> None:
    """Give BUNDLE/configs/train.json back the shipped ckpt_dir where the run recorded the staging folder in it."""
    config_path = bundle / "configs" / "train.json"
    config = read_json(config_path)
    if isinstance(config, dict) and config.get("ckpt_dir") == staging:
        config["ckpt_dir"] = read_json(bundles.bundle_source(name) / "configs" / "train.json")["ckpt_dir"]
        with atomic_write_path(config_path) as tmp:
            tmp.write_text(json.dumps(config, indent=4) + "\n", encoding="utf-8")


def evaluate_bundle(
    bundle: Path, datalist: str | Path, out: Path, preset: str, threads: int | None = None
) -> dict[str, float]:
    """Evaluate a trained bundle on the "test" split of a datalist; returns its metrics."""
    # absolute paths: the bundle runs with its own working directory
    overrides = {"datalist": str(Path(datalist).resolve()), "output_dir": str(Path(out).resolve())}
    return bundles.run_bundle(bundle, "evaluate", preset, overrides, threads=threads).metrics


DATALIST_NAMES = {"covid_slice_classifier": "datalist_cls", "covid_seg_2d": "datalist", "covid_seg_3d": "datalist_3d"}


def _datalist_for(name: str, data: Path, out: Path, dims: int, seed: int, split: dict | None, echo: Callable) -> Path:
    """`data` itself when it is a datalist JSON, else the datalist prepared from that folder into `out`."""
    if data.is_file():
        return data
    prepared = prepare_any(data, out, dims=dims, split=split, seed=seed, echo=echo)
    return prepared.datalists[DATALIST_NAMES[name]]


def _has_split(datalist: Path, split: str) -> bool:
    """Whether a datalist JSON holds a non-empty `split` list."""
    payload = read_json(datalist)  # CaseError names the file when it is not JSON
    if not isinstance(payload, dict):
        raise CaseError(datalist, "a datalist must be a JSON object of splits ('training', 'validation', 'test')")
    return bool(payload.get(split))


def train_downstream(
    name: str,
    data: Path,
    out: Path,
    preset: str = "demo",
    eval_data: Path | None = None,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    threads: int | None = None,
    export: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train bundle `name` on `data` into OUT/bundles/<name>, evaluate it on the test split (or `eval_data`), export
    TorchScript; returns and writes OUT/<name>_metrics.json ({"datalist", "metrics", "model", "torchscript"})."""
    dims = 3 if name == "covid_seg_3d" else 2
    datalist = _datalist_for(name, data, out / "data", dims, seed, None, echo)
    for split in ("training", "validation"):
        if not _has_split(datalist, split):
            raise CaseError(datalist, f"the datalist has no '{split}' entries")
    values = {"seed": seed, **(overrides or {})}
    echo(f"[{name}] training ({preset} preset) on {datalist}")
    bundle = train_bundle(name, datalist, out, preset, threads=threads, **values)
    result: dict[str, Any] = {"datalist": str(datalist), "model": str(bundle / "models" / "model.pt"), "metrics": {}}
    eval_list = datalist
    if eval_data is not None:
        eval_list = _datalist_for(name, eval_data, out / "eval_data", dims, seed, {"test": 1.0}, echo)
    if _has_split(eval_list, "test"):
        echo(f"[{name}] evaluating on the test split of {eval_list}")
        run = bundles.run_bundle(
            bundle,
            "evaluate",
            preset,
            {
                **values,
                "datalist": str(datalist),
                "tensorboard_dir": str(out / "tensorboard" / name),
                "eval_datalist": str(eval_list),
            },
            threads=threads,
        )
        result["metrics"] = run.metrics
        for key, value in sorted(run.metrics.items()):
            echo(f"  {key:<22}{value:8.4f}")
    if export:
        result["torchscript"] = str(bundles.export_torchscript(bundle))
    write_json(out / f"{name}_metrics.json", result, indent=1)
    return result
