"""Run the project's MONAI bundles programmatically: copy one into a run folder, run a workflow, export TorchScript.

Presets are overlay files `configs/presets/<preset>.json` written against train.json (CONVENTIONS.md); for the
other configs only the ids they define are applied, as `label_app.merged_config` does. Runs go through
`monai.bundle` (`python -m monai.bundle run --args_file ...` in a subprocess by default, so each run starts clean
and its log lands in BUNDLE/logs/), or in-process through `ConfigWorkflow` when the caller wants the live objects.
"""

from __future__ import annotations

import csv
import errno
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosingan_monai.core.constants import PRESETS
from cosingan_monai.core.errors import BundleError, CaseError
from cosingan_monai.core.files import atomic_write_path, read_json
from cosingan_monai.pipeline.run_folder import HELD_LOCKS
from cosingan_monai.pipeline.stage_lanes import wait_policy_env

#: where the bundles are: inside the installed package (a wheel ships the repository's top-level bundles/ as
#: cosingan_monai/bundles, setup.cfg package_dir), else the checkout's bundles/ (editable install, source tree).
_PACKAGED_BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
BUNDLES_DIR = _PACKAGED_BUNDLES if _PACKAGED_BUNDLES.is_dir() else Path(__file__).resolve().parents[2] / "bundles"
#: workflow -> config files (relative to BUNDLE/configs) merged in this order before the preset and overrides.
WORKFLOWS: dict[str, tuple[str, ...]] = {
    "train": ("train.json",),
    "evaluate": ("train.json", "evaluate.json"),
    "inference": ("inference.json",),
    "multi_gpu_train": ("train.json", "multi_gpu_train.json"),
}
#: workflow -> ConfigWorkflow type whose required properties must all be defined (None: evaluate, whose check
#: would build and cache the training dataset it never uses).
WORKFLOW_TYPES: dict[str, str | None] = {
    "train": "train",
    "evaluate": None,
    "inference": "infer",
    "multi_gpu_train": "train",
}
#: folders a copy never takes from the source bundle (results of earlier runs).
_RUN_OUTPUTS = ("models", "eval", "logs", "__pycache__")
#: ids never baked into a bundle copy's configs: they belong to the machine or to one invocation.
NEVER_BAKED = frozenset({"resume", "device", "num_threads"})
#: ids of a run that point at its data and outputs: baked only into the config file of the workflow that ran
#: (train.json records what the model was trained on), never into inference.json / evaluate.json.
RUN_SPECIFIC_IDS = frozenset(
    {"datalist", "dataset_dir", "output_dir", "tensorboard_dir", "ckpt_dir", "eval_datalist", "case", "label", "slice"}
)


@dataclass
class BundleRun:
    """One finished bundle workflow: where it ran, what it was given, and the metrics its evaluator reported."""

    bundle: Path
    workflow: str
    preset: str
    args_file: Path
    log_file: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def bundle_source(name: str) -> Path:
    """The repository copy of bundle `name`; CaseError when there is no such bundle."""
    src = BUNDLES_DIR / name
    if not (src / "configs" / "metadata.json").is_file():
        known = (
            sorted(p.name for p in BUNDLES_DIR.iterdir() if (p / "configs").is_dir()) if BUNDLES_DIR.is_dir() else []
        )
        raise CaseError(src, f"no such bundle (known: {', '.join(known) or 'none'})")
    return src


