"""The user's main job: one annotated case -> CoSinGAN -> synthetic data -> trained, evaluated MONAI bundles.

Each stage runs a bundle from `bundles/` through `monai.bundle` (copied into RUN/bundles/<name>/ first, so the run
folder holds deployable bundles) and records a manifest; `--resume` skips stages whose manifest exists.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from cosingan_monai.core.constants import INFECTION
from cosingan_monai.core.errors import CaseError
from cosingan_monai.core.files import write_json
from cosingan_monai.data.datalists import find_volume_pairs, mix_real_slices, prepare_any
from cosingan_monai.data.io import load_case
from cosingan_monai.metrics.realism_io import key_figures, key_figures_markdown, run_realism
from cosingan_monai.pipeline import bundle_runner as bundles
from cosingan_monai.pipeline.case_prep import (
    PreparedCase,
    prepare_case,
    write_case,
    write_conditions,
    write_training_slices,
    write_volume_anatomies,
)
from cosingan_monai.pipeline.downstream import classifier_start, evaluate_bundle, hparam_metrics, train_bundle
from cosingan_monai.pipeline.heldout import heldout_markdown, heldout_summary
from cosingan_monai.pipeline.report import (
    OVERLAY_LISTS,
    environment,
    metrics_markdown,
    overlay_predictions,
    write_report,
)
from cosingan_monai.pipeline.run_folder import RunFolder, check_out, input_fingerprints, run_stage
from cosingan_monai.pipeline.stage_lanes import (
    IN_PROCESS_LOCK,
    StagePlan,
    plan_stages,
    run_graph,
    run_in_lanes,
    split_threads,
)

Echo = Callable[[str], None]

#: Pipeline sizes per preset (every figure a config value). Bundle-internal sizes live in the bundles' presets.
#: Each synthetic volume renders the case's whole label volume with its own noise.
PIPELINE_PRESETS: dict[str, dict[str, int]] = {
    "test": {"conditions": 12, "samples_per_condition": 1, "volumes": 2},
    "demo": {"conditions": 64, "samples_per_condition": 1, "volumes": 4},
    "full": {"conditions": 1000, "samples_per_condition": 2, "volumes": 8},
}
DOWNSTREAM = ("covid_slice_classifier", "covid_seg_2d", "covid_seg_3d")
#: Epochs of the downstream bundles inside a pipeline run, where the preset's own count would not fit the budget.
#: Presets not listed use the bundle preset's max_epochs. Why these numbers: docs/results.md "Demo schedule".
PIPELINE_EPOCHS: dict[str, dict[str, int]] = {
    "demo": {"covid_seg_2d": 30, "covid_seg_3d": 40},
}
#: Validation interval (epochs) of the downstream bundles inside a pipeline run; presets not listed use the bundle
#: preset's own (docs/results.md "Demo schedule").
PIPELINE_VAL_INTERVAL: dict[str, int] = {"demo": 5}


@dataclass
class PipelineOptions:
    """Everything `cosingan-monai pipeline` was asked to do."""

    case: Path
    label: Path | None = None
    preset: str = "demo"
    out: Path = Path("runs/latest")
    eval_dir: Path | None = None
    train_slices: int = 1
    #: strong augmentation for the bundles trained on synthetic data (measured effect: docs/results.md)
    strong_aug: bool = True
    #: the real training slices' share of the synthetic arm's 2D training sets (data/datalists.mix_real_slices)
    real_share: float = 0.25
    #: warp strength of the label volumes that the synthetic volumes but the first render (0, the default: every
    #: volume renders the case's own; data/conditions.build_volume_anatomies, docs/design.md "Volume anatomies")
    volume_warp: float = 0.0
    #: independent stages run at once (None: 2 on a multi-core CPU, 1 on a GPU; stage_lanes.py)
    lanes: int | None = None
    intensity: str = "auto"
    seed: int = 0
    resume: bool = False
    force: bool = False
    command: str = ""
    sizes: dict[str, int] = field(default_factory=dict)
    #: CPU threads per bundle run (None: stage_lanes' choice) and device of every bundle (None: cuda if available)
    threads: int | None = None
    device: str | None = None
    #: `--set` bundle overrides: "ID" for every bundle, "BUNDLE:ID" for one (covid_seg_2d covers its baseline)
    sets: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sizes = {**PIPELINE_PRESETS[self.preset], **self.sizes}

    def overrides_for(self, bundle: str) -> dict[str, Any]:
        """The `--device` and `--set` overrides that apply to bundle `bundle`."""
        return bundle_overrides(bundle, self.device, self.sets)


def bundle_overrides(bundle: str, device: str | None, sets: dict[str, Any]) -> dict[str, Any]:
    """The `--device` and `--set` overrides for bundle `bundle`: "ID" sets reach every bundle, "BUNDLE:ID" one."""
    out: dict[str, Any] = {} if device is None else {"device": f"$torch.device('{device}')"}
    for key, value in sets.items():
        target, sep, ident = key.rpartition(":")
        if not sep or target == bundle:
            out[ident] = value
    return out


def train_gans(
    slices: list[dict[str, Any]],
    root: Path,
    preset: str,
    seed: int = 0,
    resume: bool = False,
    overrides: dict[str, Any] | None = None,
    threads: int | None = None,
    lanes: int = 1,
) -> list[str]:
    """Train one CoSinGAN per training slice (bundle cosingan_train copied to ROOT/bundles), `lanes` at a time with
    `threads` each; returns the model paths in the order of `slices`."""

    def train_one(entry: dict[str, Any]) -> str:
        bundle = bundles.copy_bundle("cosingan_train", root / "bundles", suffix=_suffix(entry, slices))
        values = {
            "case": entry["image"],
            "label": entry["label"],
            "slice": 0,
            "tensorboard_dir": str(root / "tensorboard" / bundle.name),
            "config#seed": seed,
            **(overrides or {}),
        }
        bundles.run_bundle(bundle, "train", preset, values, resume=resume, threads=threads)
        return str(bundle / "models" / "model.pt")

    jobs = {str(i): partial(train_one, entry) for i, entry in enumerate(slices)}
    return list(run_in_lanes(jobs, lanes).values())


def gan_metrics(root: Path, models: list[str]) -> dict[str, float]:
    """The GANs' final losses at the finest scale (TensorBoard hparams of each cosingan_train run; the mean when
    there are several): `final_rec`, `final_loss_g`, `final_loss_d`."""
    per_model = [hparam_metrics(root / "tensorboard" / Path(m).parent.parent.name) for m in models]
    keys = set.intersection(*(set(p) for p in per_model)) if per_model else set()
    return {k: sum(p[k] for p in per_model) / len(per_model) for k in sorted(keys)}


def synthesize(
    models: list[str],
    conditions: Path,
    out: Path,
    root: Path,
    preset: str,
    sizes: dict[str, int],
    seed: int = 0,
    volume_labels: tuple[str, ...] = (),
    volume_bodies: tuple[str, ...] = (),
    extra: dict[str, Any] | None = None,
    threads: int | None = None,
) -> Path:
    """Sample synthetic slices (and volumes) for a conditions JSON with bundle cosingan_sample; returns OUT."""
    bundle = bundles.copy_bundle("cosingan_sample", root / "bundles")
    overrides = {
        "models": models,
        "conditions": str(conditions),
        "volume_labels": list(volume_labels),
        "volume_bodies": list(volume_bodies),
        "n_volumes": sizes["volumes"] if volume_labels else 0,
        "samples_per_condition": sizes["samples_per_condition"],
        "output_dir": str(out),
        "seed": seed,
        **(extra or {}),
    }
    bundles.run_bundle(bundle, "inference", preset, overrides, threads=threads)
    return out


def validation(preset: str) -> dict[str, int]:
    """The pipeline's validation-interval override for `preset` ({} = the bundle preset's own)."""
    return {"val_interval": PIPELINE_VAL_INTERVAL[preset]} if preset in PIPELINE_VAL_INTERVAL else {}


def pipeline_epochs(name: str, preset: str) -> dict[str, int]:
    """The pipeline's max_epochs override of downstream bundle `name` ({} = the bundle preset's own)."""
    epochs = PIPELINE_EPOCHS.get(preset, {})
    return {"max_epochs": epochs[name]} if name in epochs else {}


def schedule(name: str, preset: str) -> dict[str, int]:
    """The pipeline's epoch and validation overrides of downstream bundle `name` ({} = the bundle preset's own)."""
    return {**pipeline_epochs(name, preset), **validation(preset)}


def check_eval_dir(eval_dir: Path) -> list[tuple[Path, Path]]:
    """The (image, label) pairs of --eval, each loaded and validated: CaseError names the folder or the bad case.

    The evaluations also score the 3D segmenter, so --eval must hold NIfTI volumes (COVID-19-CT-Seg layout).
    """
    if not eval_dir.is_dir():
        raise CaseError(eval_dir, "--eval must be a folder of labelled cases (COVID-19-CT-Seg layout), not a file")
    if (eval_dir / "images").is_dir() and any((eval_dir / "images").glob("*.png")):
        raise CaseError(eval_dir, "--eval holds PNG slices; it needs NIfTI volumes (the 3D segmenter is evaluated too)")
    pairs = find_volume_pairs(eval_dir)
    for image, label in pairs:
        load_case(image, label)
    return pairs


def downstream_skips(prepared: PreparedCase) -> dict[str, str]:
    """Downstream bundles that cannot be trained on this case's synthetic data, with the reason (bundle -> why)."""
    if not (prepared.label == INFECTION).any():
        return {
            "covid_slice_classifier": "the case has no infection (no voxel of label 3), so every synthetic slice is "
            "a negative: a classifier trained on one class scores nothing (its AUC would be NaN); not trained"
        }
    return {}


