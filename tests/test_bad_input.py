"""Every kind of bad input a new user might give, one row each: the CLI exits with the expected code and a message
that names the problem, prints no traceback, writes no run folder where it must not, and leaves every input file
byte-identical. Validation happens before any training, so the whole table runs in seconds."""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cosingan_monai.cli import main
from cosingan_monai.phantom.generator import write_phantom_dataset
from cosingan_monai.pipeline.pipeline import PipelineOptions, check_inputs
from cosingan_monai.pipeline.run_folder import RunFolder

CT_DIR, LABEL_DIR = "COVID-19-CT-Seg_20cases", "Lung_and_Infection_Mask"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Shared good inputs (never written by any row): a training case, a healthy case and an evaluation set."""
    root = tmp_path_factory.mktemp("good")
    train = write_phantom_dataset(root / "train", cases=1, seed=0, size=64, slices=8, healthy_fraction=0.0)
    healthy = write_phantom_dataset(root / "healthy", cases=1, seed=7, size=64, slices=8, healthy_fraction=1.0)
    write_phantom_dataset(root / "eval", cases=2, seed=50, size=64, slices=8, healthy_fraction=0.5)
    return {
        "root": root,
        "image": train[0][0],
        "label": train[0][1],
        "healthy": healthy[0][0],
        "eval": root / "eval",
    }


@dataclass
class Ctx:
    """What a row's builder gets: the shared good inputs, a folder for its own inputs, and a folder for outputs."""

    data: dict[str, Path]
    inputs: Path
    outputs: Path
    monkeypatch: pytest.MonkeyPatch
    cleanup: list[Callable[[], None]]

    def nifti(self, name: str, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
        """Write an input NIfTI (float32 unless the array is integer)."""
        path = self.inputs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
        return path

    def file(self, name: str, content: bytes) -> Path:
        path = self.inputs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return path

    def png(self, name: str, array: np.ndarray, mode: str = "L") -> Path:
        path = self.inputs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array, mode=mode).save(path)
        return path

    def hu(self) -> tuple[np.ndarray, np.ndarray]:
        """The good case's HU array and affine (a copy)."""
        img = nib.load(self.data["image"])
        return np.asarray(img.dataobj, dtype=np.float32).copy(), img.affine

    def lab(self) -> tuple[np.ndarray, np.ndarray]:
        img = nib.load(self.data["label"])
        return np.asarray(img.dataobj).astype(np.uint8), img.affine

    def pipeline(self, *args: str, out: Path | None = None) -> list[str]:
        """`pipeline` arguments in the test preset with the good case unless the row gives its own --case."""
        case = [] if "--case" in args else ["--case", str(self.data["image"])]
        return ["pipeline", *case, "--preset", "test", "--out", str(out or self.outputs / "run"), *args]

    def inspect(self, case: Path, *args: str) -> list[str]:
        return ["inspect", "--case", str(case), *args]

    def run_folder_of(self, **options) -> Path:
        """A run folder as a pipeline started with these options leaves it (run.json with its input fingerprints)."""
        opts = PipelineOptions(**{"case": self.data["image"], "preset": "test", "out": self.outputs / "run", **options})
        _, inputs, _ = check_inputs(opts, echo=lambda *_: None)
        RunFolder(opts.out, inputs=inputs).close()
        return opts.out

    def hold_lock(self, run: Path) -> None:
        """Start another process that holds the run folder the way a running pipeline does, until the row ends."""
        code = (
            "import sys, time; from cosingan_monai.pipeline.run_folder import RunFolder; "
            "r = RunFolder(sys.argv[1], resume=True); print('locked', flush=True); time.sleep(120)"
        )
        proc = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        self.cleanup.append(lambda: (proc.kill(), proc.wait()))


def crafted_pickle(path: Path) -> Path:
    """A model file whose unpickling would run a shell command (it must be refused without being loaded)."""

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {path.parent / 'PWNED'}",))

    torch.save({"format": "cosingan-monai/model-v1", "config": Evil()}, path)
    return path


