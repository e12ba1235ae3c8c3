"""The paper's protocol: k real slices + strong augmentation vs CoSinGAN synthesis from the same k slices vs all
real slices vs a GAN-free painted control, each training the same downstream networks, all evaluated on one
held-out real set, repeated over several choices of training slices (seeds).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from cosingan_monai.core.errors import CaseError
from cosingan_monai.core.files import atomic_write_path, write_json
from cosingan_monai.data.conditions import build_conditions
from cosingan_monai.data.datalists import (
    classifier_entry,
    find_png_pairs,
    find_volume_pairs,
    mix_real_slices,
    prepare_any,
)
from cosingan_monai.data.io import save_nifti
from cosingan_monai.data.lungmask import body_from_lungs, body_mask
from cosingan_monai.engines.synthesis import build_condition_items
from cosingan_monai.metrics.intervals import N_BOOT, Interval, paired_difference
from cosingan_monai.metrics.realism_io import key_figures, key_figures_markdown, run_realism
from cosingan_monai.pipeline import bundle_runner as bundles
from cosingan_monai.pipeline.downstream import classifier_start, evaluate_bundle, train_bundle
from cosingan_monai.pipeline.heldout import metric_csv, per_case_values
from cosingan_monai.pipeline.painted_control import RegionStats, paint, region_stats
from cosingan_monai.pipeline.pipeline import (
    PIPELINE_PRESETS,
    bundle_overrides,
    pipeline_epochs,
    real_slice_datalist,
    synthesize,
    train_gans,
)
from cosingan_monai.pipeline.run_folder import RunFolder, check_out, input_fingerprints, run_stage, span_s
from cosingan_monai.pipeline.stage_lanes import plan_stages, run_in_lanes, split_threads

Echo = Callable[[str], None]
#: the held-out split used when no --test set is given
HELD_OUT_SPLIT = {"training": 0.7, "validation": 0.0, "test": 0.3}
#: seed s takes the slices ranked s, s + SEED_STRIDE, s + 2 * SEED_STRIDE, ... (pick_training_slices)
SEED_STRIDE = 5
#: fewest test slices of each class (infected / clean) for which the classifier arms are trained and scored
MIN_CLASS_SLICES = 5
ARMS = ("a_real_k_strong_aug", "b_cosingan", "c_all_real", "d_painted_control")
#: metrics of the table: (column title, seg metric key); classifier AUC is added separately.
#: The comparisons the paper's claim rests on, paired per test slice: synthetic data against the k real slices alone,
#: and against the GAN-free painted control.
PAIRS = {"b - a": ("b_cosingan", "a_real_k_strong_aug"), "b - d": ("b_cosingan", "d_painted_control")}
SEG_COLUMNS = (
    ("lung Dice", "test_dice_lung"),
    ("lung NSD", "test_nsd_lung"),
    ("infection Dice", "test_dice_infection"),
    ("infection NSD", "test_nsd_infection"),
)


@dataclass
class ExperimentOptions:
    """What `cosingan-monai experiment` was asked to do."""

    dataset: Path
    out: Path
    #: the k values to run: real training slices per arm (several give a k-table, sharing GANs and arm c)
    ks: tuple[int, ...] = (1,)
    preset: str = "demo"
    seeds: int = 3
    test: Path | None = None
    resume: bool = False
    force: bool = False
    command: str = ""
    strong_aug: bool = True  # arms b-d, as the pipeline's default; arm a always uses strong augmentation
    #: CPU threads per bundle run (None: every core), the device of every bundle (None: cuda if available), and the
    #: `--set` bundle overrides ("ID" for every bundle, "BUNDLE:ID" for one), as in the pipeline
    threads: int | None = None
    device: str | None = None
    sets: dict[str, Any] = field(default_factory=dict)
    #: the k real slices' share of the training sets of arms b and d, as in the pipeline (mix_real_slices)
    real_share: float = 0.25

    def overrides_for(self, bundle: str) -> dict[str, Any]:
        """The `--device` and `--set` overrides that apply to bundle `bundle`."""
        return bundle_overrides(bundle, self.device, self.sets)


def _abs(entries: list[dict[str, Any]], base: Path) -> list[dict[str, Any]]:
    """Datalist entries with image/label made absolute against the datalist's folder."""
    return [{k: (str((base / v).resolve()) if k in ("image", "label") else v) for k, v in e.items()} for e in entries]