def check_inputs(opts: PipelineOptions, echo: Echo = print) -> tuple[PreparedCase, dict[str, Any], dict[str, str]]:
    """Validate every option and input before the run folder is made: returns the prepared case, the inputs'
    fingerprints for run.json, and the downstream bundles to skip. Raises CaseError / RunFolderError."""
    if opts.train_slices < 1:
        raise CaseError(opts.case, f"--train-slices must be at least 1, got {opts.train_slices}")
    prepared = prepare_case(opts.case, opts.label, intensity=opts.intensity)
    n_lung = int(((prepared.label >= 1) & (prepared.label <= 3)).any(axis=(0, 1)).sum())
    if opts.train_slices > n_lung:
        depth = prepared.label.shape[2]
        raise CaseError(opts.case, f"--train-slices {opts.train_slices}: only {n_lung} of its {depth} slices hold lung")
    skips = downstream_skips(prepared)
    for name, reason in skips.items():
        echo(f"warning: {opts.case}: {reason} ({name})")
    check_out(opts.out)
    if opts.eval_dir is not None:
        check_eval_dir(opts.eval_dir)
    files = {"--case": opts.case, "--label": prepared.source.label_path, "--eval": opts.eval_dir}
    options = {
        "--preset": opts.preset,
        "--train-slices": opts.train_slices,
        "--intensity": opts.intensity,
        "--seed": opts.seed,
        "--strong-aug": opts.strong_aug,
        "--real-share": opts.real_share,
        "--volume-warp": opts.volume_warp,
        "--device": opts.device,
        "--set": opts.sets,
        "sizes": opts.sizes,
    }
    return prepared, input_fingerprints(files, options), skips