def _gz_truncated(path: Path) -> bytes:
    return path.read_bytes()[: path.stat().st_size // 2]


# ------------------------------------------------------------------------------------------------ the rows
# (id, builder -> CLI args, message that must appear (case-insensitive), exit code)
Row = tuple[str, Callable[[Ctx], list[str]], str, int]


def _hu_with(value: float) -> Callable[[Ctx], list[str]]:
    def build(c: Ctx) -> list[str]:
        hu, aff = c.hu()
        hu[10, 20, 3] = value
        return c.inspect(c.nifti("spike.nii.gz", hu, aff), "--label", str(c.data["label"]))

    return build


def _label_with(edit: Callable[[np.ndarray], np.ndarray], dtype=np.uint8) -> Callable[[Ctx], list[str]]:
    def build(c: Ctx) -> list[str]:
        lab, aff = c.lab()
        return c.inspect(c.data["image"], "--label", str(c.nifti("label.nii.gz", edit(lab).astype(dtype), aff)))

    return build


def _affine_shifted(c: Ctx) -> list[str]:
    lab, aff = c.lab()
    aff = aff.copy()
    aff[0, 3] += 5.0
    return c.inspect(c.data["image"], "--label", str(c.nifti("label.nii.gz", lab, aff)))


def _mixed_png_folder(c: Ctx) -> list[str]:
    c.png("slices/a.png", np.full((32, 32), 100, np.uint8) + np.eye(32, dtype=np.uint8))
    c.png("slices/b.png", np.full((40, 32), 100, np.uint8))
    return c.inspect(c.inputs / "slices")


def _empty_folder(c: Ctx) -> list[str]:
    (c.inputs / "empty").mkdir()
    return c.inspect(c.inputs / "empty")


def _eval_png(c: Ctx) -> list[str]:
    c.png("evalpng/images/a.png", (np.arange(64 * 64).reshape(64, 64) % 251).astype(np.uint8))
    c.png("evalpng/masks/a.png", np.zeros((64, 64), np.uint8))
    return c.pipeline("--eval", str(c.inputs / "evalpng"))


def _eval_without_label(c: Ctx) -> list[str]:
    shutil.copy(c.data["image"], (c.inputs / CT_DIR).mkdir(parents=True) or c.inputs / CT_DIR / "case.nii.gz")
    return c.pipeline("--eval", str(c.inputs))


def _eval_corrupt(c: Ctx) -> list[str]:
    shutil.copytree(c.data["eval"], c.inputs / "eval")
    bad = c.inputs / "eval" / CT_DIR / "phantom_001.nii.gz"
    bad.write_bytes(_gz_truncated(bad))
    return c.pipeline("--eval", str(c.inputs / "eval"))


def _eval_mislabelled(c: Ctx) -> list[str]:
    shutil.copytree(c.data["eval"], c.inputs / "eval")
    lab = c.inputs / "eval" / LABEL_DIR / "phantom_000.nii.gz"
    img = nib.load(lab)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:-2].astype(np.uint8), img.affine), lab)
    return c.pipeline("--eval", str(c.inputs / "eval"))


def _no_label_found(c: Ctx) -> list[str]:
    return c.pipeline("--case", str(shutil.copy(c.data["image"], c.inputs / "lonely.nii.gz")))


def _no_lung(c: Ctx) -> list[str]:
    hu, aff = c.hu()
    lab, _ = c.lab()
    hu[hu < -200] = 40.0  # lungs, airways and outside air become soft tissue: nothing lung-like is left
    hu[:3], hu[-3:], hu[:, :3], hu[:, -3:] = -1000.0, -1000.0, -1000.0, -1000.0
    image = c.nifti("solid.nii.gz", hu, aff)
    label = c.nifti("empty_label.nii.gz", np.zeros_like(lab), aff)
    return c.pipeline("--case", str(image), "--label", str(label))