def copy_bundle(name: str, dest_root: str | os.PathLike[str], suffix: str = "") -> Path:
    """Copy bundles/<name> to DEST_ROOT/<name><suffix> and return it; an existing copy keeps its models/ and eval/.

    A fresh copy is assembled beside the target and renamed into place, so a crash never leaves half a bundle.
    """
    src = bundle_source(name)
    dest = Path(dest_root) / f"{name}{suffix}"
    ignore = shutil.ignore_patterns(*_RUN_OUTPUTS)
    if dest.exists():  # refresh the configs and docs, keep trained weights and results
        shutil.copytree(src, dest, ignore=ignore, dirs_exist_ok=True)
        return dest
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(src, tmp, ignore=ignore)
        os.replace(tmp, dest)
    finally:  # a failed copy (a full disk) leaves no half bundle; a killed one is swept by the next RunFolder
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def primary_workflow(bundle: str | os.PathLike[str]) -> str:
    """The workflow that makes a bundle's result (train, or inference for a bundle without train.json such as
    cosingan_sample): its settings are baked into the copy's configs."""
    return "train" if (Path(bundle) / "configs" / "train.json").is_file() else "inference"


def config_files(bundle: str | os.PathLike[str], workflow: str) -> list[Path]:
    """The config files of `workflow` in BUNDLE/configs, checked to exist."""
    if workflow not in WORKFLOWS:
        raise ValueError(f"unknown workflow {workflow!r}; use one of {sorted(WORKFLOWS)}")
    files = [Path(bundle) / "configs" / name for name in WORKFLOWS[workflow]]
    for f in files:
        if not f.is_file():
            raise CaseError(f, f"missing: bundle {Path(bundle).name} has no {workflow} workflow")
    return files