def run_pipeline(opts: PipelineOptions, echo: Echo = print) -> str:
    """Run every stage into opts.out and return the summary table; bad input stops it before the run folder exists.

    The run folder stays locked for the whole run: a second run on it is refused while this one goes.
    """
    plan = plan_stages(opts.lanes)
    if opts.threads is not None:
        plan = replace(plan, threads=opts.threads)
    prepared, inputs, skips = check_inputs(opts, echo)  # validate before touching the disk
    with RunFolder(opts.out, resume=opts.resume, force=opts.force, command=opts.command, inputs=inputs) as run:
        return _run_stages(run, opts, prepared, plan, skips, echo)


def _run_stages(
    run: RunFolder, opts: PipelineOptions, prepared: PreparedCase, plan: StagePlan, skips: dict[str, str], echo: Echo
) -> str:
    """The pipeline's stages in a locked run folder (see run_pipeline)."""
    data = run.root / "data"

    def validate(result: Any) -> None:
        result.outputs.update(write_case(prepared, data / "case"))
        result.metrics.update(
            {"shape": list(prepared.hu.shape), "lung_slices": int(((prepared.label > 0).any(axis=(0, 1))).sum())}
        )

    run_stage(run, "validate", echo, validate)

    def select(result: Any) -> None:
        result.outputs["slices"] = write_training_slices(prepared, opts.train_slices, data / "train_slices")
        result.metrics["train_slice"] = int(result.outputs["slices"][0]["slice"])

    slices = run_stage(run, "select", echo, select)["outputs"]["slices"]

    def train_gan(result: Any) -> None:
        lanes, threads = split_threads(len(slices), opts.threads, plan)  # --train-slices K: K GANs, side by side
        result.outputs["models"] = train_gans(
            slices, run.root, opts.preset, opts.seed, opts.resume, opts.overrides_for("cosingan_train"), threads, lanes
        )
        result.metrics.update(gan_metrics(run.root, result.outputs["models"]))

    models = run_stage(run, "train_gan", echo, train_gan)["outputs"]["models"]

    def conditions(result: Any) -> None:
        result.outputs["conditions"] = write_conditions(
            prepared, opts.sizes["conditions"], opts.seed, data / "conditions"
        )
        result.metrics["negatives"] = sum(1 - c["infected"] for c in result.outputs["conditions"])
        result.outputs["volumes"] = write_volume_anatomies(
            prepared, opts.sizes["volumes"], opts.seed, data / "conditions" / "volumes", opts.volume_warp
        )

    cond_outputs = run_stage(run, "conditions", echo, conditions)["outputs"]
    write_json(data / "conditions" / "conditions.json", {"conditions": cond_outputs["conditions"]})
    anatomies = cond_outputs["volumes"]

    def sample(result: Any) -> None:
        out = synthesize(
            models,
            data / "conditions" / "conditions.json",
            data / "synthetic",
            run.root,
            opts.preset,
            opts.sizes,
            opts.seed,
            tuple(a["label"] for a in anatomies),  # one anatomy per volume
            tuple(a["body"] for a in anatomies),
            opts.overrides_for("cosingan_sample"),
            opts.threads,  # None: all cores (the GAN stages run alone, not in lanes)
        )
        result.outputs["synthetic"] = str(out)
        seg = json.loads((out / "datalist.json").read_text())
        result.metrics["synthetic_slices"] = len(seg.get("training", [])) + len(seg.get("validation", []))

    synthetic = Path(run_stage(run, "sample", echo, sample)["outputs"]["synthetic"])

    datalists = {
        "covid_slice_classifier": synthetic / "datalist_cls.json",
        "covid_seg_2d": synthetic / "datalist.json",
        "covid_seg_3d": synthetic / "datalist_3d.json",
    }

    def mix_real(result: Any) -> None:
        """The 2D lists of the synthetic arm: the real slices at --real-share (0: none), no lesion-free copies for
        the segmenter (data.datalists.for_segmenter)."""
        mixed = mix_real_slices(synthetic / "datalist.json", slices, opts.real_share, data / "synthetic_mixed")
        result.outputs.update({name: str(path) for name, path in mixed.items()})
        training = json.loads(mixed["datalist"].read_text())["training"]
        result.metrics["real_entries"] = sum(e["source"].startswith("real ") for e in training)
        result.metrics["training_entries"] = len(training)

    mixed = run_stage(run, "mix_real", echo, mix_real)["outputs"]
    datalists["covid_slice_classifier"] = Path(mixed["datalist_cls"])
    datalists["covid_seg_2d"] = Path(mixed["datalist"])

    def train(result: Any, name: str) -> None:
        start = classifier_start(run.root / "bundles" / "covid_seg_2d") if name == "covid_slice_classifier" else {}
        bundle = train_bundle(
            name,
            datalists[name],
            run.root,
            opts.preset,
            threads=plan.threads,
            strong_aug=opts.strong_aug,
            seed=opts.seed,
            **{**schedule(name, opts.preset), **start, **opts.overrides_for(name)},
        )
        result.outputs["model"] = str(bundle / "models" / "model.pt")
        result.metrics.update(hparam_metrics(run.root / "tensorboard" / bundle.name))  # best_val_<key metric>
        with IN_PROCESS_LOCK:
            result.outputs["torchscript"] = str(bundles.export_torchscript(bundle))

    def baseline(result: Any) -> None:
        n_train = len(json.loads(datalists["covid_seg_2d"].read_text())["training"])  # the synthetic arm's steps
        datalist = real_slice_datalist(slices, n_train, run.root / "data" / "baseline_datalist.json")
        bundle = train_bundle(
            "covid_seg_2d",
            datalist,
            run.root,
            opts.preset,
            "_baseline",
            threads=plan.threads,
            strong_aug=True,
            seed=opts.seed,
            **{**schedule("covid_seg_2d", opts.preset), **opts.overrides_for("covid_seg_2d")},
        )
        result.outputs["model"] = str(bundle / "models" / "model.pt")
        result.metrics.update(hparam_metrics(run.root / "tensorboard" / bundle.name))
        with IN_PROCESS_LOCK:  # TorchScript too: the realism stage runs it as the real-trained segmenter
            result.outputs["torchscript"] = str(bundles.export_torchscript(bundle))

    # side by side on a CPU, longest first (stage_lanes.py); the classifier starts from the 2D segmenter's weights,
    # so it runs after it in the same lane
    trainings: dict[str, Callable[[Any], None]] = {
        "covid_seg_3d": partial(train, name="covid_seg_3d"),  # the longest lane
        "covid_seg_2d": partial(train, name="covid_seg_2d"),
        "covid_slice_classifier": partial(train, name="covid_slice_classifier"),
        "covid_seg_2d_baseline": baseline,
    }
    if opts.eval_dir is None:
        trainings.pop("covid_seg_2d_baseline")  # the baseline exists to be compared on evaluation cases
    for name in skips:
        trainings.pop(name)
    after = {name: ("sample",) for name in trainings}
    after["covid_slice_classifier"] = ("sample", "train_covid_seg_2d")
    jobs: dict[str, Callable[[], Any]] = {
        name: partial(run_stage, run, f"train_{name}", echo, body, after[name]) for name, body in trainings.items()
    }
    inputs: dict[str, tuple[str, ...]] = {}
    if "covid_slice_classifier" in jobs and "covid_seg_2d" in jobs:
        inputs["covid_slice_classifier"] = ("covid_seg_2d",)
    # each evaluation starts as soon as its bundle is trained, in whichever lane is free (stage_lanes.run_graph)
    eval_lists = prepare_evaluation(run, opts, echo, tuple(skips)) if opts.eval_dir is not None else {}
    for name, datalist in eval_lists.items():
        jobs[f"eval_{name}"] = partial(evaluate_stage, run, opts, echo, plan, name, datalist)
        inputs[f"eval_{name}"] = (name,)
    with_baseline = "covid_seg_2d_baseline" in trainings
    jobs["realism"] = partial(synthetic_realism, run, synthetic, with_baseline, echo)
    inputs["realism"] = ("covid_seg_2d_baseline",) if with_baseline else ()
    results = run_graph(jobs, inputs, plan.lanes)
    realism = results["realism"]

    metrics: dict[str, Any] = {"preset": opts.preset, "case": str(opts.case), "timings_s": {}}
    metrics["realism"] = realism
    metrics["environment"] = environment(opts.seed, plan.threads, plan.lanes)
    if skips:
        metrics["skipped"] = skips
    if opts.eval_dir is not None:
        metrics["evaluation"] = {name: results[f"eval_{name}"]["metrics"] for name in eval_lists}
    metrics["timings_s"] = stage_timings(run.manifests)
    if opts.eval_dir is not None:
        cls_list = run.root / "data" / "eval" / "eval_datalist_cls.json"
        metrics["heldout"] = heldout_summary(run.root / "eval", cls_list if cls_list.is_file() else None)
    write_json(run.root / "metrics.json", metrics)
    report = write_report(run, metrics)
    realism_table = key_figures_markdown({"synthetic vs the case's real slices": realism})
    paths = f"report: {report}\nmetrics: {run.root / 'metrics.json'}"
    summary = f"{metrics_markdown(metrics)}\n\n{realism_table}\n\n{paths}"
    held = heldout_markdown(metrics.get("heldout", {}))
    return f"{summary}\n\n{held}" if held else summary


