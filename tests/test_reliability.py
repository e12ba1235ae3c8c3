"""Reliability of run folders and outputs: one run per folder (a lock that a killed run hands over), resume only with
the same inputs, stale temp files swept, and a full disk reported as `no space left on device: PATH` with nothing
half-written left that looks complete; then a resume finishes."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cosingan_monai.cli import main
from cosingan_monai.core.errors import BundleError, failure_message, no_space_message
from cosingan_monai.core.files import atomic_write_path, remove_stale_temps
from cosingan_monai.phantom.generator import write_phantom_dataset
from cosingan_monai.pipeline import bundle_runner as bundles
from cosingan_monai.pipeline.case_prep import prepare_case
from cosingan_monai.pipeline.downstream import train_bundle
from cosingan_monai.pipeline.pipeline import downstream_skips
from cosingan_monai.pipeline.run_folder import LOCK_NAME, RunFolder, RunFolderError, input_fingerprints

HOLDER = """
import sys, time
from pathlib import Path
from cosingan_monai.pipeline.run_folder import RunFolder, RunFolderError
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
try:
    run = RunFolder(sys.argv[1], resume=sys.argv[3] == "resume")
except RunFolderError as exc:
    print("refused:", exc, flush=True)
    sys.exit(3)
print("locked", flush=True)
time.sleep(120)
"""


def _holder(root: Path, go: Path, mode: str = "fresh") -> subprocess.Popen:
    """A process that opens RUN as a pipeline does once `go` exists, and keeps it (sleeps) until killed."""
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(root), str(go), mode], stdout=subprocess.PIPE, text=True)


def test_a_second_run_is_refused_while_the_first_runs_and_a_killed_runs_lock_is_taken_over(tmp_path):
    root, go = tmp_path / "run", tmp_path / "go"
    go.touch()
    first = _holder(root, go)
    try:
        assert first.stdout.readline().strip() == "locked"
        (root / "manifests" / "train_gan.json").write_text("{}")
        for kwargs in ({"resume": True}, {"force": True}, {}):
            with pytest.raises(RunFolderError, match=rf"another cosingan-monai run \(pid {first.pid}\)"):
                RunFolder(root, **kwargs)
        assert (root / "manifests" / "train_gan.json").exists()  # --force did not delete a running run's files
    finally:
        first.send_signal(signal.SIGKILL)  # kill -9: no cleanup runs, the lock file stays behind
        first.wait()
    assert (root / LOCK_NAME).exists()
    with RunFolder(root, resume=True) as run:  # the kernel dropped the dead run's flock: taken over
        assert (root / LOCK_NAME).read_text().strip() == str(os.getpid())
        with pytest.raises(RunFolderError, match="another cosingan-monai run"):
            RunFolder(root, resume=True)  # one lock per folder, within one process too
        assert run.manifest("train_gan") == {}
    RunFolder(root, resume=True).close()  # closing released it


@pytest.mark.parametrize("round_", range(3))
def test_two_fresh_starts_at_once_exactly_one_wins(tmp_path, round_):
    root, go = tmp_path / "run", tmp_path / "go"
    procs = [_holder(root, go), _holder(root, go)]
    try:
        time.sleep(0.5)  # both started and waiting at the barrier
        go.touch()
        lines = [p.stdout.readline().strip() for p in procs]
        assert sorted(line == "locked" for line in lines) == [False, True], lines
        loser = next(line for line in lines if line != "locked")
        assert "another cosingan-monai run" in loser or "a previous run is there" in loser
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_resume_with_other_inputs_is_refused_naming_what_changed(tmp_path):
    case, label = tmp_path / "case.nii.gz", tmp_path / "label.nii.gz"
    case.write_bytes(b"case v1")
    label.write_bytes(b"label v1")
    options = {"--preset": "test", "--seed": 0, "sizes": {"conditions": 12}}
    RunFolder(tmp_path / "run", inputs=input_fingerprints({"--case": case, "--label": label}, options)).close()
    stored = json.loads((tmp_path / "run" / "run.json").read_text())["inputs"]
    assert stored["--case"]["size"] == 7 and len(stored["--case"]["sha256"]) == 64

    moved = tmp_path / "moved.nii.gz"  # the same bytes under another name is the same input
    shutil.copy(case, moved)
    RunFolder(tmp_path / "run", resume=True, inputs=input_fingerprints({"--case": moved, "--label": label}, options))

    label.write_bytes(b"label v2")
    changed = {**options, "--seed": 1, "sizes": {"conditions": 64}}
    with pytest.raises(RunFolderError) as err:
        RunFolder(tmp_path / "run", resume=True, inputs=input_fingerprints({"--case": case, "--label": label}, changed))
    message = str(err.value)
    assert "--resume with other inputs" in message
    assert "--label: was" in message and "--seed: was 0, now 1" in message and "sizes: was" in message
    assert "--case" not in message  # unchanged inputs are not named
    assert json.loads((tmp_path / "run" / "run.json").read_text())["inputs"] == stored  # the record is kept


def test_stale_temp_files_of_dead_runs_are_swept_and_nothing_else(tmp_path):
    root = tmp_path / "run"
    RunFolder(root).close()
    stale = [
        root / "metrics.json.tmp-4242",
        root / "bundles" / "covid_seg_3d.tmp-4242" / "configs" / "train.json",
        root / "bundles" / "covid_seg_2d" / "models.tmp-77" / "model.pt",
        root / "bundles" / "covid_seg_2d" / "models" / "model.tmp-77.ts",
    ]
    kept = [root / "bundles" / "covid_seg_2d" / "models" / "model.pt", root / "data" / "notes.tmp.txt"]
    for path in stale + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    RunFolder(root, resume=True).close()
    assert [p for p in stale if p.exists()] == []
    assert not (root / "bundles" / "covid_seg_3d.tmp-4242").exists()
    assert not (root / "bundles" / "covid_seg_2d" / "models.tmp-77").exists()
    assert all(p.exists() for p in kept)
    assert remove_stale_temps(root) == []


# ------------------------------------------------------------------------------------------------ disk full


def test_a_full_disk_during_an_atomic_write_names_the_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"the complete old model")
    with pytest.raises(OSError) as err, atomic_write_path(target) as tmp:
        tmp.write_bytes(b"half of the new")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what write() raises: no file name
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    assert no_space_message(err.value) == f"no space left on device: {target}"
    assert target.read_bytes() == b"the complete old model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_no_space_message_finds_enospc_through_wrappers():
    inner = OSError(errno.ENOSPC, "No space left on device", "/data/x.nii.gz")
    try:
        try:
            raise inner
        except OSError as exc:
            raise RuntimeError("stage failed") from exc
    except RuntimeError as outer:
        assert no_space_message(outer) == "no space left on device: /data/x.nii.gz"
    copy_error = shutil.Error([("/src/a", "/dst/a", "[Errno 28] No space left on device")])
    assert no_space_message(copy_error) == "no space left on device: /dst/a"
    assert no_space_message(OSError(errno.EACCES, "Permission denied")) is None


def test_a_bundle_that_runs_out_of_space_raises_enospc_naming_where(tmp_path):
    """A real ENOSPC inside a monai.bundle subprocess (it writes to /dev/full) becomes an OSError, not a bare
    'bundle failed' RuntimeError."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this machine")
    bundle = tmp_path / "full_disk"
    (bundle / "configs").mkdir(parents=True)
    for name in ("metadata.json", "logging.conf"):
        shutil.copy(bundles.bundle_source("covid_seg_2d") / "configs" / name, bundle / "configs" / name)
    config = {"bundle_root": ".", "run": ["$open('/dev/full', 'wb').write(b'x' * 65536)"]}
    (bundle / "configs" / "train.json").write_text(json.dumps(config))
    with pytest.raises(OSError) as err:
        bundles.run_bundle(bundle, "train", "full", {})
    assert err.value.errno == errno.ENOSPC
    assert no_space_message(err.value) == f"no space left on device: {bundle.resolve()}"
    assert "No space left on device" in (bundle / "logs" / "train.log").read_text(encoding="utf-8")


