"""Packaging: the bundles ship inside the package, and a non-editable install runs the test-preset pipeline."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_setup_cfg_lists_every_subpackage_and_ships_the_bundles():
    """setup.cfg lists the packages by hand (so bundles/ can map to cosingan_monai.bundles): none may be missing."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "cosingan_monai").rglob("__init__.py")}
    assert on_disk <= listed, sorted(on_disk - listed)
    assert "cosingan_monai.bundles = bundles" in cfg["options"]["package_dir"]
    patterns = cfg["options.package_data"]["cosingan_monai.bundles"].replace(",", " ").split()
    shipped = {p.relative_to(REPO / "bundles") for pat in patterns for p in (REPO / "bundles").glob(pat)}
    source = {p.relative_to(REPO / "bundles") for p in (REPO / "bundles").rglob("*") if p.is_file()}
    source = {p for p in source if "__pycache__" not in p.parts}
    assert source <= shipped, sorted(map(str, source - shipped))


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 900) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, (cmd, (proc.stdout + proc.stderr)[-4000:])
    return proc.stdout


@pytest.mark.slow  # about 4 min on the shared 2-core machine (wheel 5 s, venv 15 s, test-preset pipeline 3 min)
def test_wheel_install_runs_the_test_pipeline_outside_the_repo(tmp_path):
    """Build a wheel, install it (no deps) into a fresh venv that sees .venv's dependencies but not the project,
    and run phantom + the test-preset pipeline from a folder outside the checkout."""
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    _run([*pip_wheel, "-w", str(tmp_path / "w"), "."], REPO)
    wheel = next((tmp_path / "w").glob("cosingan_monai-*.whl"))
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_run([str(python), "-c", purelib], tmp_path).strip())
    # .venv's packages as a plain path: its .pth files (the editable install's finder) are not run from there
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = "import importlib.util as u; print(u.find_spec('cosingan_monai') is None, u.find_spec('monai') is not None)"
    assert _run([str(python), "-c", probe], tmp_path).split() == ["True", "True"]  # deps yes, the project no
    _run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], tmp_path)
    bundles_dir = "import cosingan_monai.pipeline.bundle_runner as b; print(b.BUNDLES_DIR)"
    where = _run([str(python), "-c", bundles_dir], tmp_path)
    assert Path(where.strip()).is_relative_to(site), where
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    work = tmp_path / "elsewhere"
    work.mkdir()
    cli = str(venv / "bin" / "cosingan-monai")
    phantom = [cli, "phantom", "--cases", "1", "--size", "64", "--slices", "12", "--healthy-fraction", "0"]
    _run([*phantom, "--out", "ph", "--seed", "0"], work, env)
    case = work / "ph" / "COVID-19-CT-Seg_20cases" / "phantom_000.nii.gz"
    output = _run([cli, "pipeline", "--case", str(case), "--preset", "test", "--out", "run"], work, env)
    assert "report:" in output
    for name in ("cosingan_train", "cosingan_sample", "covid_seg_2d", "covid_seg_3d", "covid_slice_classifier"):
        assert (work / "run" / "bundles" / name / "configs" / "metadata.json").is_file(), name
    assert (work / "run" / "bundles" / "covid_seg_2d" / "models" / "model.ts").is_file()