def synthetic_realism(run: RunFolder, synthetic: Path, with_baseline: bool, echo: Echo) -> dict[str, Any]:
    """Stage `realism`: the synthetic set against the case's own real lung slices (metrics/realism.py), with the
    real-slice baseline as the real-trained segmenter when it was trained; RUN/realism/realism.{json,md}."""
    after = ("sample", "train_covid_seg_2d_baseline") if with_baseline else ("sample",)

    def body(result: Any) -> None:
        case = run.root / "data" / "case"
        real = write_json(
            run.root / "data" / "realism_real.json",
            {"training": [{"image": str(case / "image.nii.gz"), "label": str(case / "label.nii.gz")}]},
        )
        baseline = run.root / "bundles" / "covid_seg_2d_baseline"
        report, written = run_realism(
            real, synthetic, run.root / "realism", segmenter=baseline if with_baseline else None
        )
        result.outputs.update({"json": str(written[0]), "markdown": str(written[1])})
        result.metrics.update(key_figures(report))

    return run_stage(run, "realism", echo, body, after=after)["metrics"]


#: The pipeline's phases in run order. The trainings, the evaluations and the realism stage are one phase: they run
#: as one graph, side by side (stage_lanes.run_graph), so within it the order is by start.
STAGE_PHASES = (
    "validate",
    "select",
    "train_gan",
    "conditions",
    "sample",
    "mix_real",
    "prepare_eval",
    "train_|eval_|realism",
)