def _resume_other(**changed) -> Callable[[Ctx], list[str]]:
    """A run started with the good inputs, resumed with one of them changed."""

    def build(c: Ctx) -> list[str]:
        args: list[str] = []
        if changed.pop("label", False):  # same path, other content: a label edited between the two runs
            label = shutil.copy(c.data["label"], c.inputs / "label.nii.gz")
            run = c.run_folder_of(label=label)
            lab, aff = c.lab()
            nib.save(nib.Nifti1Image(np.where(lab == 3, 1, lab).astype(np.uint8), aff), label)
            args += ["--label", str(label)]
        else:
            run = c.run_folder_of()
        if changed.pop("case", False):  # another case of the same layout (its label is found beside it)
            hu, aff = c.hu()
            other = c.nifti(f"{CT_DIR}/phantom_000.nii.gz", hu + 1.0, aff)
            c.nifti(f"{LABEL_DIR}/phantom_000.nii.gz", c.lab()[0], aff)
            args += ["--case", str(other)]
        for key, value in changed.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        return c.pipeline(*args, "--resume", out=run)

    return build


def _locked(*extra: str, fresh: bool = False) -> Callable[[Ctx], list[str]]:
    def build(c: Ctx) -> list[str]:
        run = c.outputs / "run"
        if not fresh:
            run = c.run_folder_of()
        c.hold_lock(run)
        return c.pipeline(*extra, out=run)

    return build


def _existing_run(c: Ctx) -> list[str]:
    return c.pipeline(out=c.run_folder_of())


def _foreign_out(c: Ctx) -> list[str]:
    c.file("mine/precious.txt", b"keep me")
    return c.pipeline(out=c.inputs / "mine")


