"""A pipeline run folder: refuses to clobber earlier runs, and keeps one manifest per finished stage for --resume."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cosingan_monai.core.files import file_fingerprint, read_json, remove_stale_temps, write_json

RUN_MARKER = "run.json"
#: the lock file of a run folder: one run at a time per folder (flock), holding the pid of the run that has it
LOCK_NAME = ".lock"


class RunFolderError(RuntimeError):
    """The run folder cannot be used as asked (exists without --resume/--force, is not a run folder, is locked by
    another run, holds a run of other inputs, or cannot be created)."""


@dataclass
class StageResult:
    """What a stage hands back: output paths and figures worth recording in its manifest."""

    outputs: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def check_out(root: str | Path) -> Path:
    """Refuse an --out that cannot be a run folder (an existing file, a path under a file, an unwritable parent)
    before anything is written; returns it absolute."""
    path = Path(root).absolute()
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{path}: --out is an existing file, not a folder; pick another --out")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RunFolderError(f"{path}: --out lies under {ancestor}, which is a file, not a folder; pick another --out")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise RunFolderError(f"{path}: --out cannot be created: {ancestor} is not writable; pick another --out")
    return path


def input_fingerprints(files: dict[str, str | Path | None], options: dict[str, Any]) -> dict[str, Any]:
    """What a run was started from: size + sha256 of each input file or folder (None: not given) and the options;
    stored in run.json so that --resume with other inputs is refused."""
    out: dict[str, Any] = {name: (file_fingerprint(p) if p is not None else None) for name, p in files.items()}
    out.update(options)
    return out


def fingerprint_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The inputs that differ between two `input_fingerprints` (a moved but identical file is no change)."""

    def show(value: Any) -> str:
        if isinstance(value, dict) and "sha256" in value:
            return f"{value['path']} ({value['size']} bytes, sha256 {value['sha256'][:12]})"
        return "none" if value is None else json.dumps(value)

    changes = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict) and "sha256" in old and "sha256" in new:
            same = (old.get("size"), old.get("sha256")) == (new.get("size"), new.get("sha256"))
        else:
            same = old == new
        if not same:
            changes.append(f"{key}: was {show(old)}, now {show(new)}")
    return changes


#: open lock files of this process (their descriptors are passed on to bundle subprocesses, so that a run's
#: bundles keep the folder locked even when the run itself was killed)
HELD_LOCKS: set[int] = set()


