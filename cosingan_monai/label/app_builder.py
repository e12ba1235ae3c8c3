"""Build a MONAI Label app folder that serves a pipeline run's trained segmenters (issue #6).

APP/main.py is `label/template/main.py`; APP/model/<bundle>_segmentation/ holds each bundle with its preset baked into
inference.json/train.json (MONAI Label reads those two files alone, never the preset overlays); APP/studies/ holds
the CT volumes (HU, RAS) with labels in the app's convention, 0 background, 1 lung, 2 infection, which is what the
models return and what 3D Slicer saves back.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cosingan_monai.core.errors import CaseError
from cosingan_monai.core.files import atomic_write_path, read_json, write_json
from cosingan_monai.data.cases import label_map
from cosingan_monai.data.io import NIFTI_SUFFIXES, find_label, load_case, save_nifti
from cosingan_monai.phantom.generator import write_phantom_dataset

SEG_BUNDLES: tuple[str, ...] = ("covid_seg_2d", "covid_seg_3d")
#: label name -> value in the app (the bundles' metadata channel_def); studies/labels/final use these values.
APP_LABELS: dict[str, int] = {"lung": 1, "infection": 2}
#: COVID-19-CT-Seg value -> app value (1 left lung, 2 right lung -> lung; 3 infection -> infection).
CTSEG_TO_APP: dict[int, int] = {1: APP_LABELS["lung"], 2: APP_LABELS["lung"], 3: APP_LABELS["infection"]}
#: the configs MONAI Label reads whole; multi_gpu_train.json is an overlay on train.json and is copied as is.
APP_CONFIGS: tuple[str, ...] = ("inference.json", "train.json")
#: folders whose NIfTI files are labels, never studies, when scanning a --studies folder.
LABEL_FOLDERS = frozenset({"lung_and_infection_mask", "infection_mask", "lung_mask", "labels", "labelstr", "labelsts"})
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
_MISSING = object()
#: train.json ids the app sets for MONAI Label: its fine-tuning runs are short, and a bundle writes model.pt only
#: after a validation (CheckpointSaver on the key metric), so validate every epoch or /train may write nothing.
APP_TRAIN_OVERRIDES: dict[str, Any] = {"val_interval": 1}
#: ids of a recorded training run that point into the run folder or are the run's own business.
RUN_SPECIFIC_IDS = frozenset(
    {
        *("config_file", "meta_file", "logging_file", "args_file", "bundle_root", "device", "resume"),
        *("dataset_dir", "datalist", "output_dir", "tensorboard_dir", "ckpt_dir", "train#trainer#max_epochs"),
    }
)


def app_model_name(bundle: str) -> str:
    """MONAI Label's BundleInferTask infers the task type from the folder name, so it must say 'segmentation'."""
    return f"{bundle}_segmentation"


@dataclass
class LabelApp:
    """What `build_label_app` wrote: the app folder, its studies, the served models and how each was configured."""

    app_dir: Path
    studies: Path
    models: dict[str, Path]
    presets: dict[str, str]
    labeled: list[str] = field(default_factory=list)
    unlabeled: list[str] = field(default_factory=list)

    def server_command(
        self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, python: str | None = None
    ) -> list[str]:
        """The `monailabel start_server` argv serving this app on host:port (loopback by default).

        With a Python (default: the repo's .venv-label one) it runs `python -m monailabel.main`, because the
        `monailabel` launcher is a shell script that runs whatever `python` is first on PATH.
        """
        python = python or default_label_python()
        launcher = [python, "-m", "monailabel.main"] if python else ["monailabel"]
        return [
            *launcher,
            "start_server",
            "--app",
            str(self.app_dir),
            "--studies",
            str(self.studies),
            "--conf",
            "models",
            "all",
            "--conf",
            "zoo_source",
            "github",
            "--host",
            host,
            "--port",
            str(port),
        ]


def default_label_python() -> str | None:
    """The repo's .venv-label/bin/python when `make label-venv` built it, else None (use `monailabel` on PATH)."""
    exe = Path(__file__).resolve().parents[2] / ".venv-label" / "bin" / "python"
    return str(exe) if exe.is_file() else None


def shell_command(argv: Sequence[str]) -> str:
    """Quote an argv for copy-pasting into a POSIX shell."""
    return shlex.join(list(argv))


# ------------------------------------------------------------------------------------------ bundles and presets