def _load2d(path: str) -> np.ndarray:
    """A 2D slice from a (x, y) or (x, y, 1) NIfTI."""
    arr = np.asanyarray(nib.load(path).dataobj)
    return arr[..., 0] if arr.ndim == 3 else arr


def slice_score(label: np.ndarray) -> int:
    """min(infection area, healthy-lung area): the slice-selection score (both infected and healthy lung in view)."""
    lung = int(((label >= 1) & (label <= 3)).sum())
    inf = int((label == 3).sum())
    return min(inf, lung - inf)


def prepare_real(opts: ExperimentOptions, data: Path) -> dict[str, Any]:
    """Real train/validation/test datalists (explicit, listed in the output) from --dataset (and --test)."""
    if opts.test is None:  # a deterministic per-case (per-slice for PNG folders) split of --dataset
        prepare_any(opts.dataset, data / "real", dims=2, split=HELD_OUT_SPLIT)
        splits = json.loads((data / "real" / "datalist.json").read_text())
        train, test = _abs(splits["training"], data / "real"), _abs(splits["test"], data / "real")
    else:
        prepare_any(opts.dataset, data / "real", dims=2, split={"training": 1.0})
        prepare_any(opts.test, data / "test", dims=2, split={"training": 1.0})
        train = _abs(json.loads((data / "real" / "datalist.json").read_text())["training"], data / "real")
        test = _abs(json.loads((data / "test" / "datalist.json").read_text())["training"], data / "test")
    cls_test = [classifier_entry(e) for e in test]
    seg = write_json(data / "test_seg.json", {"training": [], "validation": [], "test": test})
    cls = write_json(data / "test_cls.json", {"training": [], "validation": [], "test": cls_test})
    return {"train": train, "test_seg": str(seg), "test_cls": str(cls), "n_test": len(test)}


def pick_training_slices(train: list[dict[str, Any]], k: int, seed: int) -> list[dict[str, Any]]:
    """Seed s's j-th training slice is the one ranked s + j * SEED_STRIDE by the selection score.

    So seeds 0..SEED_STRIDE-1 use distinct slices, and a seed's k slices are its k - 1 slices plus one more: the
    k-table compares nested sets (adding a slice), and its GANs are trained once for every k. At k = 1 seed s takes
    the slice ranked s, as before the k-table.
    """
    ranked = sorted(train, key=lambda e: slice_score(_load2d(e["label"])), reverse=True)
    if k > len(ranked):
        raise CaseError(
            Path(train[0]["image"]).parent, f"--k {k} needs {k} training slices, the training split has {len(ranked)}"
        )
    picks: list[int] = []
    for j in range(k):
        i = (seed + j * SEED_STRIDE) % len(ranked)
        while i in picks:
            i = (i + 1) % len(ranked)
        picks.append(i)
    return [dict(ranked[i], slice=j) for j, i in enumerate(picks)]


def write_conditions(train: list[dict[str, Any]], count: int, seed: int, out: Path) -> Path:
    """Synthesis conditions shared by arms b and d: the training set's masks plus augmented and lesion-free ones."""
    labels = np.stack([_load2d(e["label"]) for e in train], axis=-1).astype(np.uint8)
    bodies = np.stack([body_mask(_load2d(e["image"]).astype(np.float32)) for e in train], axis=-1)
    affine = nib.load(train[0]["label"]).affine
    entries = []
    for i, c in enumerate(build_conditions(labels, bodies | (labels > 0), count=count, seed=seed)):
        label = save_nifti(c.label[..., None], affine, out / "labels" / f"cond_{i:04d}.nii.gz", np.uint8)
        body = save_nifti(c.body[..., None].astype(np.uint8), affine, out / "bodies" / f"cond_{i:04d}.nii.gz")
        entries.append(c.entry(label, body))
    return write_json(out / "conditions.json", {"conditions": entries})