def _lock(root: Path) -> int:
    """Take RUN/.lock (fcntl.flock, exclusive, non-blocking) and return its descriptor; RunFolderError if held.

    The kernel drops a flock when its last holder dies, so a lock left by a killed run is simply taken over.
    """
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise RunFolderError(
            f"{root}: another cosingan-monai run (pid {holder}) is using this folder; wait for it to end, or stop it"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    HELD_LOCKS.add(fd)
    return fd


class RunFolder:
    """Owns RUN/: creation policy, one lock per folder, input fingerprints, per-stage manifests
    (RUN/manifests/<stage>.json) and stage timing. Use it as a context manager (or call close()) to unlock."""

    def __init__(
        self,
        root: str | Path,
        resume: bool = False,
        force: bool = False,
        command: str = "",
        inputs: dict[str, Any] | None = None,
    ) -> None:
        self.root = check_out(root).resolve()  # bundles run with their own folder as cwd: paths must be absolute
        self._lock_fd: int | None = None
        marker = self.root / RUN_MARKER
        # a folder with our lock file is a run folder, maybe one whose run.json another run is writing right now:
        # the lock, not this check, decides then (two fresh starts at once must see "another run", not "foreign")
        foreign = not marker.exists() and not (self.root / LOCK_NAME).exists()
        if self.root.is_dir() and foreign and any(self.root.iterdir()):
            raise RunFolderError(f"{self.root}: exists and is not a cosingan-monai run folder; pick another --out")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock_fd = _lock(self.root)
        except OSError as exc:
            raise RunFolderError(f"{self.root}: cannot create the run folder ({exc.strerror or exc})") from None
        try:
            self._open(marker, resume, force, command, inputs)
        except BaseException:
            self.close()
            raise
        self.manifests = self.root / "manifests"
        self.manifests.mkdir(exist_ok=True)
        self.timings: dict[str, float] = {}
        #: the first stage this invocation actually ran (later stages must run again too); None until then
        self.rerun_from: str | None = None
        #: every stage this invocation actually ran, for stages that name the stages they depend on
        self.ran: set[str] = set()

    def _open(self, marker: Path, resume: bool, force: bool, command: str, inputs: dict[str, Any] | None) -> None:
        """Under the lock: apply --resume/--force, refuse other inputs, sweep stale temp files, write run.json."""
        if marker.exists():
            if force:
                for child in self.root.iterdir():
                    if child.name != LOCK_NAME:
                        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            elif not resume:
                raise RunFolderError(
                    f"{self.root}: a previous run is there; pass --resume to continue it or --force to replace it"
                )
        remove_stale_temps(self.root)
        info = read_json(marker) if marker.exists() else {}
        if inputs is not None and info.get("inputs") is not None:
            changes = fingerprint_changes(info["inputs"], inputs)
            if changes:
                raise RunFolderError(
                    f"{self.root}: --resume with other inputs than this run was started with ("
                    + "; ".join(changes)
                    + "); give the same inputs, or --force to replace the run, or another --out"
                )
        if not marker.exists() or (inputs is not None and info.get("inputs") is None):
            info = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": command, **info}
            if inputs is not None:
                info["inputs"] = inputs
            write_json(marker, info)

    def close(self) -> None:
        """Release the folder's lock (the kernel also does when the process ends)."""
        if self._lock_fd is not None:
            HELD_LOCKS.discard(self._lock_fd)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit os may already be gone; the kernel unlocks then
            self.close()

    def path(self, *parts: str) -> Path:
        """A path inside the run folder, with its parent created."""
        p = self.root.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def manifest(self, stage: str) -> dict[str, Any] | None:
        """The finished stage's manifest, or None when the stage has not finished (or its manifest is unreadable)."""
        path = self.manifests / f"{stage}.json"
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def finish(self, stage: str, result: StageResult, wall_s: float) -> dict[str, Any]:
        """Record a finished stage; the manifest is the proof of completion that --resume trusts."""
        payload = {
            "stage": stage,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "wall_s": round(wall_s, 2),
            "outputs": result.outputs,
            "metrics": result.metrics,
        }
        write_json(self.manifests / f"{stage}.json", payload)
        return payload

    @contextlib.contextmanager
    def stage(self, name: str, echo: Any = print) -> Iterator[StageResult]:
        """Time a stage, then write its manifest and print one summary line; exceptions leave no manifest."""
        start = time.perf_counter()
        result = StageResult()
        echo(f"[{name}] started")
        self.ran.add(name)
        yield result
        wall = time.perf_counter() - start
        self.timings[name] = wall
        self.finish(name, result, wall)
        echo(f"[{name}] done in {wall:.1f} s{summary_metric(result.metrics)}")


#: the metric a stage's summary line names, first found: held-out infection Dice and AUC (evaluations), the best
#: validation key metric (downstream trainings), the finest scale's final reconstruction loss (GAN), the realism
#: summary score, then the counts of the data stages.
KEY_METRICS = (
    "test_dice_infection",
    "test_auc",
    "test_mean_dice",
    "best_val_mean_dice",
    "best_val_auc",
    "final_rec",
    "summary_score",
    "synthetic_slices",
    "eval_cases",
    "negatives",
    "train_slice",
    "lung_slices",
)


def summary_metric(metrics: dict[str, Any]) -> str:
    """', KEY VALUE' for a stage's key metric (KEY_METRICS order), or '' when it reported none."""
    for key in KEY_METRICS:
        value = metrics.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return f", {key} {value:.4f}" if isinstance(value, float) else f", {key} {value}"
    return ""


def span_s(manifests: list[dict[str, Any]]) -> float:
    """Wall seconds that stages run side by side took together: first start to last finish (each manifest's
    `finished` minus its `wall_s`), at most the sum of their walls (stages finished by separate invocations)."""
    walls = [float(m["wall_s"]) for m in manifests]
    if len(manifests) < 2:
        return sum(walls)
    ends = [datetime.fromisoformat(m["finished"]).timestamp() for m in manifests]
    return min(sum(walls), max(ends) - min(e - w for e, w in zip(ends, walls, strict=True)))


def run_stage(
    run: RunFolder,
    name: str,
    echo: Callable[[str], None],
    body: Callable[[Any], None],
    after: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Run `body(result)` as stage `name` unless it finished before; return the stage's manifest.

    A finished stage is trusted only while the stages it depends on were trusted too: once one of them runs again,
    its outputs are new, so this stage runs again as well. A stage that already ran in this invocation is never run
    twice (the experiment's GANs and all-real arm serve every k). `after` names those stages; None means every stage
    before it (the pipeline's linear chain).
    """
    done = run.manifest(name)
    stale = bool(run.ran & set(after)) if after is not None else bool(run.rerun_from)
    if done is not None and name in run.ran:  # a stage shared by several parts of one invocation runs once
        return done
    if done is not None and not stale:
        echo(f"[{name}] already finished ({done['wall_s']} s{summary_metric(done.get('metrics') or {})}), skipped")
        return done
    run.rerun_from = run.rerun_from or name
    with run.stage(name, echo=echo) as result:
        body(result)
    manifest = run.manifest(name)
    assert manifest is not None
    return manifest
