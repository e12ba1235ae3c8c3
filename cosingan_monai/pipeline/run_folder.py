"""A pipeline run folder: refuses to clobber earlier runs, and keeps one manifest per finished stage for --resume."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosingan_monai.core.files import write_json

RUN_MARKER = "run.json"


class RunFolderError(RuntimeError):
    """The run folder cannot be used as asked (exists without --resume/--force, or is not a run folder)."""


@dataclass
class StageResult:
    """What a stage hands back: output paths and figures worth recording in its manifest."""

    outputs: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


class RunFolder:
    """Owns RUN/: creation policy, per-stage manifests (RUN/manifests/<stage>.json) and stage timing."""

    def __init__(self, root: str | Path, resume: bool = False, force: bool = False, command: str = "") -> None:
        self.root = Path(root).resolve()  # bundles run with their own folder as cwd: paths must be absolute
        marker = self.root / RUN_MARKER
        if self.root.exists() and any(self.root.iterdir()):
            if not marker.exists():
                raise RunFolderError(f"{self.root}: exists and is not a cosingan-monai run folder; pick another --out")
            if force:
                shutil.rmtree(self.root)
            elif not resume:
                raise RunFolderError(
                    f"{self.root}: a previous run is there; pass --resume to continue it or --force to replace it"
                )
        self.root.mkdir(parents=True, exist_ok=True)
        if not marker.exists():
            write_json(marker, {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": command})
        self.manifests = self.root / "manifests"
        self.manifests.mkdir(exist_ok=True)
        self.timings: dict[str, float] = {}
        #: the first stage this invocation actually ran (later stages must run again too); None until then
        self.rerun_from: str | None = None
        #: every stage this invocation actually ran, for stages that name the stages they depend on
        self.ran: set[str] = set()

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
        echo(f"[{name}] done in {wall:.1f} s")


def run_stage(
    run: RunFolder,
    name: str,
    echo: Callable[[str], None],
    body: Callable[[Any], None],
    after: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Run `body(result)` as stage `name` unless it finished before; return the stage's manifest.

    A finished stage is trusted only while the stages it depends on were trusted too: once one of them runs again,
    its outputs are new, so this stage runs again as well. `after` names those stages; None means every stage
    before it (the pipeline's linear chain).
    """
    done = run.manifest(name)
    stale = bool(run.ran & set(after)) if after is not None else bool(run.rerun_from)
    if done is not None and not stale:
        echo(f"[{name}] already finished ({done['wall_s']} s), skipped")
        return done
    run.rerun_from = run.rerun_from or name
    with run.stage(name, echo=echo) as result:
        body(result)
    manifest = run.manifest(name)
    assert manifest is not None
    return manifest