def test_downstream_training_never_leaves_a_partial_model(tmp_path, monkeypatch):
    """MONAI's CheckpointSaver writes in place; train_bundle lets it write into models.tmp-<pid>/ and moves only
    the files of a finished run into models/."""
    calls = []

    def full_disk(bundle, workflow, preset, overrides, **kwargs):
        calls.append(overrides["ckpt_dir"])
        partial = Path(overrides["ckpt_dir"]) / "model.pt"
        partial.parent.mkdir(parents=True)
        partial.write_bytes(b"PK\x03\x04 first half of a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(partial))

    monkeypatch.setattr(bundles, "run_bundle", full_disk)
    with pytest.raises(OSError, match="No space left"):
        train_bundle("covid_seg_2d", tmp_path / "datalist.json", tmp_path, "test")
    bundle = tmp_path / "bundles" / "covid_seg_2d"
    assert Path(calls[0]).parent == bundle and Path(calls[0]).name == f"models.tmp-{os.getpid()}"
    assert not (bundle / "models" / "model.pt").exists()
    assert [p.name for p in bundle.iterdir() if ".tmp-" in p.name] == []

    def finishes(bundle, workflow, preset, overrides, **kwargs):
        ckpt = Path(overrides["ckpt_dir"])
        ckpt.mkdir(parents=True)
        torch.save({"model": {"w": torch.ones(2)}}, ckpt / "model.pt")

    monkeypatch.setattr(bundles, "run_bundle", finishes)
    train_bundle("covid_seg_2d", tmp_path / "datalist.json", tmp_path, "test")
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert torch.equal(state["model"]["w"], torch.ones(2))
    assert [p.name for p in bundle.iterdir() if ".tmp-" in p.name] == []
    shipped = json.loads((bundles.bundle_source("covid_seg_2d") / "configs" / "train.json").read_text())
    assert json.loads((bundle / "configs" / "train.json").read_text())["ckpt_dir"] == shipped["ckpt_dir"]


def test_cli_says_no_space_left_on_device_and_leaves_no_partial_file(tmp_path, monkeypatch):
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith(".nii.gz"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "phantoms"
    result = CliRunner().invoke(main, ["phantom", "--out", str(out), "--cases", "1", "--size", "32", "--slices", "4"])
    assert result.exit_code == 1, result.output
    assert "Error: no space left on device: " in result.output and str(out) in result.output
    assert "Traceback" not in result.output
    assert [p for p in out.rglob("*") if p.is_file() and (".tmp-" in p.name or p.name.endswith(".nii.gz"))] == []


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantom")
    return write_phantom_dataset(root, cases=1, seed=0, size=64, slices=8, healthy_fraction=0.0)[0][0]


def _model_files_load(run: Path) -> list[Path]:
    """Every model.pt in the run loads with weights_only=True (none is truncated); returns them."""
    models = sorted(run.rglob("model.pt"))
    for path in models:
        torch.load(path, map_location="cpu", weights_only=True)
    return models


def test_pipeline_on_a_full_disk_stops_cleanly_and_resume_finishes(case, tmp_path, monkeypatch):
    """The disk fills while the 3D segmenter's bundle is copied (the other trainings run on): one line names the
    file, no half bundle and no truncated model remain, no manifest claims the stage; a resume finishes the run."""
    run = tmp_path / "run"
    real_copyfile = shutil.copyfile

    def copyfile(src, dst, *args, **kwargs):
        if "covid_seg_3d.tmp-" in str(dst) and str(dst).endswith("train.json"):
            Path(dst).write_bytes(Path(src).read_bytes()[:100])  # a partial copy, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real_copyfile(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", copyfile)
    args = ["pipeline", "--case", str(case), "--preset", "test", "--out", str(run)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: no space left on device: ") and "covid_seg_3d.tmp-" in last, last
    assert "Traceback" not in result.output
    assert not list(run.rglob("*.tmp-*")), list(run.rglob("*.tmp-*"))
    assert not (run / "bundles" / "covid_seg_3d").exists()
    assert not (run / "manifests" / "train_covid_seg_3d.json").exists()
    assert not (run / "metrics.json").exists() and not (run / "report.md").exists()
    assert (run / "manifests" / "train_covid_seg_2d.json").exists()  # the sibling training ran to its end
    assert len(_model_files_load(run)) == 3  # GAN, 2D segmenter, classifier: each one whole

    monkeypatch.setattr(shutil, "copyfile", real_copyfile)  # space freed
    result = CliRunner().invoke(main, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert "[train_gan] already finished" in result.output and "[train_covid_seg_2d] already finished" in result.output
    assert "[train_covid_seg_3d] started" in result.output
    assert len(_model_files_load(run)) == 4
    assert json.loads((run / "metrics.json").read_text())["preset"] == "test"
    assert not list(run.rglob("*.tmp-*"))


@pytest.mark.slow
def test_pipeline_on_a_real_full_tmpfs_then_resume_after_freeing_space(case, tmp_path):
    """The issue's probe: a 4 MB tmpfs as --out (needs mount rights; skipped elsewhere, where the patched-copy test
    above stands in). Wherever the disk fills, the message says so, nothing truncated is left, and after the
    tmpfs is grown a resume finishes."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        run = disk / "run"
        args = ["pipeline", "--case", str(case), "--preset", "test", "--out", str(run)]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        assert "no space left on device: " in result.output.strip().splitlines()[-1], result.output
        assert "Traceback" not in result.output
        assert not list(run.rglob("*.tmp-*")), list(run.rglob("*.tmp-*"))
        assert not (run / "metrics.json").exists()
        for manifest in (run / "manifests").glob("*.json"):
            json.loads(manifest.read_text())  # every manifest there is whole
        _model_files_load(run)
        subprocess.run(["mount", "-o", "remount,size=256m", str(disk)], check=True)
        result = CliRunner().invoke(main, [*args, "--resume"])
        assert result.exit_code == 0, result.output
        assert "already finished" in result.output
        assert len(_model_files_load(run)) == 4
        assert (run / "metrics.json").is_file()
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_case_without_infection_skips_the_classifier_with_a_reason(case, tmp_path):
    """No infection anywhere: every synthetic slice would be a negative, so the classifier is not trained."""
    prepared = prepare_case(case)
    assert downstream_skips(prepared) == {}
    prepared.label[prepared.label == 3] = 1
    assert list(downstream_skips(prepared)) == ["covid_slice_classifier"]
    assert "no infection" in downstream_skips(prepared)["covid_slice_classifier"]


@pytest.mark.slow
def test_pipeline_on_a_case_without_infection_warns_and_trains_no_classifier(tmp_path):
    root = tmp_path / "healthy"
    image = write_phantom_dataset(root, cases=1, seed=7, size=64, slices=8, healthy_fraction=1.0)[0][0]
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["pipeline", "--case", str(image), "--preset", "test", "--out", str(run)])
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith(f"warning: {image}: the case has no infection") and "covid_slice_classifier" in first
    assert "[train_covid_slice_classifier]" not in result.output
    assert not (run / "bundles" / "covid_slice_classifier").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert "no infection" in metrics["skipped"]["covid_slice_classifier"]
    assert (run / "bundles" / "covid_seg_2d" / "models" / "model.pt").is_file()


# ------------------------------------------------------------------------------------------------ bundle failures

#: a DataLoader worker's failure as torch logs it: the wrapper first, the worker's chained traceback inside it
WORKER_LOG = """2026-12-01 22:34:25,490 - ignite.engine.engine.SupervisedTrainer - INFO - Engine run resuming
2026-12-01 22:34:25,600 - ignite.engine.engine.SupervisedTrainer - ERROR - Exception: Caught RuntimeError in worker
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/ignite/engine/engine.py", line 1068, in _run_once_on_dataset_as_gen
    batch = next(self._dataloader_iter)
RuntimeError: Caught RuntimeError in DataLoader worker process 0.
Original Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/monai/data/image_reader.py", line 1274, in read
    img = nib.load(name, **kwargs_)
nibabel.filebasedimages.ImageFileError: File /data/images/case_3.nii.gz is not a gzip file

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/monai/transforms/transform.py", line 185, in apply_transform
    raise RuntimeError(f"applying transform {transform}") from e
RuntimeError: applying transform <monai.transforms.io.dictionary.LoadImaged object at 0x7fb17c4ecd10>

"""


def test_the_cause_of_a_failed_bundle_is_the_last_exception_that_is_not_a_wrapper():
    lines = WORKER_LOG.splitlines()
    assert bundles.failure_cause(lines) == "ImageFileError: File /data/images/case_3.nii.gz is not a gzip file"
    own = [*lines, "Traceback (most recent call last):", '  File "x.py", line 1', "KeyError: 'image'"]
    assert bundles.failure_cause(own) == "KeyError: 'image'"  # a real last exception wins over earlier ones
    wrapped_only = ["Traceback (most recent call last):", "  File 'a'", "RuntimeError: applying transform <x>"]
    assert bundles.failure_cause(wrapped_only) == "RuntimeError: applying transform <x>"
    assert bundles.failure_cause(["INFO - started", "Killed", ""]) == "Killed"  # no traceback: the last line
    assert bundles.failure_cause([]) == "the log is empty"


def test_failure_message_finds_a_bundle_error_through_wrappers_and_survives_pickling():
    error = BundleError("covid_seg_2d", "train", 1, "ImageFileError: File /d/a.nii.gz is not a gzip file", "/r/t.log")
    expected = (
        "bundle covid_seg_2d train failed (exit 1): ImageFileError: File /d/a.nii.gz is not a gzip file; log: /r/t.log"
    )
    assert str(error) == expected and failure_message(error) == expected
    try:
        try:
            raise error
        except BundleError as exc:
            raise RuntimeError("stage failed") from exc
    except RuntimeError as outer:
        assert failure_message(outer) == expected
    assert str(pickle.loads(pickle.dumps(error))) == expected
    assert failure_message(RuntimeError("a bug")) is None  # anything else keeps its traceback


def _corrupt_datalist(root: Path) -> tuple[list[str], Path]:
    """train-seg on a datalist whose images are random bytes named .nii.gz: the bundle fails while loading them."""
    rng = np.random.default_rng(0)
    entries = []
    for i in range(2):
        image, label = root / f"img_{i}.nii.gz", root / f"lab_{i}.nii.gz"
        image.write_bytes(rng.bytes(2048))
        label.write_bytes(rng.bytes(2048))
        entries.append({"image": str(image), "label": str(label)})
    datalist = root / "datalist.json"
    datalist.write_text(json.dumps({"training": entries, "validation": entries[:1]}))
    out = root / "out"
    return ["train-seg", "--dims", "2", "--data", str(datalist), "--out", str(out), "--preset", "test"], out


def _slice_out_of_range(root: Path) -> tuple[list[str], Path]:
    """train-gan with --slice 99 on an 8-slice case: the GAN bundle's slice choice refuses it, inside the bundle."""
    image = write_phantom_dataset(root / "case", cases=1, seed=0, size=64, slices=8, healthy_fraction=0.0)[0][0]
    out = root / "out"
    return ["train-gan", "--case", str(image), "--slice", "99", "--preset", "test", "--out", str(out)], out


@pytest.mark.parametrize(
    ("build", "bundle", "names"),
    [
        (_corrupt_datalist, "covid_seg_2d", "img_0.nii.gz is not a gzip file"),
        (_slice_out_of_range, "cosingan_train", "phantom_000.nii.gz: slice 99"),
    ],
    ids=["train-seg-corrupt-nifti", "train-gan-slice-out-of-range"],
)
def test_a_failed_bundle_is_one_error_naming_the_bundle_the_cause_and_the_log(tmp_path, build, bundle, names):
    """A bundle that fails inside (not a full disk): the console process exits 1 with one `Error:` line naming
    the bundle, its workflow, the cause line of its log (which names the file) and the log; no traceback."""
    args, out = build(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "cosingan_monai.cli", *args], capture_output=True, text=True, check=False, timeout=600
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, proc.stderr
    log = out.resolve() / "bundles" / bundle / "logs" / "train.log"
    assert errors[0].startswith(f"Error: bundle {bundle} train failed (exit 1): "), errors[0]
    assert errors[0].endswith(f"; log: {log}"), errors[0]
    assert names in errors[0], errors[0]
    cause = errors[0].split(": ", 2)[2].rsplit("; log: ", 1)[0]
    # quoted from the log (less the module path)
    assert cause.split(": ", 1)[1] in log.read_text(encoding="utf-8"), cause


# ------------------------------------------------------------------------------------------------ kill -9

#: (stage kind, the stage killed, the log whose marker says its bundle is at work): the GAN between two scales,
#: sampling once its bundle started, a downstream training after its first epoch, an evaluation once it started
DOWNSTREAM = ("covid_slice_classifier", "covid_seg_2d", "covid_seg_3d")
KILL_POINTS = (
    ("train_gan", ("train_gan",), "bundles/cosingan_train/logs/train.log", "cosingan_monai.train - INFO - scale 0 ("),
    ("sample", ("sample",), "bundles/cosingan_sample/logs/inference.log", "input summary"),
    ("train_covid_seg_2d", ("train_covid_seg_2d",), "bundles/covid_seg_2d/logs/train.log", "Epoch: 1/"),
    ("eval_*", ("eval_covid_seg_2d", "eval_covid_slice_classifier"), "bundles/*/logs/evaluate.log", "input summary"),
)


def _start_pipeline(args: list[str], log: Path) -> subprocess.Popen:
    """The real console process in its own process group (its bundle subprocesses join it), stdout to `log`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # a SIGKILL loses buffered output
    with open(log, "w") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "cosingan_monai.cli", *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def _wait_for(proc: subprocess.Popen, log: Path, ready, timeout: float = 900) -> None:
    """Poll until `ready()` (or fail when the pipeline ended first or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() >= deadline:
            tail = log.read_text(encoding="utf-8")[-3000:]
            assert proc.poll() is None, f"the pipeline ended (exit {proc.returncode}) first:\n{tail}"
            raise AssertionError(f"timed out:\n{tail}")
        time.sleep(0.1)


def _kill_group(proc: subprocess.Popen, run: Path) -> None:
    """kill -9 of the pipeline's whole process group, then wait until no process of it holds the run folder's
    lock (flock on RUN/.lock directly: a RunFolder would sweep the temp files the next run must sweep itself)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 60
    with open(run / LOCK_NAME, "rb") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(lock, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                assert time.monotonic() < deadline, "a killed bundle still holds the run folder"
                time.sleep(0.1)


@pytest.mark.slow
def test_kill_9_at_every_stage_kind_then_resume_finishes(case, tmp_path):
    """kill -9 (the whole process group) while GAN training, sampling, a downstream training and an evaluation run.

    One run folder, killed four times in turn: kill during train_gan, resume, kill that resumed run during sample,
    resume, and so on; the fifth invocation runs to its end. Sequential because a test-preset pipeline alone takes
    ~5 min on the shared 2-core machine; one fresh pipeline per kind would take four times that. Each kill must
    land in its stage (no manifest for it); every stage finished before a kill is skipped by the next run and its
    manifest keeps its mtime to the end; the last run exits 0 with metrics.json, whole model files and no *.tmp-*.
    Measured: 301 s and 229 s in two runs on the shared, loaded 2-core machine (one uninterrupted run of the same
    pipeline there: 324 s).
    """
    eval_dir = tmp_path / "eval"
    write_phantom_dataset(eval_dir, cases=2, seed=50, size=64, slices=8, healthy_fraction=0.5)
    run = tmp_path / "run"
    args = ["pipeline", "--case", str(case), "--preset", "test", "--out", str(run), "--eval", str(eval_dir)]
    finished: dict[str, int] = {}  # stage -> manifest mtime when first seen finished
    leftovers: list[Path] = []  # the *.tmp-* files and folders the kills left for the next run to sweep
    for i, (kind, stages, log_glob, marker) in enumerate(KILL_POINTS):
        out = tmp_path / f"invocation_{i}.txt"
        proc = _start_pipeline(args if i == 0 else [*args, "--resume"], out)
        try:

            def at_work(log_glob=log_glob, marker=marker) -> bool:
                return any(marker in p.read_text(errors="replace") for p in run.glob(log_glob))

            _wait_for(proc, out, at_work)
        finally:
            _kill_group(proc, run)
        output = out.read_text(encoding="utf-8")
        leftovers += run.rglob("*.tmp-*")
        manifests = {p.stem: p.stat().st_mtime_ns for p in (run / "manifests").glob("*.json")}
        killed = [s for s in stages if f"[{s}] started" in output and s not in manifests]
        assert killed, f"kill during {kind} did not land in {stages}:\n{output}"
        for stage in finished:  # the earlier kills' finished stages were skipped, not redone
            assert f"[{stage}] already finished" in output, (kind, stage, output)
        for stage, mtime in manifests.items():
            finished.setdefault(stage, mtime)
    assert {"validate", "select", "train_gan", "sample", "train_covid_seg_2d"} <= set(finished), finished
    assert any("models.tmp-" in p.name for p in leftovers), leftovers  # the staged checkpoints of a killed training

    result = subprocess.run(
        [sys.executable, "-m", "cosingan_monai.cli", *args, "--resume"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for stage, mtime in finished.items():
        assert f"[{stage}] already finished" in result.stdout, stage
        assert (run / "manifests" / f"{stage}.json").stat().st_mtime_ns == mtime, stage
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["evaluation"]) == {*DOWNSTREAM, "covid_seg_2d_baseline"}
    assert len(_model_files_load(run)) == 5  # the GAN and four downstream models, each one whole
    assert not list(run.rglob("*.tmp-*")), list(run.rglob("*.tmp-*"))