def preset_overrides(bundle: str | os.PathLike[str], workflow: str, preset: str) -> dict[str, Any]:
    """The preset overlay's id -> value pairs that apply to `workflow`'s configs ('full' = none, CONVENTIONS.md).

    Ids whose parent the configs do not define (e.g. `train#...` for inference.json) are dropped: monai.bundle
    cannot set them and they do not concern that workflow.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; use one of {list(PRESETS)}")
    overlay = Path(bundle) / "configs" / "presets" / f"{preset}.json"
    if preset == "full" and not overlay.is_file():
        return {}
    values = read_json(overlay)
    if not isinstance(values, dict):
        raise CaseError(overlay, "a preset overlay must be a JSON object of 'id': value pairs")
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(f) for f in config_files(bundle, workflow)])
    missing = object()
    kept = {}
    for key, value in values.items():
        parent = key.rpartition("#")[0]
        if not parent or parser.get(parent, missing) is not missing:
            kept[key] = value
    return kept


def _locate(config: dict[str, Any], key: str) -> tuple[Any, str | int] | None:
    """The container and slot of id `key` in a raw config (a literal top-level key first, then the `a#b` path);
    None when the parent does not exist."""
    if key in config:
        return config, key
    node: Any = config
    parts = key.split("#")
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    last = parts[-1]
    if isinstance(node, list):
        return (node, int(last)) if last.isdigit() and int(last) < len(node) else None
    return (node, last) if isinstance(node, dict) else None


def _defines(config: dict[str, Any], key: str) -> bool:
    """Whether a raw config holds id `key` itself."""
    slot = _locate(config, key)
    if slot is None:
        return False
    node, last = slot
    return last in node if isinstance(node, dict) else True


def bake_settings(bundle: str | os.PathLike[str], workflow: str, values: Mapping[str, Any]) -> list[Path]:
    """Write a run's preset overlay and overrides into a bundle copy's own configs, and its absolute bundle_root.

    The workflow's own config (train.json for train) takes every id as `monai.bundle run` applied it; the other
    configs (inference.json, evaluate.json, ...) take, except RUN_SPECIFIC_IDS, the top-level ids they define and
    the `a#b` ids whose parent they define (e.g. a network argument left at its default). So
    `python -m monai.bundle run --config_file BUNDLE/configs/inference.json` and `ckpt_export` of that file alone
    rebuild the trained network and its preprocessing, from any folder. NEVER_BAKED ids are left out. Returns the
    files written.
    """
    root = Path(bundle).resolve()
    own = WORKFLOWS[workflow][0] if workflow in WORKFLOWS else None
    baked = {k: v for k, v in values.items() if k not in NEVER_BAKED and k != "bundle_root"}
    written = []
    for path in sorted((root / "configs").glob("*.json")):
        if path.name == "metadata.json":
            continue
        config = read_json(path)
        if not isinstance(config, dict):
            raise CaseError(path, "a bundle config must be a JSON object")
        for key, value in baked.items():
            if path.name == own:
                slot = _locate(config, key) if "#" in key else (config, key)
            elif key not in RUN_SPECIFIC_IDS and (_locate(config, key) if "#" in key else _defines(config, key)):
                slot = _locate(config, key)  # an `a#b` id whose parent the file defines, or a top-level id it holds
            else:
                continue
            if slot is not None:
                node, last = slot
                node[last] = value
        if "bundle_root" in config:
            config["bundle_root"] = str(root)
        with atomic_write_path(path) as tmp:
            tmp.write_text(json.dumps(config, indent=4, default=str) + "\n", encoding="utf-8")
        written.append(path)
    return written


def _write_args(bundle: Path, workflow: str, preset: str, overrides: Mapping[str, Any]) -> Path:
    """Write BUNDLE/logs/<workflow>_args.json, the complete `monai.bundle run --args_file` arguments, and
    BUNDLE/logs/<workflow>_preset.txt naming the preset they include (together, the record of the run)."""
    configs = bundle / "configs"
    args: dict[str, Any] = {
        "config_file": [str(f) for f in config_files(bundle, workflow)],
        "meta_file": str(configs / "metadata.json"),
        "logging_file": str(configs / "logging.conf"),
        "bundle_root": str(bundle),
    }
    args.update(preset_overrides(bundle, workflow, preset))
    args.update(overrides)
    path = bundle / "logs" / f"{workflow}_args.json"
    with atomic_write_path(path) as tmp:
        tmp.write_text(json.dumps(args, indent=1, default=str) + "\n")
    with atomic_write_path(bundle / "logs" / f"{workflow}_preset.txt") as tmp:
        tmp.write_text(preset + "\n")
    return path


def run_bundle(
    bundle: str | os.PathLike[str],
    workflow: str = "train",
    preset: str = "full",
    overrides: Mapping[str, Any] | None = None,
    *,
    resume: bool = False,
    in_process: bool = False,
    nproc: int = 1,
    threads: int | None = None,
) -> BundleRun:
    """Run `workflow` (train, evaluate, inference, multi_gpu_train) of a bundle folder with a preset and overrides.

    `resume=True` passes the override `resume: true` (bundles that can resume read it). Subprocess runs log to
    BUNDLE/logs/<workflow>.log and raise BundleError (the log's cause line) on failure; `nproc > 1` uses torchrun.
    `threads` caps the CPU threads of the run (1 is much faster than 2 on a CPU shared with other jobs).
    Returns the run record; `metrics` holds the evaluator's metrics (evaluate: also read from eval/metrics.csv).
    """
    root = Path(bundle).resolve()
    extra = dict(overrides or {})
    if resume:
        extra.setdefault("resume", True)
    args_file = _write_args(root, workflow, preset, extra)
    # a copy's configs then describe the model it makes; the shipped sources are never rewritten
    if workflow == primary_workflow(root) and not root.is_relative_to(BUNDLES_DIR.resolve()):
        bake_settings(root, workflow, {**preset_overrides(root, workflow, preset), **extra})
    record = BundleRun(root, workflow, preset, args_file)
    if in_process:
        record.metrics = _run_in_process(args_file, workflow, threads)
    else:
        record.log_file = _run_subprocess(root, workflow, args_file, nproc, threads)
        output_dir = extra.get("output_dir", str(root / "eval"))
        if workflow == "evaluate":
            record.metrics = read_metrics(output_dir)
    return record


def _run_in_process(args_file: Path, workflow: str, threads: int | None = None) -> dict[str, float]:
    """Create, check, run and finalize a ConfigWorkflow from an args file; returns its evaluator's metrics."""
    import torch
    from monai.bundle import ConfigWorkflow

    args = dict(read_json(args_file))
    config_file = args.pop("config_file")
    saved_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        wf = ConfigWorkflow(config_file=config_file, workflow_type=WORKFLOW_TYPES[workflow], **args)
        wf.initialize()
        missing = wf.check_properties()
        if missing:
            raise CaseError(config_file[0], f"bundle config lacks required ids {missing}")
        wf.run()
        metrics = _evaluator_metrics(wf)
        wf.finalize()
    finally:
        torch.set_num_threads(saved_threads)
    return metrics


def _evaluator_metrics(wf: Any) -> dict[str, float]:
    """The scalar metrics of the workflow's evaluator after a run (validate#evaluator, else evaluator)."""
    for key in ("validate#evaluator", "evaluator"):
        if key in wf.parser:
            engine = wf.parser.get_parsed_content(key)
            return {k: float(v) for k, v in engine.state.metrics.items() if isinstance(v, (int, float))}
    return {}


def _run_subprocess(bundle: Path, workflow: str, args_file: Path, nproc: int, threads: int | None) -> Path:
    """`python -m monai.bundle run --args_file ...` (or torchrun) in the bundle folder; returns the log path."""
    env = dict(os.environ)
    if threads:
        env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    note = ""
    if nproc == 1:
        changes, note = wait_policy_env(_int_or(env.get("OMP_NUM_THREADS"), 1))
        for key, value in changes.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={nproc}"]
        cmd += ["-m", "monai.bundle", "run", "--args_file", str(args_file)]
    else:
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--args_file", str(args_file)]
    log = bundle / "logs" / f"{workflow}.log"
    with open(log, "w") as fh:
        if note:
            fh.write(f"[cosingan-monai] {note}\n")
            fh.flush()
        # the run folder's lock goes with the bundle: a resume is refused while an orphaned bundle still writes
        proc = subprocess.run(
            cmd, cwd=bundle, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False, pass_fds=tuple(HELD_LOCKS)
        )
    if proc.returncode != 0:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        full = no_space_path(lines, bundle)
        if full is not None:
            raise OSError(errno.ENOSPC, f"bundle {bundle.name} {workflow} ran out of disk space; log {log}", full)
        raise BundleError(bundle.name, workflow, proc.returncode, failure_cause(lines), log)
    return log


def _int_or(value: str | None, default: int) -> int:
    """An integer environment value, `default` when unset or not an integer."""
    try:
        return int(value) if value else default
    except ValueError:
        return default


#: exception messages that only wrap the real cause (MONAI's transform and config wrappers, torch's DataLoader)
_WRAPPERS = re.compile(
    r"applying transform |Failed to instantiate component|Failed to evaluate |Caught \w+ in DataLoader worker"
)


def failure_cause(log_lines: Sequence[str]) -> str:
    """The line of a failed run's log that says why: the last exception line that is not a mere wrapper (chained
    tracebacks end in MONAI's "applying transform" / "Failed to instantiate" wrappers, the cause comes before
    them), without its module path; else the log's last non-empty line."""
    causes = []
    after_traceback = False
    for line in log_lines:
        if line.endswith("Traceback (most recent call last):"):
            after_traceback = True
        elif after_traceback and line and not line[0].isspace():
            causes.append(line)  # the first unindented line after a traceback's frames: its exception
            after_traceback = False
    if not causes:
        causes = [ln for ln in log_lines if re.match(r"^[\w.]*(Error|Exception)\b.*:", ln)]
    if not causes:
        return next((ln.strip() for ln in reversed(log_lines) if ln.strip()), "the log is empty")
    cause = next((c for c in reversed(causes) if not _WRAPPERS.search(c)), causes[0])
    return re.sub(r"^(?:[A-Za-z_]\w*\.)+(?=\w+(?::|$))", "", cause)  # nibabel.x.ImageFileError -> ImageFileError


def no_space_path(log_lines: Sequence[str], bundle: Path) -> str | None:
    """The path a failed bundle run could not write for lack of disk space (from its log: `No space left on
    device: 'PATH'`, else the bundle folder when the log says so or the disk has under 1 MiB free); None otherwise."""
    for line in reversed(log_lines):
        if "No space left on device" in line:
            found = re.search(r"No space left on device: '([^']+)'", line)
            return found.group(1) if found else str(bundle)
    try:
        return str(bundle) if shutil.disk_usage(bundle).free < 1 << 20 else None
    except OSError:
        return None


def read_metrics(output_dir: str | os.PathLike[str]) -> dict[str, float]:
    """The metrics MetricsSaver wrote to OUTPUT_DIR/metrics.csv ('name,value' rows); {} when there is none."""
    path = Path(output_dir) / "metrics.csv"
    if not path.is_file():
        return {}
    out: dict[str, float] = {}
    with open(path, newline="") as fh:
        for row in csv.reader(fh, delimiter="," if "," in path.read_text() else "\t"):
            if len(row) >= 2:
                out[row[0]] = float(row[1])
    return out


def _recorded_overrides(bundle: Path, preset: str | None) -> tuple[str, dict[str, Any]]:
    """The preset and the network-shaping overrides of the bundle's last training run (logs/train_args.json)."""
    record = bundle / "logs" / "train_args.json"
    if not record.is_file():
        return preset or "full", {}
    args = {k: v for k, v in read_json(record).items() if k.startswith("network_def") or k == "num_classes"}
    return preset or (bundle / "logs" / "train_preset.txt").read_text().strip(), args


def export_torchscript(
    bundle: str | os.PathLike[str],
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    filename: str = "model.ts",
) -> Path:
    """Export BUNDLE/models/model.pt to TorchScript (monai.bundle ckpt_export of `network_def`), atomically.

    Without `preset` the preset and network overrides recorded by the last training run are used, so the exported
    network has the trained shape.
    """
    from monai.bundle import ckpt_export

    root = Path(bundle).resolve()
    preset_, recorded = _recorded_overrides(root, preset)
    values = {**preset_overrides(root, "inference", preset_), **recorded, **dict(overrides or {})}
    final = root / "models" / filename
    tmp = final.with_name(f"{final.stem}.tmp-{os.getpid()}.ts")
    # ckpt_export logs its whole argument summary at INFO to the console; the pipeline's console keeps one line
    # per stage, so only its warnings and errors get through
    scripts_logger = logging.getLogger("monai.bundle.scripts")
    level = scripts_logger.level
    scripts_logger.setLevel(logging.WARNING)
    try:
        ckpt_export(
            net_id="network_def",
            filepath=str(tmp),
            ckpt_file=str(root / "models" / "model.pt"),
            meta_file=str(root / "configs" / "metadata.json"),
            config_file=str(root / "configs" / "inference.json"),
            bundle_root=str(root),
            **values,
        )
        os.replace(tmp, final)
    finally:
        scripts_logger.setLevel(level)
        tmp.unlink(missing_ok=True)
    return final


def torchscript_max_diff(
    bundle: str | os.PathLike[str],
    input_shape: Sequence[int],
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    filename: str = "model.ts",
    seed: int = 0,
) -> float:
    """Max |TorchScript - eager| output difference on a random input of `input_shape` (checks an export)."""
    import torch
    from monai.bundle import ConfigParser

    root = Path(bundle).resolve()
    preset_, recorded = _recorded_overrides(root, preset)
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    for key, value in {**preset_overrides(root, "inference", preset_), **recorded, **dict(overrides or {})}.items():
        parser[key] = value
    net = parser.get_parsed_content("network_def")
    state = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(state["model"] if isinstance(state.get("model"), dict) else state)
    net.eval()
    scripted = torch.jit.load(str(root / "models" / filename), map_location="cpu")
    x = torch.rand(*input_shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return float((scripted(x) - net(x)).abs().max())