def _phase(stage: str) -> int:
    """Index of the phase a stage belongs to (exact name, or a prefix ending in _); unknown stages go last."""
    for i, phase in enumerate(STAGE_PHASES):
        if any(stage == p or (p.endswith("_") and stage.startswith(p)) for p in phase.split("|")):
            return i
    return len(STAGE_PHASES)


def stage_timings(manifests: Path) -> dict[str, float]:
    """Stage -> wall seconds in run order: by phase, then within a phase by start (finish minus wall time)."""
    rows = []
    for path in manifests.glob("*.json"):
        m = json.loads(path.read_text(encoding="utf-8"))
        finished = datetime.fromisoformat(m["finished"]).timestamp() if m.get("finished") else 0.0
        wall = float(m["wall_s"])
        rows.append((_phase(m["stage"]), finished - wall, m["stage"], wall))
    return {stage: wall for _, _, stage, wall in sorted(rows)}


def _suffix(entry: dict[str, Any], slices: list[dict[str, Any]]) -> str:
    """Bundle-folder suffix for one GAN: none for a single training slice, `_z<slice>` when there are several."""
    return "" if len(slices) == 1 else f"_z{entry['slice']:03d}"


def all_as_test(datalist: Path, out: Path) -> Path:
    """Copy a datalist with every split merged into "test": evaluation cases are all held out from training."""
    splits = json.loads(datalist.read_text())
    base = datalist.parent
    merged = [
        {k: (str((base / v).resolve()) if k in ("image", "label") and isinstance(v, str) else v) for k, v in e.items()}
        for entries in splits.values()
        for e in entries
    ]
    return write_json(out, {"training": [], "validation": [], "test": merged})