def _read_only_out(c: Ctx) -> list[str]:
    """A read-only file system: mkdir raises EROFS (patched, so the row runs without a mount)."""
    real = os.mkdir

    def mkdir(path, *args, **kwargs):
        if str(path).startswith(str(c.outputs)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real(path, *args, **kwargs)

    c.monkeypatch.setattr(os, "mkdir", mkdir)
    return c.pipeline()


def _sample(model: Callable[[Ctx], Path]) -> Callable[[Ctx], list[str]]:
    def build(c: Ctx) -> list[str]:
        return ["sample", "--model", str(model(c)), "--conditions", str(c.data["label"]), "--out", str(c.outputs / "s")]

    return build


def _datalist(c: Ctx, payload: dict | str) -> Path:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return c.file("datalist.json", text.encode())


def _train(cmd: str, data: Callable[[Ctx], Path], *extra: str) -> Callable[[Ctx], list[str]]:
    return lambda c: [cmd, "--data", str(data(c)), "--out", str(c.outputs / "t"), "--preset", "test", *extra]


def _seg2d(data: Callable[[Ctx], Path]) -> Callable[[Ctx], list[str]]:
    return _train("train-seg", data, "--dims", "2")


def _png_dataset(c: Ctx, mask: bool = True) -> Path:
    c.png("pngset/images/a.png", (np.arange(64 * 64).reshape(64, 64) % 251).astype(np.uint8))
    if mask:
        c.png("pngset/masks/a.png", np.zeros((64, 64), np.uint8))
    return c.inputs / "pngset"


def _experiment(*extra: str, dataset: Callable[[Ctx], Path] | None = None) -> Callable[[Ctx], list[str]]:
    def build(c: Ctx) -> list[str]:
        ds = dataset(c) if dataset else c.data["eval"]
        return ["experiment", "--dataset", str(ds), "--preset", "test", "--out", str(c.outputs / "x"), *extra]

    return build


def _empty_dir(name: str) -> Callable[[Ctx], Path]:
    def make(c: Ctx) -> Path:
        (c.inputs / name).mkdir(parents=True)
        return c.inputs / name

    return make


ROWS: list[Row] = [
    # --- case files (inspect) ------------------------------------------------------------------------------
    ("missing-case", lambda c: c.inspect(c.inputs / "nope.nii.gz"), "does not exist", 1),
    ("empty-nifti", lambda c: c.inspect(c.file("e.nii.gz", b"")), "empty (0 bytes)", 1),
    ("truncated-nifti", lambda c: c.inspect(c.file("t.nii.gz", _gz_truncated(c.data["image"]))), "cannot be read", 1),
    ("random-nifti", lambda c: c.inspect(c.file("r.nii.gz", os.urandom(4096))), "cannot be read as nifti", 1),
    ("random-nii", lambda c: c.inspect(c.file("r.nii", os.urandom(4096))), "cannot be read as nifti", 1),
    ("gzip-of-junk", lambda c: c.inspect(c.file("g.nii.gz", gzip.compress(os.urandom(999)))), "cannot be read", 1),
    ("random-png", lambda c: c.inspect(c.file("r.png", os.urandom(2048))), "cannot be read as png", 1),
    ("random-dicom", lambda c: c.inspect(c.file("r.dcm", os.urandom(2048))), "cannot be read by simpleitk", 1),
    ("text-file", lambda c: c.inspect(c.file("notes.txt", b"hello")), "unsupported format", 1),
    (
        "4d-two-volumes",
        lambda c: c.inspect(c.nifti("4d.nii.gz", np.random.rand(8, 8, 4, 2).astype(np.float32))),
        "expected one 2d or 3d volume",
        1,
    ),
    (
        "1d",
        lambda c: c.inspect(c.nifti("1d.nii.gz", np.linspace(-1000, 0, 64, dtype=np.float32))),
        "expected a 2d slice",
        1,
    ),
    (
        "1-pixel-wide",
        lambda c: c.inspect(c.nifti("thin.nii.gz", np.linspace(-1000, 0, 64, dtype=np.float32)[None])),
        "at least 2 x 2",
        1,
    ),
    ("nan-voxel", _hu_with(np.nan), "nan/inf", 1),
    ("inf-voxel", _hu_with(np.inf), "nan/inf", 1),
    ("constant", lambda c: c.inspect(c.nifti("k.nii.gz", np.full((16, 16, 4), -1000, np.float32))), "constant", 1),
    ("hu-1e30", _hu_with(1e30), "implausible intensity 1e+30", 1),
    ("hu-3e38", _hu_with(3e38), "implausible intensity 3e+38", 1),
    ("hu-minus-2e5", _hu_with(-2e5), "implausible intensity -200000", 1),
    (
        "windowed-1e30",
        lambda c: c.inspect(
            c.nifti("w.nii.gz", np.where(np.eye(16)[..., None] > 0, 1e30, 100.0).repeat(2, -1).astype(np.float32))
        ),
        "implausible intensity",
        1,
    ),
    (
        "neither-hu-nor-windowed",
        lambda c: c.inspect(c.nifti("n.nii.gz", np.linspace(0, 4000, 1024, dtype=np.float32).reshape(16, 16, 4))),
        "cannot tell",
        1,
    ),
    ("forced-windowed-on-hu", lambda c: c.inspect(c.data["image"], "--intensity", "windowed"), "not 0-255", 1),
    ("label-map-as-case", lambda c: c.inspect(c.data["label"]), "looks like a label map", 1),
    (
        "label-map-as-case-forced-hu",
        lambda c: c.inspect(c.data["label"], "--intensity", "hu"),
        "looks like a label map",
        1,
    ),
    (
        "infection-mask-as-case",
        lambda c: c.inspect(c.nifti("inf.nii.gz", (c.lab()[0] == 3).astype(np.uint8))),
        "looks like a label map",
        1,
    ),
    (
        "png-mask-as-case",
        lambda c: c.inspect(c.png("m.png", (np.eye(64) * 255).astype(np.uint8))),
        "looks like a label map",
        1,
    ),
    (
        "rgb-photo",
        lambda c: c.inspect(
            c.png("p.png", np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8), "RGB")
        ),
        "true-colour",
        1,
    ),
    ("png-folder-mixed-shapes", _mixed_png_folder, "differs", 1),
    ("empty-folder", _empty_folder, "holds no dicom series", 1),
    ("degenerate-affine", lambda c: c.inspect(c.nifti("z.nii", c.hu()[0], np.diag([1, 1, 1e-20, 1]))), "degenerate", 1),
    # --- label files (inspect) -----------------------------------------------------------------------------
    (
        "label-missing",
        lambda c: c.inspect(c.data["image"], "--label", str(c.inputs / "nope.nii.gz")),
        "does not exist",
        1,
    ),
    ("label-empty-file", lambda c: c.inspect(c.data["image"], "--label", str(c.file("l.nii.gz", b""))), "empty", 1),
    (
        "label-truncated",
        lambda c: c.inspect(c.data["image"], "--label", str(c.file("l.nii.gz", _gz_truncated(c.data["label"])))),
        "cannot be read",
        1,
    ),
    ("label-shape", _label_with(lambda x: x[:-4]), "label shape", 1),
    ("label-affine", _affine_shifted, "label affine differs", 1),
    ("label-value-7", _label_with(lambda x: np.where(x == 3, 7, x)), "outside both conventions", 1),
    ("label-negative", _label_with(lambda x: x.astype(np.int16) - 1, np.int16), "outside 0..255", 1),
    ("label-fractional", _label_with(lambda x: x * 0.5, np.float32), "non-integer", 1),
    ("label-nan", _label_with(lambda x: np.where(x == 3, np.nan, x), np.float32), "nan/inf", 1),
    ("label-is-the-ct", lambda c: c.inspect(c.data["image"], "--label", str(c.data["image"])), "values outside", 1),
    (
        "label-kind-mismatch",
        lambda c: c.inspect(c.data["image"], "--label", str(c.data["label"]), "--label-kind", "infection-only"),
        "not allowed",
        1,
    ),
    (
        "label-all-background-forced",
        lambda c: c.inspect(
            c.data["image"],
            "--label",
            str(c.nifti("z.nii.gz", c.lab()[0] * 0, c.lab()[1])),
            "--label-kind",
            "lungs+infection",
        ),
        "lung mask is empty",
        1,
    ),
    # --- pipeline: --out -----------------------------------------------------------------------------------
    ("out-is-a-file", lambda c: c.pipeline(out=c.file("out.txt", b"x")), "is an existing file", 1),
    ("out-under-a-file", lambda c: c.pipeline(out=c.file("out.txt", b"x") / "run"), "which is a file", 1),
    ("out-read-only-fs", _read_only_out, "read-only file system", 1),
    ("out-foreign-folder", _foreign_out, "not a cosingan-monai run folder", 1),
    ("out-existing-run", _existing_run, "pass --resume to continue it or --force", 1),
    # --- pipeline: options ---------------------------------------------------------------------------------
    ("train-slices-0", lambda c: c.pipeline("--train-slices", "0"), "--train-slices must be at least 1, got 0", 1),
    ("train-slices-negative", lambda c: c.pipeline("--train-slices", "-1"), "at least 1, got -1", 1),
    ("train-slices-too-many", lambda c: c.pipeline("--train-slices", "99"), "only 7 of its 8 slices hold lung", 1),
    ("preset-unknown", lambda c: c.pipeline("--preset", "huge"), "invalid value for '--preset'", 2),
    ("parallel-stages-0", lambda c: c.pipeline("--parallel-stages", "0"), "invalid value for '--parallel-stages'", 2),
    ("case-missing", lambda c: c.pipeline("--case", str(c.inputs / "nope.nii.gz")), "does not exist", 2),
    # --- pipeline: --eval ----------------------------------------------------------------------------------
    ("eval-empty-folder", lambda c: c.pipeline("--eval", str(_empty_dir("ev")(c))), "found in any of", 1),
    ("eval-is-a-file", lambda c: c.pipeline("--eval", str(c.data["image"])), "must be a folder", 1),
    ("eval-png-slices", _eval_png, "needs nifti volumes", 1),
    ("eval-case-without-label", _eval_without_label, "has no label", 1),
    ("eval-case-corrupt", _eval_corrupt, "cannot be read", 1),
    ("eval-label-shape", _eval_mislabelled, "label shape", 1),
    # --- pipeline: the case --------------------------------------------------------------------------------
    ("pipeline-label-map-as-case", lambda c: c.pipeline("--case", str(c.data["label"])), "looks like a label map", 1),
    ("pipeline-no-label-found", _no_label_found, "no label map given", 1),
    ("pipeline-no-lung", _no_lung, "no lung found", 1),
    (
        "pipeline-1e30",
        lambda c: c.pipeline("--case", _hu_with(1e30)(c)[2], "--label", str(c.data["label"])),
        "implausible intensity",
        1,
    ),
    (
        "pipeline-label-shape",
        lambda c: c.pipeline("--label", _label_with(lambda x: x[:, :-2])(c)[-1]),
        "label shape",
        1,
    ),
    (
        "no-infection-warns",
        lambda c: c.pipeline("--case", str(c.data["healthy"]), out=c.file("f", b"x")),
        "has no infection",
        1,
    ),
    # --- pipeline: --resume with other inputs, and the lock --------------------------------------------------
    ("resume-other-case", _resume_other(case=True), "--case: was", 1),
    ("resume-edited-label", _resume_other(label=True), "--label: was", 1),
    (
        "resume-other-preset",
        lambda c: [
            "pipeline",
            "--case",
            str(c.data["image"]),
            "--preset",
            "demo",
            "--out",
            str(c.run_folder_of()),
            "--resume",
        ],
        '--preset: was "test"',
        1,
    ),
    ("resume-other-train-slices", _resume_other(train_slices=2), "--train-slices: was 1, now 2", 1),
    ("resume-other-seed", _resume_other(seed=5), "--seed: was 0, now 5", 1),
    (
        "resume-added-eval",
        lambda c: c.pipeline("--eval", str(c.data["eval"]), "--resume", out=c.run_folder_of()),
        "--eval: was none",
        1,
    ),
    ("resume-while-running", _locked("--resume"), "another cosingan-monai run", 1),
    ("force-while-running", _locked("--force"), "another cosingan-monai run", 1),
    ("fresh-start-while-running", _locked(fresh=True), "another cosingan-monai run", 1),
    # --- sample: model files ---------------------------------------------------------------------------------
    (
        "sample-crafted-pickle",
        _sample(lambda c: crafted_pickle(c.inputs / "evil.pt")),
        "holds non-tensor objects (posix.system); refused unloaded",
        1,
    ),
    (
        "sample-truncated-model",
        _sample(lambda c: c.file("m.pt", b"PK\x03\x04" + os.urandom(100))),
        "corrupt or partial",
        1,
    ),
    ("sample-empty-model", _sample(lambda c: c.file("m.pt", b"")), "file is empty", 1),
    (
        "sample-foreign-model",
        _sample(lambda c: (torch.save({"weights": torch.zeros(2)}, c.inputs / "m.pt"), c.inputs / "m.pt")[1]),
        "m.pt: not a cosingan model",
        1,
    ),
    (
        "sample-nothing-to-do",
        lambda c: ["sample", "--model", str(c.data["image"]), "--out", str(c.outputs / "s")],
        "give --conditions",
        2,
    ),
    # --- train-gan -------------------------------------------------------------------------------------------
    (
        "train-gan-label-map",
        lambda c: ["train-gan", "--case", str(c.data["label"]), "--out", str(c.outputs / "g")],
        "looks like a label map",
        1,
    ),
    (
        "train-gan-1e30",
        lambda c: [
            "train-gan",
            "--case",
            _hu_with(1e30)(c)[2],
            "--label",
            str(c.data["label"]),
            "--out",
            str(c.outputs / "g"),
        ],
        "implausible intensity",
        1,
    ),
    (
        "train-gan-bad-slice",
        lambda c: ["train-gan", "--case", str(c.data["image"]), "--slice", "middle", "--out", str(c.outputs / "g")],
        "neither an integer",
        2,
    ),
    # --- train-seg / train-cls -------------------------------------------------------------------------------
    (
        "train-seg-no-validation",
        _train("train-seg", lambda c: _datalist(c, {"training": [{"image": "a"}]}), "--dims", "2"),
        "no 'validation' entries",
        1,
    ),
    ("train-seg-datalist-is-a-list", _seg2d(lambda c: _datalist(c, "[]")), "json object", 1),
    ("train-seg-json-junk", _seg2d(lambda c: _datalist(c, "{not json")), "datalist.json: not readable json", 1),
    ("train-seg-3d-from-png", _train("train-seg", _png_dataset, "--dims", "3"), "cannot train a 3d model", 1),
    ("train-seg-png-without-mask", _train("train-seg", lambda c: _png_dataset(c, False), "--dims", "2"), "no mask", 1),
    ("train-cls-empty-folder", _train("train-cls", _empty_dir("ds")), "found in any of", 1),
    ("train-cls-epochs-0", _train("train-cls", lambda c: c.data["eval"], "--epochs", "0"), "invalid value", 2),
    # --- experiment ------------------------------------------------------------------------------------------
    ("experiment-empty-dataset", _experiment(dataset=_empty_dir("ds")), "found in any of", 1),
    ("experiment-png-without-mask", _experiment(dataset=lambda c: _png_dataset(c, mask=False)), "has no mask", 1),
    ("experiment-k-0", _experiment("--k", "0"), "--k must be at least 1", 1),
    ("experiment-seeds-0", _experiment("--seeds", "0"), "--seeds must be at least 1", 1),
    ("experiment-empty-test", lambda c: _experiment("--test", str(_empty_dir("t")(c)))(c), "found in any of", 1),
    (
        "experiment-out-is-a-file",
        lambda c: [*_experiment()(c)[:-2], "--out", str(c.file("o", b"x"))],
        "is an existing file",
        1,
    ),
    (
        "experiment-while-running",
        lambda c: (c.hold_lock(c.outputs / "x"), _experiment("--resume")(c))[1],
        "another cosingan-monai run",
        1,
    ),
    # --- label-app -------------------------------------------------------------------------------------------
    (
        "label-app-missing-run",
        lambda c: ["label-app", "--run", str(c.inputs / "norun"), "--out", str(c.outputs / "a")],
        "norun: run folder does not exist",
        1,
    ),
]