def find_run_bundles(run_dir: str | os.PathLike[str], names: Iterable[str] = SEG_BUNDLES) -> dict[str, Path]:
    """Locate RUN/bundles/<name> for each segmenter; CaseError names the first missing file."""
    run = Path(run_dir)
    if not run.is_dir():
        raise CaseError(run, "run folder does not exist")
    found: dict[str, Path] = {}
    for name in names:
        bundle = run / "bundles" / name
        for rel in ("configs/metadata.json", "configs/inference.json", "configs/train.json", "models/model.pt"):
            if not (bundle / rel).is_file():
                raise CaseError(bundle / rel, f"missing: {name} must be a trained bundle of the run (train it first)")
        found[name] = bundle
    return found


def preset_overlays(bundle: Path) -> dict[str, Path | None]:
    """Preset name -> overlay file; 'full' is train.json alone (CONVENTIONS.md) unless presets/full.json exists."""
    overlays: dict[str, Path | None] = {"full": None}
    for path in sorted((bundle / "configs" / "presets").glob("*.json")):
        overlays[path.stem] = path
    return overlays


def _read_overrides(path: Path | None) -> dict[str, Any]:
    """An overlay file's 'id': value pairs (None -> none)."""
    if path is None:
        return {}
    values = read_json(path)
    if not isinstance(values, dict):
        raise CaseError(path, "an overlay must be a JSON object of 'id': value pairs")
    return values


@dataclass
class BundleSettings:
    """How a run trained a bundle: its preset and the id overrides to bake into the app's configs."""

    preset: str
    overrides: dict[str, Any]
    source: str  # "given" (--preset), "recorded" (logs/train_args.json of the run) or "matched" (to model.pt)


def recorded_settings(bundle: Path) -> BundleSettings | None:
    """The settings `bundles.run_bundle` recorded for the bundle's training (logs/train_args.json + preset), if any.

    Run-specific ids (paths into the run folder, the device, the epoch count) are left out: MONAI Label sets
    bundle_root, device and max_epochs itself, and everything else derives from bundle_root.
    """
    record = bundle / "logs" / "train_args.json"
    if not record.is_file():
        return None
    args = _read_overrides(record)
    preset_file = bundle / "logs" / "train_preset.txt"
    preset = preset_file.read_text().strip() if preset_file.is_file() else "unknown"
    kept = {k: v for k, v in args.items() if k not in RUN_SPECIFIC_IDS}
    return BundleSettings(preset, kept, "recorded")