def write_painted(
    conditions: Path, mirror: dict[str, Path], slices: list[dict[str, Any]], out: Path, seed: int
) -> dict[str, Path]:
    """Arm d: paint the masks of arm b's synthetic set with the k training slices' per-region HU statistics + noise.

    `mirror` holds arm b's datalists ("seg", "cls"): every synthetic image in them (training and validation,
    lesion-free copies included) is painted once from the condition it was sampled for, and arm d's lists name
    the painted images in their place, so both arms see the same masks, splits and step counts.
    """
    all_stats = [
        region_stats(_load2d(s["image"]), _load2d(s["label"]), body_mask(_load2d(s["image"]).astype(np.float32)))
        for s in slices
    ]
    stats = RegionStats(
        {r: float(np.mean([s.mean[r] for s in all_stats])) for r in all_stats[0].mean},
        {r: float(np.mean([s.std[r] for s in all_stats])) for r in all_stats[0].std},
    )
    items = {item["source"]: item for item in build_condition_items(str(conditions))}
    rng = np.random.default_rng(seed)
    painted: dict[str, dict[str, Any]] = {}  # arm b's image path -> arm d's segmentation entry

    def painted_entry(entry: dict[str, Any], infected: int) -> dict[str, Any]:
        if entry["source"].startswith("real "):  # arm b's real slices (mix_real_slices): arm d gets them too
            label = entry["mask"] if "mask" in entry else entry["label"]
            return {
                "image": entry["image"],
                "label": label,
                "infected": infected,
                "source": entry["source"],
                "lesion_removed": 0,
            }
        if entry["image"] not in painted:
            item = items[entry["source"]]
            label, i = item["label"], len(painted)
            body = item["body"] if item["body"] is not None else body_from_lungs(label > 0)
            image = save_nifti(
                paint(label, body, stats, rng)[..., None], item["affine"], out / "images" / f"painted_{i:04d}.nii.gz"
            )
            lab = save_nifti(label[..., None], item["affine"], out / "labels" / f"painted_{i:04d}.nii.gz", np.uint8)
            painted[entry["image"]] = {
                "image": str(image),
                "label": str(lab),
                "infected": int(item["infected"]),
                "source": entry["source"],
                "lesion_removed": int(entry.get("lesion_removed", 0)),
            }
        return painted[entry["image"]]

    lists: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for kind, infected_key in (("cls", "label"), ("seg", "infected")):
        doc = json.loads(Path(mirror[kind]).read_text())
        lists[kind] = {split: [] for split in ("training", "validation", "test")}
        for split in ("training", "validation"):
            for entry in doc.get(split, []):
                seg_entry = painted_entry(entry, int(entry[infected_key]))
                lists[kind][split].append(classifier_entry(seg_entry) if kind == "cls" else seg_entry)
    return {
        "seg": write_json(out / "datalist.json", lists["seg"]),
        "cls": write_json(out / "datalist_cls.json", lists["cls"]),
    }