def _hashes(*roots: Path) -> dict[str, str]:
    """sha256 of every file under the roots (the inputs a row may not modify)."""
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for root in roots
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_table_has_enough_kinds_of_bad_input():
    ids = [row[0] for row in ROWS]
    assert len(ids) == len(set(ids))
    assert sum(1 for row in ROWS if row[3] != 0) >= 60


@pytest.mark.parametrize(("name", "build", "message", "code"), ROWS, ids=[row[0] for row in ROWS])
def test_bad_input_is_refused_cleanly(data, tmp_path, monkeypatch, name, build, message, code):
    ctx = Ctx(data, tmp_path / "in", tmp_path / "out", monkeypatch, [])
    ctx.inputs.mkdir()
    ctx.outputs.mkdir()
    try:
        args = build(ctx)
        before = _hashes(data["root"], ctx.inputs)
        runs_before = {p.name for p in ctx.outputs.iterdir()}
        start = time.perf_counter()
        result = CliRunner().invoke(main, args)
        wall = time.perf_counter() - start
    finally:
        for undo in ctx.cleanup:
            undo()
    output = result.output
    assert result.exit_code == code, f"{name}: exit {result.exit_code}\n{output}\n{result.exception!r}"
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output
    assert message.lower() in output.lower(), output
    assert _hashes(data["root"], ctx.inputs) == before, "an input file was modified"
    assert not (ctx.inputs / "PWNED").exists(), "a crafted pickle was unpickled"
    if code != 0:
        # nothing was started: no new run folder (a refused resume leaves the one that was there)
        assert {p.name for p in ctx.outputs.iterdir()} <= runs_before, sorted(ctx.outputs.iterdir())
        assert "] started" not in output
        assert wall < 30, f"{name} took {wall:.1f} s: validation must come before any work"