def real_slice_datalist(slices: list[dict[str, Any]], repeats: int, out: Path) -> Path:
    """The baseline arm's datalist: the real training slice(s) repeated to the synthetic set's size (same steps)."""
    entries = [{"image": e["image"], "label": e["label"]} for e in slices]
    training = [entries[i % len(entries)] for i in range(max(repeats, len(entries)))]
    return write_json(out, {"training": training, "validation": entries, "test": []})


def prepare_evaluation(run: RunFolder, opts: PipelineOptions, echo: Echo, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Stage `prepare_eval`: opts.eval_dir as 2D, classifier and 3D test lists; returns the list of each bundle to
    evaluate (the synthetic-trained ones but those in `skip`, never trained, and the real-slice baseline)."""
    eval_root = run.root / "data" / "eval"

    def prepare(result: Any) -> None:
        prepare_any(opts.eval_dir, eval_root, dims=2)
        prepare_any(opts.eval_dir, eval_root, dims=3)
        for name in ("datalist", "datalist_cls", "datalist_3d"):
            result.outputs[name] = str(all_as_test(eval_root / f"{name}.json", eval_root / f"eval_{name}.json"))
        result.metrics["eval_cases"] = len(json.loads(Path(result.outputs["datalist_3d"]).read_text())["test"])

    # the evaluation data depend on --eval alone, not on the trainings before them
    lists = run_stage(run, "prepare_eval", echo, prepare, after=("validate",))["outputs"]
    eval_lists = {
        "covid_seg_3d": lists["datalist_3d"],
        "covid_slice_classifier": lists["datalist_cls"],
        "covid_seg_2d": lists["datalist"],
        "covid_seg_2d_baseline": lists["datalist"],
    }
    return {name: path for name, path in eval_lists.items() if name not in skip}


def evaluate_stage(
    run: RunFolder, opts: PipelineOptions, echo: Echo, plan: StagePlan, name: str, datalist: str
) -> dict[str, Any]:
    """Stage `eval_<name>`: bundle `name` on its held-out list (and the report's overlay predictions, here so they
    run beside the other stages); returns the stage's manifest."""

    def evaluate(result: Any) -> None:
        bundle = run.root / "bundles" / name
        result.metrics.update(evaluate_bundle(bundle, datalist, run.root / "eval" / name, opts.preset, plan.threads))
        if name in OVERLAY_LISTS:
            overlay_predictions(run, name, plan.threads, fresh=True)

    return run_stage(run, f"eval_{name}", echo, evaluate, ("prepare_eval", f"train_{name}"))