def merged_config(config_file: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """`config_file` with id overrides applied, as `monai.bundle run --config_file [base, overlay]` would.

    Ids whose parent is absent from this config (e.g. `train#...` ids for inference.json) are skipped, since
    presets are written against train.json and only the ids a config defines matter to it.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config_file))
    for key, value in overrides.items():
        parent, _, _ = key.rpartition("#")
        if parser.get(parent or key, _MISSING) is not _MISSING:
            parser[key] = value
    config: dict[str, Any] = parser.config  # type: ignore[assignment]
    if "_meta_" not in read_json(config_file):
        config.pop("_meta_", None)  # ConfigParser adds an empty _meta_; keep the file as its author wrote it
    return config


def load_state_dict(path: Path) -> dict[str, Any]:
    """A bundle's model.pt as a flat state dict ({'model': sd} or sd); CaseError when it cannot be read."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for truncated or foreign files
        raise CaseError(path, f"not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        ckpt = ckpt["model"]
    if not isinstance(ckpt, dict) or not ckpt:
        raise CaseError(path, "checkpoint holds no state dict")
    return ckpt


def _network_fits(config: dict[str, Any], state: dict[str, Any]) -> bool:
    """Whether `network_def` of a config builds a network whose parameter names and shapes equal the checkpoint's."""
    from monai.bundle import ConfigParser

    parser = ConfigParser(config)
    net = parser.get_parsed_content("network_def", instantiate=True)
    mine = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    theirs = {k: tuple(getattr(v, "shape", ())) for k, v in state.items()}
    return mine == theirs


def bundle_settings(bundle: Path, preset: str = "auto") -> BundleSettings:
    """The settings model.pt was trained with, checked against its weights.

    `preset` names a preset overlay to use; "auto" takes the run's record when there is one, else the preset
    whose network fits the checkpoint (several fitting presets that set up inference differently are an error).
    """
    overlays = preset_overlays(bundle)
    if preset != "auto" and preset not in overlays:
        raise CaseError(bundle / "configs" / "presets", f"no preset {preset!r}; available: {sorted(overlays)}")
    ckpt = bundle / "models" / "model.pt"
    state = load_state_dict(ckpt)
    inference_json = bundle / "configs" / "inference.json"
    record = recorded_settings(bundle) if preset == "auto" else None
    if record is not None:
        if not _network_fits(merged_config(inference_json, record.overrides), state):
            raise CaseError(ckpt, f"weights do not fit the network recorded in {bundle / 'logs' / 'train_args.json'}")
        return record
    candidates = list(overlays) if preset == "auto" else [preset]
    found = {
        p: BundleSettings(p, _read_overrides(overlays[p]), "matched" if preset == "auto" else "given")
        for p in candidates
    }
    fits = [p for p in candidates if _network_fits(merged_config(inference_json, found[p].overrides), state)]
    if not fits:
        raise CaseError(ckpt, f"weights fit the network of no preset (tried {', '.join(candidates)})")
    inference = {p: merged_config(inference_json, found[p].overrides) for p in fits}
    if any(inference[p] != inference[fits[0]] for p in fits[1:]):
        raise CaseError(ckpt, f"weights fit presets {fits}; pass --preset to choose")
    return found[fits[0]]


def _patch_label_maps(node: Any, patched: list[str], where: str = "") -> None:
    """Make every MapLabelValued read the app's labels: the datastore holds 0/1/2, not COVID-19-CT-Seg's 0-3."""
    if isinstance(node, dict):
        if str(node.get("_target_", "")).endswith("MapLabelValued"):
            node["orig_labels"] = sorted(APP_LABELS.values())
            node["target_labels"] = sorted(APP_LABELS.values())
            patched.append(where)
        for key, value in node.items():
            _patch_label_maps(value, patched, f"{where}#{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _patch_label_maps(value, patched, f"{where}#{i}")


def _copy_file(src: Path, dst: Path) -> None:
    """Copy one file atomically (temp + rename), creating the destination folder."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def write_app_bundle(src: Path, dst: Path, settings: BundleSettings) -> dict[str, Any]:
    """Copy a trained bundle for MONAI Label: settings baked in, label maps patched, weights and docs only."""
    patched: dict[str, list[str]] = {}
    for path in sorted((src / "configs").iterdir()):
        if not path.is_file():
            continue  # presets/ is baked into the configs MONAI Label reads, so it is not copied
        if path.name in APP_CONFIGS:
            extra = APP_TRAIN_OVERRIDES if path.name == "train.json" else {}
            config = merged_config(path, {**settings.overrides, **extra})
            if "bundle_root" in config:  # a run's copy bakes its own absolute root; the app's copy lives elsewhere
                config["bundle_root"] = "."
            if path.name == "train.json":
                patched[path.name] = []
                _patch_label_maps(config, patched[path.name])
            write_json(dst / "configs" / path.name, config)
        else:
            _copy_file(path, dst / "configs" / path.name)
    _copy_file(src / "models" / "model.pt", dst / "models" / "model.pt")
    for extra in ("LICENSE", "docs/README.md"):
        if (src / extra).is_file():
            _copy_file(src / extra, dst / extra)
    return {
        "source": str(src.resolve()),
        "preset": settings.preset,
        "settings_from": settings.source,
        "overrides": settings.overrides,
        "app_train_overrides": APP_TRAIN_OVERRIDES,
        "label_maps_patched": patched,
    }


# ------------------------------------------------------------------------------------------------- studies


def to_app_labels(label_map: np.ndarray) -> np.ndarray:
    """COVID-19-CT-Seg label map (0 bg, 1 left, 2 right, 3 infection) -> app labels (0 bg, 1 lung, 2 infection)."""
    out = np.zeros(label_map.shape, dtype=np.uint8)
    for src, dst in CTSEG_TO_APP.items():
        out[label_map == src] = dst
    return out


def _stem(path: Path) -> str:
    """File name without its NIfTI suffix."""
    for suffix in NIFTI_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def scan_studies(folder: str | os.PathLike[str]) -> list[tuple[Path, Path | None]]:
    """Every NIfTI volume under `folder` (outside label folders) with its label found by `io.find_label`."""
    root = Path(folder)
    if not root.is_dir():
        raise CaseError(root, "studies folder does not exist")
    images = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.name.endswith(NIFTI_SUFFIXES)
        and not any(part.lower() in LABEL_FOLDERS for part in p.relative_to(root).parts[:-1])
    )
    if not images:
        raise CaseError(root, "no NIfTI volumes (.nii/.nii.gz) found")
    return [(img, find_label(img)) for img in images]


def write_studies(studies: Path, cases: Sequence[tuple[Path, Path | None]]) -> tuple[list[str], list[str]]:
    """Write each case as studies/<name>.nii.gz (HU int16, RAS) and its label under labels/final in app values.

    Volumes go through `io.load_case` so they are validated, reoriented to RAS and windowed images become HU;
    the input files are only read. Returns (labeled names, unlabeled names).
    """
    labeled: list[str] = []
    unlabeled: list[str] = []
    seen: dict[str, Path] = {}
    for image, label in cases:
        name = _stem(image)
        if name in seen:
            raise CaseError(image, f"two studies would both be named {name!r} (the other is {seen[name]})")
        seen[name] = image
        case = load_case(image, label)
        hu = np.clip(np.rint(case.hu()), -32768, 32767).astype(np.int16)
        save_nifti(hu, case.affine, studies / f"{name}.nii.gz", dtype=np.int16)
        labels = label_map(case)
        if labels is None:
            unlabeled.append(name)
            continue
        save_nifti(to_app_labels(labels), case.affine, studies / "labels" / "final" / f"{name}.nii.gz")
        labeled.append(name)
    return labeled, unlabeled


def phantom_cases(
    folder: Path, cases: int, labeled: int, seed: int, size: int, slices: int
) -> list[tuple[Path, Path | None]]:
    """Write phantom volumes (COVID-19-CT-Seg layout) to `folder`; the first `labeled` keep their labels."""
    if not 0 <= labeled <= cases:
        raise ValueError(f"labeled must be within 0..cases ({cases}), got {labeled}")
    written = write_phantom_dataset(folder, cases, seed, size=size, slices=slices, healthy_fraction=0.0)
    return [(img, lab if i < labeled else None) for i, (img, lab) in enumerate(written)]


# ----------------------------------------------------------------------------------------------------- app


def build_label_app(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    studies: str | os.PathLike[str] | None = None,
    *,
    bundles: Sequence[str] = SEG_BUNDLES,
    preset: str = "auto",
    force: bool = False,
    cases: int = 6,
    labeled: int = 4,
    seed: int = 1000,
    size: int = 256,
    slices: int = 48,
) -> LabelApp:
    """Write a MONAI Label app for RUN's covid_seg_2d/3d bundles to OUT (built aside, then renamed into place).

    Studies come from `studies` (NIfTI volumes, COVID-19-CT-Seg labels) or, without it, from `cases` fresh
    phantoms (`labeled` of them with labels; all kept with their truth under OUT/phantom/).
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise CaseError(out, "exists and is not empty; pick another --out or pass --force to replace it")
        if not (out / "label_app.json").is_file():
            raise CaseError(out, "exists and is not an app written by label-app; refusing to replace it")
    sources_by_name = find_run_bundles(run_dir, bundles)
    settings = {name: bundle_settings(path, preset) for name, path in sources_by_name.items()}

    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        provenance: dict[str, Any] = {}
        for name, path in sources_by_name.items():
            model = app_model_name(name)
            provenance[model] = write_app_bundle(path, tmp / "model" / model, settings[name])
        _copy_file(Path(__file__).with_name("template") / "main.py", tmp / "main.py")
        if studies is not None:
            sources = scan_studies(studies)
        else:
            sources = phantom_cases(tmp / "phantom", cases, labeled, seed, size, slices)
        have, lack = write_studies(tmp / "studies", sources)
        write_json(
            tmp / "label_app.json",
            {
                "run": str(Path(run_dir).resolve()),
                "models": provenance,
                "labels": APP_LABELS,
                "studies_source": str(Path(studies).resolve()) if studies is not None else "phantom",
                "labeled": have,
                "unlabeled": lack,
            },
        )
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    app_dir = out.resolve()
    models = {app_model_name(n): app_dir / "model" / app_model_name(n) for n in sources_by_name}
    served_presets = {app_model_name(n): st.preset for n, st in settings.items()}
    return LabelApp(app_dir, app_dir / "studies", models, served_presets, have, lack)


def describe(app: LabelApp, port: int = DEFAULT_PORT) -> str:
    """A few lines telling the user what was written and the exact command that serves it."""
    return "\n".join(
        [
            f"MONAI Label app written to {app.app_dir}",
            f"  models : {', '.join(f'{m} (preset {app.presets[m]})' for m in app.models)}",
            f"  studies: {app.studies} ({len(app.labeled)} labeled, {len(app.unlabeled)} unlabeled)",
            "Start the server (loopback only) with:",
            "  " + shell_command(app.server_command(port=port)),
        ]
    )
