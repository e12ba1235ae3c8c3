"""MONAI Label integration: a real `monailabel start_server` (from .venv-label) serving a test-preset run on loopback.

Builds a run folder (covid_seg_2d/3d trained a few epochs on phantoms in their test preset), writes the app with
`build_label_app`, starts the server on a free 127.0.0.1 port, then checks /info/, /infer/<model>, /train/<model>
and that stopping the server's process group leaves nothing behind. Skipped when .venv-label is absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from cosingan_monai.label.app_builder import SEG_BUNDLES, LabelApp, app_model_name, build_label_app
from cosingan_monai.phantom.generator import write_phantom_dataset

REPO = Path(__file__).resolve().parents[1]
LABEL_PY = REPO / ".venv-label" / "bin" / "python"
MODELS = [app_model_name(b) for b in SEG_BUNDLES]
# "Above a small threshold": labelling every voxel lung scores about 0.22 on this phantom; measured 0.82 (2D) and
# 0.59 (3D) after the test presets' 4 / 6 epochs.
MIN_LUNG_DICE = 0.4
INFER_IMAGE = "phantom_002"  # unlabeled study: the models never saw it

pytestmark = [pytest.mark.label, pytest.mark.timeout(1800)]
if not LABEL_PY.is_file():
    pytest.skip(
        f"MONAI Label venv {LABEL_PY.parent.parent} is absent: `make label-venv` builds it (about 8 GB)",
        allow_module_level=True,
    )

# Loopback only: never route these requests through an HTTP proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method: str, url: str, body: dict | None = None, timeout: float = 60) -> tuple[int, bytes]:
    """One HTTP request; returns (status, body) and never raises for an HTTP error status."""
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with OPENER.open(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def sha256(path: Path) -> str:
    """Content hash of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks."""
    return float(2.0 * np.logical_and(a, b).sum() / max(int(a.sum() + b.sum()), 1))


# --------------------------------------------------------------------------------------------- the run folder


def make_run(root: Path) -> dict[str, float]:
    """A run folder like the pipeline's: RUN/bundles/<seg bundle> copied and trained in the test preset.

    Training data are 4 phantoms (3 train, 1 validation): their lung slices for the 2D bundle, the volumes for 3D.
    `bundles.run_bundle` runs `python -m monai.bundle run` with the preset overlay and records the run in
    BUNDLE/logs/, which label-app reads.
    """
    from cosingan_monai.data.datalists import prepare_slices, prepare_volumes
    from cosingan_monai.pipeline.bundle_runner import copy_bundle, run_bundle

    write_phantom_dataset(root / "phantoms", 4, seed=0, size=64, slices=16, healthy_fraction=0.0)
    split = {"training": 3, "validation": 1, "test": 0}
    datalists = {
        "covid_seg_2d": prepare_slices(root / "phantoms", root / "data", split=split).datalists["datalist"],
        "covid_seg_3d": prepare_volumes(root / "phantoms", root / "data", split=split).datalists["datalist_3d"],
    }
    timings = {}
    for name in SEG_BUNDLES:
        bundle = copy_bundle(name, root / "run" / "bundles")
        t0 = time.perf_counter()
        run_bundle(
            bundle,
            "train",
            "test",
            {"datalist": str(datalists[name])},  # the test preset's own epoch count
        )
        timings[f"train_{name}_s"] = time.perf_counter() - t0
        assert (bundle / "models" / "model.pt").is_file(), f"{name}: no models/model.pt after training"
    return timings


# ------------------------------------------------------------------------------------------------- the server


@dataclass
class Server:
    """A running `monailabel start_server` child in its own process group."""

    app: LabelApp
    proc: subprocess.Popen
    url: str
    port: int
    log: Path
    timings: dict[str, float] = field(default_factory=dict)

    def log_tail(self, n: int = 4000) -> str:
        """The end of the server log, for assertion messages."""
        return self.log.read_text(errors="replace")[-n:]

    def group_alive(self) -> bool:
        """Whether any process of the server's process group still exists."""
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM the whole process group, SIGKILL after `grace` seconds, and reap the leader."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            if not self.group_alive():
                break
            os.killpg(self.proc.pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if self.proc.poll() is not None and not self.group_alive():
                    break
                time.sleep(0.2)
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Train a tiny run, build its app, start MONAI Label on loopback and wait for /info/ (bounded)."""
    root = tmp_path_factory.mktemp("label_server")
    timings = make_run(root)
    t0 = time.perf_counter()
    app = build_label_app(root / "run", root / "app", cases=3, labeled=2, seed=1000, size=64, slices=16)
    timings["app_build_s"] = time.perf_counter() - t0

    port = free_port()
    env = dict(os.environ, MONAI_LABEL_SESSION_PATH=str(root / "sessions"))
    log = root / "server.log"
    t0 = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            app.server_command(port=port, python=str(LABEL_PY)),
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches every child
        )
    srv = Server(app, proc, f"http://127.0.0.1:{port}", port, log, timings)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, f"monailabel exited with {proc.returncode}:\n{srv.log_tail()}"
            assert time.monotonic() < deadline, f"/info/ not up after 300 s:\n{srv.log_tail()}"
            try:
                if http("GET", f"{srv.url}/info/", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(1.0)
        timings["server_start_s"] = time.perf_counter() - t0
        yield srv
    finally:
        srv.stop()
        print("\nMONAI Label timings:", json.dumps({k: round(v, 2) for k, v in timings.items()}))


# -------------------------------------------------------------------------------------------------- the tests


def listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses with a socket LISTENing on `port` (Linux /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, p = local.split(":")
        if state == "0A" and int(p, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return found


def test_info_lists_both_models_with_lung_and_infection(server: Server) -> None:
    status, body = http("GET", f"{server.url}/info/")
    assert status == 200
    info = json.loads(body)
    assert set(MODELS) <= set(info["models"]), info["models"].keys()
    assert set(MODELS) <= set(info["trainers"]), info["trainers"].keys()
    for model in MODELS:
        assert info["models"][model]["labels"] == {"lung": 1, "infection": 2}
        assert info["models"][model]["type"] == "segmentation"
    assert info["datastore"]["total"] == 3 and info["datastore"]["completed"] == 2
    if Path("/proc/net/tcp").is_file():
        assert listening_addresses(server.port) == {"127.0.0.1"}


@pytest.mark.parametrize("model", MODELS)
def test_infer_segments_the_lungs(server: Server, model: str) -> None:
    url = f"{server.url}/infer/{model}?image={INFER_IMAGE}&output=image"
    t0 = time.perf_counter()
    status, body = http("POST", url, timeout=600)
    server.timings[f"infer_{model}_first_s"] = time.perf_counter() - t0  # includes loading the network
    assert status == 200, f"{body[:500]!r}\n{server.log_tail()}"
    t0 = time.perf_counter()
    status2, body2 = http("POST", url, timeout=600)
    server.timings[f"infer_{model}_warm_s"] = time.perf_counter() - t0
    assert status2 == 200
    out = server.app.app_dir.parent / f"pred_{model}.nii.gz"
    out.write_bytes(body)
    pred_img = nib.load(out)
    pred = np.rint(np.asarray(pred_img.dataobj)).astype(np.int64)
    image = nib.load(server.app.studies / f"{INFER_IMAGE}.nii.gz")
    truth = np.asarray(
        nib.load(server.app.app_dir / "phantom" / "Lung_and_Infection_Mask" / f"{INFER_IMAGE}.nii.gz").dataobj
    )
    assert pred.shape == image.shape
    np.testing.assert_allclose(pred_img.affine, image.affine, atol=1e-3)
    assert set(np.unique(pred).tolist()) <= {0, 1, 2}
    again = server.app.app_dir.parent / f"pred_{model}_again.nii.gz"
    again.write_bytes(body2)
    np.testing.assert_array_equal(np.asarray(nib.load(again).dataobj), np.asarray(pred_img.dataobj))
    lung_dice = dice(pred > 0, truth > 0)
    server.timings[f"lung_dice_{model}"] = lung_dice
    everything_lung = dice(np.ones_like(truth, dtype=bool), truth > 0)
    assert lung_dice > max(MIN_LUNG_DICE, everything_lung), f"{model}: lung Dice {lung_dice:.3f} vs phantom truth"


@pytest.mark.parametrize("model", MODELS)
def test_train_writes_a_new_model(server: Server, model: str) -> None:
    ckpt = server.app.models[model] / "models" / "model.pt"
    before, before_mtime = sha256(ckpt), ckpt.stat().st_mtime_ns
    keys = set(torch.load(ckpt, map_location="cpu", weights_only=True))
    params = {"max_epochs": 1, "val_split": 0.5, "device": "cpu", "multi_gpu": False}
    t0 = time.perf_counter()
    status, body = http("POST", f"{server.url}/train/{model}?run_sync=true", params, timeout=900)
    server.timings[f"train_{model}_s"] = time.perf_counter() - t0
    assert status == 200, f"{body[:500]!r}\n{server.log_tail()}"
    assert ckpt.stat().st_mtime_ns > before_mtime and sha256(ckpt) != before, "model.pt was not rewritten"
    assert set(torch.load(ckpt, map_location="cpu", weights_only=True)) == keys


def test_stop_leaves_no_process_behind(server: Server) -> None:
    assert server.proc.poll() is None and server.group_alive()
    server.stop()
    assert server.proc.returncode is not None
    assert not server.group_alive(), "a process of the server's group survived"
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=2):
        pass