def real_datalists(train: list[dict[str, Any]], out: Path, repeats: int = 0) -> dict[str, Path]:
    """Arm c: every real training slice (a fifth held for validation/checkpoint choice).

    The training entries are cycled up to `repeats` so that every arm takes the same number of optimiser steps.
    """
    n_val = max(1, len(train) // 5)
    seg = [{"image": e["image"], "label": e["label"], "infected": e["infected"]} for e in train]
    cls = [classifier_entry(e) for e in train]

    def cycled(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [entries[i % len(entries)] for i in range(max(repeats, len(entries)))]

    return {
        "seg": write_json(
            out / "datalist.json", {"training": cycled(seg[n_val:]), "validation": seg[:n_val], "test": []}
        ),
        "cls": write_json(
            out / "datalist_cls.json", {"training": cycled(cls[n_val:]), "validation": cls[:n_val], "test": []}
        ),
    }


def classifier_skip_reason(test_cls: dict[str, Any]) -> str | None:
    """Why the slice classifier cannot be scored on this test set (too few slices of a class for an AUC), or None."""
    labels = [int(e["label"]) for e in test_cls["test"]]
    counts = {c: labels.count(c) for c in (0, 1)}
    if min(counts.values()) < MIN_CLASS_SLICES:
        return (
            f"the test set has {counts[0]} slice(s) without and {counts[1]} with infection; an AUC needs at least "
            f"{MIN_CLASS_SLICES} of each, so the classifier arms were not trained"
        )
    return None


def check_source(path: Path) -> None:
    """A --dataset/--test folder must hold labelled cases (PNG slices or NIfTI volumes): CaseError names it."""
    if (path / "images").is_dir() and any((path / "images").glob("*.png")):
        find_png_pairs(path)
    else:
        find_volume_pairs(path)


def check_experiment(opts: ExperimentOptions) -> dict[str, Any]:
    """Validate the options and data folders before the run folder is made; returns the inputs' fingerprints.

    --seeds is not fingerprinted: seeds are independent stages, so a resumed experiment may add seeds.
    """
    if not opts.ks:
        raise CaseError(opts.dataset, "--k needs at least one value")
    for name, value in (*(("--k", k) for k in opts.ks), ("--seeds", opts.seeds)):
        if value < 1:
            raise CaseError(opts.dataset, f"{name} must be at least 1, got {value}")
    check_out(opts.out)
    check_source(opts.dataset)
    if opts.test is not None:
        check_source(opts.test)
    options = {
        "--k": list(opts.ks),
        "--preset": opts.preset,
        "--strong-aug": opts.strong_aug,
        "--real-share": opts.real_share,
        "--device": opts.device,
        "--set": opts.sets,
    }
    return input_fingerprints({"--dataset": opts.dataset, "--test": opts.test}, options)


def run_experiment(opts: ExperimentOptions, echo: Echo = print) -> str:
    """Run every arm for every seed into opts.out; write results.json and results.md; return the table.

    Bad options or data stop it before the run folder exists; the folder stays locked while it runs.
    """
    plan_stages(lanes=1)  # sequential stages, every core each
    inputs = check_experiment(opts)
    with RunFolder(opts.out, resume=opts.resume, force=opts.force, command=opts.command, inputs=inputs) as run:
        return _run_arms(run, opts, echo)


def _run_arms(run: RunFolder, opts: ExperimentOptions, echo: Echo) -> str:
    """Every arm for every k and seed in a locked run folder (see run_experiment).

    The seed's conditions, its GANs (one per training slice, `seed<S>_gan_<slice>`) and arm c are shared by every k:
    seed S's slices at k = 2 are its slices at k = 1 plus one more (pick_training_slices), so a k-table costs the
    GANs of the largest k only.
    """
    sizes = PIPELINE_PRESETS[opts.preset]
    data = run.root / "data"
    real = run_stage(run, "prepare_real", echo, lambda r: r.outputs.update(prepare_real(opts, data)))["outputs"]
    write_json(run.root / "split.json", {"train": [e["image"] for e in real["train"]], "test": real["test_seg"]})
    real_train = write_json(data / "real_train.json", {"training": real["train"]})  # the realism reference
    skip_cls = classifier_skip_reason(json.loads(Path(real["test_cls"]).read_text()))
    if skip_cls:
        echo(f"classifier: {skip_cls}")
    sweep = {k: KResults(k) for k in opts.ks}
    for seed in range(opts.seeds):
        root = run.root / f"seed_{seed}"
        conditions = write_conditions(real["train"], sizes["conditions"], seed, root / "conditions")
        for k in opts.ks:
            _run_k_seed(run, opts, echo, sweep[k], real, real_train, skip_cls, seed, conditions)
    for kr in sweep.values():
        kr.paired_all_seeds = paired_differences(seed_mean_per_case(kr.per_case))
    tables = [
        results_table(kr.results, opts, skip_cls, k=kr.k)
        + "\n\n"
        + per_seed_table(kr.per_seed, kr.paired_all_seeds)
        + "\n\n"
        + realism_table(kr.realism)
        for kr in sweep.values()
    ]
    if len(opts.ks) > 1:
        tables = [k_table(list(sweep.values()), opts)] + [
            f"## k = {kr.k}\n\n{t}" for kr, t in zip(sweep.values(), tables, strict=True)
        ]
    table = "\n\n".join(tables)
    record: dict[str, Any] = {"options": {k: str(v) for k, v in vars(opts).items()}}
    if len(opts.ks) == 1:
        (only,) = sweep.values()
        record.update(results=only.results, per_seed=only.per_seed, realism=only.realism, wall_s=only.wall_s)
        record["paired_all_seeds"] = only.paired_all_seeds
    else:
        record["k"] = {
            str(kr.k): {
                "results": kr.results,
                "per_seed": kr.per_seed,
                "paired_all_seeds": kr.paired_all_seeds,
                "realism": kr.realism,
                "wall_s": kr.wall_s,
            }
            for kr in sweep.values()
        }
    write_json(run.root / "results.json", record)
    with atomic_write_path(run.root / "results.md") as tmp:
        tmp.write_text(table + "\n", encoding="utf-8")
    return table


@dataclass
class KResults:
    """What one k of the experiment measured: metric lists per arm (one value a seed), per-seed rows, realism per
    seed, and the wall seconds of every stage it used per seed (shared GANs and arm c counted at every k)."""

    k: int
    results: dict[str, dict[str, list[float]]] = field(default_factory=lambda: {arm: {} for arm in ARMS})
    per_seed: list[dict[str, Any]] = field(default_factory=list)
    realism: dict[int, dict[str, dict[str, float | None]]] = field(default_factory=dict)
    wall_s: list[float] = field(default_factory=list)
    #: per seed: arm -> test slice -> its infection Dice values (not in results.json: the eval CSVs hold them)
    per_case: list[dict[str, dict[str, np.ndarray]]] = field(default_factory=list)
    #: PAIRS over every seed's test slices (paired_differences of seed_mean_per_case), as JSON
    paired_all_seeds: dict[str, dict[str, Any]] = field(default_factory=dict)


def _run_k_seed(
    run: RunFolder,
    opts: ExperimentOptions,
    echo: Echo,
    kr: KResults,
    real: dict[str, Any],
    real_train: Path,
    skip_cls: str | None,
    seed: int,
    conditions: Path,
) -> None:
    """Arms a-d and the realism stage of one k and one seed; appends to `kr`.

    With one k, stages are named seed<S>_<arm> and live in seed_<S>/; with several, k<K>_seed<S>_<arm> in
    seed_<S>/k<K>/. GANs (seed<S>_gan_<slice>, seed_<S>/gans/) and arm c (seed<S>_c_all_real) are shared.
    """
    sizes = PIPELINE_PRESETS[opts.preset]
    seed_root = run.root / f"seed_{seed}"
    multi = len(opts.ks) > 1
    root = seed_root / f"k{kr.k}" if multi else seed_root
    tag = f"k{kr.k}_seed{seed}" if multi else f"seed{seed}"
    slices = pick_training_slices(real["train"], kr.k, seed)
    kr.per_seed.append({"seed": seed, "slices": [slice_name(e) for e in slices]})
    walls: list[float] = []

    # the k GANs are independent: on a CPU two at a time, sharing the threads (stage_lanes.split_threads)
    lanes, threads = split_threads(len(slices), opts.threads, plan_stages())

    def gan(r: Any, entry: dict[str, Any]) -> None:
        over, folder = opts.overrides_for("cosingan_train"), seed_root / "gans" / slice_name(entry)
        (model,) = train_gans([entry], folder, opts.preset, seed, overrides=over, threads=threads)
        r.outputs["model"] = model

    gan_jobs = {
        name: partial(run_stage, run, name, echo, partial(gan, entry=entry), ("prepare_real",))
        for name, entry in ((f"seed{seed}_gan_{slice_name(e)}", e) for e in slices)
    }
    gan_stages = list(gan_jobs)
    gans_done = list(run_in_lanes(gan_jobs, lanes).values())
    models = [done["outputs"]["model"] for done in gans_done]
    walls.append(span_s(gans_done))

    def arm_b(r: Any) -> None:
        syn = synthesize(
            models, conditions, root / "b" / "synthetic", root / "b", opts.preset, sizes, seed,
            extra=opts.overrides_for("cosingan_sample"), threads=opts.threads,
        )  # fmt: skip
        # arm b = synthetic + the k real slices at --real-share (0: none), as in the pipeline
        mixed = mix_real_slices(syn / "datalist.json", slices, opts.real_share, root / "b" / "mixed")
        r.outputs["seg"], r.outputs["cls"] = str(mixed["datalist"]), str(mixed["datalist_cls"])

    synthesis = f"{tag}_b_synthesis"
    done = run_stage(run, synthesis, echo, arm_b, after=("prepare_real", *gan_stages))
    b, _ = done["outputs"], walls.append(float(done["wall_s"]))
    n_train = len(json.loads(Path(b["seg"]).read_text())["training"])
    lists: dict[str, dict[str, Path]] = {
        "a_real_k_strong_aug": {"seg": real_slice_datalist(slices, n_train, root / "a" / "datalist.json")},
        "b_cosingan": {"seg": Path(b["seg"]), "cls": Path(b["cls"])},
        "d_painted_control": write_painted(conditions, b, slices, root / "d", seed),
    }
    # arm c does not depend on k; it is shared while it takes the same number of steps as this k's arms
    shared_c = run.manifest(f"seed{seed}_c_all_real")
    c_root, c_tag = seed_root, f"seed{seed}"
    if shared_c is not None and shared_c["outputs"].get("n_train") not in (None, n_train):
        c_root, c_tag = root, tag
    lists["c_all_real"] = real_datalists(real["train"], c_root / "c", n_train)
    arm_stage = {arm: f"{tag}_{arm}" for arm in ARMS}
    arm_stage["c_all_real"] = f"{c_tag}_c_all_real"
    per_case: dict[str, dict[str, np.ndarray]] = {}  # arm -> test slice -> its infection Dice
    for arm in ARMS:
        datalists, arm_root = lists[arm], (c_root if arm == "c_all_real" else root)

        def train_eval(r: Any, arm: str = arm, datalists: dict = datalists, arm_root: Path = arm_root) -> None:
            extra = {"strong_aug": opts.strong_aug or arm.startswith("a_"), "seed": seed}
            seg = train_bundle(
                "covid_seg_2d",
                datalists["seg"],
                arm_root / arm,
                opts.preset,
                threads=opts.threads,
                **{**extra, **pipeline_epochs("covid_seg_2d", opts.preset), **opts.overrides_for("covid_seg_2d")},
            )
            r.outputs["n_train"] = n_train
            r.metrics.update(
                evaluate_bundle(seg, real["test_seg"], arm_root / arm / "eval_seg", opts.preset, opts.threads)
            )
            if "cls" in datalists and not skip_cls:
                name = "covid_slice_classifier"
                start = classifier_start(seg)  # the arm's own 2D segmenter, read out per slice
                cls = train_bundle(
                    name,
                    datalists["cls"],
                    arm_root / arm,
                    opts.preset,
                    threads=opts.threads,
                    **{**extra, **pipeline_epochs(name, opts.preset), **start, **opts.overrides_for(name)},
                )
                cls_eval = arm_root / arm / "eval_cls"
                r.metrics["cls_auc"] = evaluate_bundle(cls, real["test_cls"], cls_eval, opts.preset, opts.threads).get(
                    "test_auc"
                )

        # arms depend only on the real split and their seed's synthesis, so --resume redoes no other seed
        after = ("prepare_real",) if arm == "c_all_real" else ("prepare_real", synthesis)
        done = run_stage(run, arm_stage[arm], echo, train_eval, after=after)
        walls.append(float(done["wall_s"]))
        for key, value in done["metrics"].items():
            if isinstance(value, (int, float)) and np.isfinite(value):
                kr.results[arm].setdefault(key, []).append(float(value))
        kr.per_seed[-1][arm] = done["metrics"].get("test_dice_infection")
        raw = metric_csv(arm_root / arm / "eval_seg", "dice_infection")
        per_case[arm] = per_case_values(raw) if raw is not None else {}
    kr.per_seed[-1]["paired"] = paired_differences(per_case)
    kr.per_case.append(per_case)
    arm_sets = {"b_cosingan": lists["b_cosingan"]["seg"], "d_painted_control": lists["d_painted_control"]["seg"]}
    arm_c = c_root / "c_all_real" / "bundles" / "covid_seg_2d"
    after = ("prepare_real", synthesis, arm_stage["c_all_real"])
    done = seed_realism(run, root, real_train, arm_sets, seed, echo, arm_c, f"{tag}_realism", after)
    kr.realism[seed] = done["metrics"]
    walls.append(float(done["wall_s"]))
    kr.wall_s.append(sum(walls))


def slice_name(entry: dict[str, Any]) -> str:
    """A training slice's name: its image file name without the extension (e.g. medseg_0051)."""
    return Path(entry["image"]).name.split(".")[0]


def seed_realism(
    run: RunFolder,
    root: Path,
    real_train: Path,
    arm_sets: dict[str, Path],
    seed: int,
    echo: Echo,
    arm_c: Path,
    name: str,
    after: tuple[str, ...],
) -> dict[str, Any]:
    """Stage `name`: each arm's synthetic set against the real training split (metrics/realism.py), with arm c's
    segmenter `arm_c` (trained on all real slices) as the real-trained segmenter; ROOT/realism/<arm>/realism.*.
    Returns the stage's manifest (its metrics: the key figures per arm)."""

    def body(r: Any) -> None:
        if not (arm_c / "models" / "model.ts").is_file():
            bundles.export_torchscript(arm_c)
        for arm, datalist in arm_sets.items():
            report, _ = run_realism(real_train, datalist, root / "realism" / arm, segmenter=arm_c, seed=seed)
            r.metrics[arm] = key_figures(report)

    return run_stage(run, name, echo, body, after=after)


def realism_table(realism: dict[int, dict[str, dict[str, float | None]]]) -> str:
    """Markdown: the realism key figures of arms b and d against the real training slices, mean over seeds."""
    rows: dict[str, dict[str, float | None]] = {}
    for arm in ("b_cosingan", "d_painted_control"):
        per_seed = [figures[arm] for figures in realism.values() if arm in figures]
        keys = {k for figures in per_seed for k in figures}
        rows[arm] = {k: _mean_or_none([f.get(k) for f in per_seed]) for k in keys}
    seeds = len(realism)
    head = f"Realism of each arm's training set against the real training slices (mean over {seeds} seed(s)):"
    return head + "\n\n" + key_figures_markdown(rows)


def _mean_or_none(values: list[float | None]) -> float | None:
    """Mean of the finite values, None when there are none."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def gap_closure(results: dict[str, dict[str, list[float]]], key: str, arm: str = "b_cosingan") -> float | None:
    """(arm - a) / (c - a) of the seed means for one metric (arm b by default); None when c equals a or is missing."""
    try:
        a, x, c = (float(np.mean(results[name][key])) for name in ("a_real_k_strong_aug", arm, "c_all_real"))
    except (KeyError, ValueError):
        return None
    return None if abs(c - a) < 1e-9 else (x - a) / (c - a)


def _percent(gap: float | None) -> str:
    return "n/a" if gap is None else f"{100 * gap:.0f}%"


def _cell(values: list[float] | None) -> str:
    """mean ± sd over seeds, or n/a."""
    if not values:
        return "n/a"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def results_table(
    results: dict[str, dict[str, list[float]]],
    opts: ExperimentOptions,
    cls_note: str | None = None,
    k: int | None = None,
) -> str:
    """The Markdown results table of one k (mean ± sd over seeds) with the gap-closure line."""
    head = [title for title, _ in SEG_COLUMNS] + ["classifier AUC"]
    lines = ["| arm | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for arm in ARMS:
        cells = [_cell(results[arm].get(key)) for _, key in SEG_COLUMNS] + [_cell(results[arm].get("cls_auc"))]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    for title, key in (("infection Dice", "test_dice_infection"), ("lung Dice", "test_dice_lung")):
        gan, painted = gap_closure(results, key), gap_closure(results, key, "d_painted_control")
        lines.append(
            f"\nGap closure (b - a) / (c - a), {title}: {_percent(gan)} "
            f"(GAN-free control (d - a) / (c - a): {_percent(painted)})"
        )
    if cls_note:
        lines.append(f"\nClassifier AUC n/a: {cls_note}.")
    aug = "strong augmentation in every arm" if opts.strong_aug else "strong augmentation in arm a only"
    lines.append(f"\n{opts.seeds} seed(s), k = {opts.ks[0] if k is None else k}, preset {opts.preset}, {aug}")
    return "\n".join(lines)


def k_table(sweep: list[KResults], opts: ExperimentOptions) -> str:
    """Markdown: infection Dice of every arm per k (mean ± sd over seeds), the gap closures and the wall time per k
    (every stage a k uses, its GANs included, summed over seeds)."""
    key = "test_dice_infection"
    lines = [
        "| k | "
        + " | ".join(ARMS)
        + " | gap closure b | gap closure d | "
        + " | ".join(f"{p}, all seeds [95%]" for p in PAIRS)
        + " | wall time |",
        "|---|" + "---|" * (len(ARMS) + 3 + len(PAIRS)),
    ]
    for kr in sweep:
        cells = [_cell(kr.results[arm].get(key)) for arm in ARMS]
        gaps = [_percent(gap_closure(kr.results, key)), _percent(gap_closure(kr.results, key, "d_painted_control"))]
        pairs = [
            Interval.from_dict(kr.paired_all_seeds[p]).format(signed=True) if p in kr.paired_all_seeds else "n/a"
            for p in PAIRS
        ]
        wall = f"{sum(kr.wall_s) / 60:.0f} min"
        lines.append(f"| {kr.k} | " + " | ".join(cells + gaps + pairs) + f" | {wall} |")
    aug = "strong augmentation in every arm" if opts.strong_aug else "strong augmentation in arm a only"
    head = (
        f"Infection Dice per k (mean ± sd over {opts.seeds} seed(s); seed s's k slices are its k - 1 slices plus "
        f"one; preset {opts.preset}, {aug}; b - a, b - d: paired over the test slices, each slice's Dice averaged "
        f"over the seeds; wall time: every stage of that k, shared GANs and arm c included):"
    )
    return head + "\n\n" + "\n".join(lines)


def paired_differences(per_case: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    """PAIRS' infection-Dice differences over the test slices both arms were scored on, each with a 95% interval
    from a paired bootstrap over test slices (metrics.intervals.paired_difference, seed 0); as JSON."""
    out = {}
    for name, (x, y) in PAIRS.items():
        if per_case.get(x) and per_case.get(y):
            out[name] = paired_difference(per_case[x], per_case[y]).as_dict()
    return out


def seed_mean_per_case(per_case: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Arm -> test slice -> its values averaged over the seeds (the slices every seed scored): one number per test
    slice for "does the method beat the other across choices of training slice", paired across arms."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for arm in ARMS:
        seeds = [pc[arm] for pc in per_case if pc.get(arm)]
        if not seeds:
            continue
        common = sorted(set.intersection(*(set(s) for s in seeds)))
        with np.errstate(invalid="ignore"):  # all-NaN slices (no infection) stay NaN
            out[arm] = {c: np.nanmean(np.stack([s[c] for s in seeds]), axis=0) for c in common}
    return out


def per_seed_table(per_seed: list[dict[str, Any]], pooled: dict[str, dict[str, Any]] | None = None) -> str:
    """Markdown table of each seed's training slice(s), every arm's infection Dice (how much the slice matters) and
    the paired differences b - a and b - d with their 95% intervals (whether one seed's lead is more than noise);
    `pooled` (paired_differences of seed_mean_per_case) adds the same differences over all seeds as a last row."""
    pairs = [p for p in PAIRS if any(p in row.get("paired", {}) for row in per_seed)]
    titles = [*ARMS, *(f"{p} [95%]" for p in pairs)]
    lines = ["| seed | training slice(s) | " + " | ".join(titles) + " |", "|---|---|" + "---|" * len(titles)]
    for row in per_seed:
        cells = ["n/a" if row.get(arm) is None else f"{row[arm]:.3f}" for arm in ARMS]
        diffs = row.get("paired", {})
        cells += [Interval.from_dict(diffs[p]).format(signed=True) if p in diffs else "n/a" for p in pairs]
        lines.append(f"| {row['seed']} | {', '.join(row['slices'])} | " + " | ".join(cells) + " |")
    if pooled and len(per_seed) > 1:
        means = [[row[arm] for row in per_seed if row.get(arm) is not None] for arm in ARMS]
        cells = [f"{np.mean(m):.3f}" if m else "n/a" for m in means]
        cells += [Interval.from_dict(pooled[p]).format(signed=True) if p in pooled else "n/a" for p in pairs]
        lines.append("| all | each test slice's mean over the seeds | " + " | ".join(cells) + " |")
    text = "Infection Dice per seed:\n\n" + "\n".join(lines)
    if pairs:
        text += (
            "\n\nb - a, b - d: paired differences over the test slices both arms were scored on, 95% interval from "
            f"{N_BOOT} bootstrap resamples of test slices; an interval that spans 0 is a tie at that seed. The `all` "
            "row pairs each test slice's Dice averaged over the seeds: its interval covers the test slices' sampling, "
            "not the choice of training slices (read that from the seeds' spread)."
        )
    return text
