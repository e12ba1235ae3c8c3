"""Run-folder policy: never clobber a previous run, manifests mark finished stages, failed stages leave none."""

from __future__ import annotations

import json

import pytest

from cosingan_monai.pipeline.run_folder import RunFolder, RunFolderError, span_s


def test_new_run_writes_marker_and_manifest(tmp_path):
    run = RunFolder(tmp_path / "run", command="cosingan-monai pipeline ...")
    with run.stage("validate", echo=lambda *_: None) as result:
        result.outputs["case"] = "x.nii.gz"
        result.metrics["slices"] = 3
    manifest = run.manifest("validate")
    assert manifest["outputs"] == {"case": "x.nii.gz"} and manifest["metrics"] == {"slices": 3}
    assert manifest["wall_s"] >= 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["command"].startswith("cosingan-monai")


def test_existing_run_needs_resume_or_force(tmp_path):
    RunFolder(tmp_path / "run")
    with pytest.raises(RunFolderError, match="--resume.*--force"):
        RunFolder(tmp_path / "run")
    keep = tmp_path / "run" / "keep.txt"
    keep.write_text("x")
    RunFolder(tmp_path / "run", resume=True)
    assert keep.exists()
    RunFolder(tmp_path / "run", force=True)
    assert not keep.exists()


def test_refuses_foreign_folder_even_with_force(tmp_path):
    foreign = tmp_path / "mydata"
    foreign.mkdir()
    (foreign / "precious.nii.gz").write_bytes(b"x")
    with pytest.raises(RunFolderError, match="not a cosingan-monai run folder"):
        RunFolder(foreign, force=True)
    assert (foreign / "precious.nii.gz").exists()


def test_failed_stage_leaves_no_manifest(tmp_path):
    run = RunFolder(tmp_path / "run")
    with pytest.raises(ZeroDivisionError), run.stage("train_gan", echo=lambda *_: None):
        raise ZeroDivisionError("simulated crash inside the stage")
    assert run.manifest("train_gan") is None


def test_truncated_manifest_counts_as_unfinished(tmp_path):
    run = RunFolder(tmp_path / "run")
    (run.manifests / "sample.json").write_text('{"stage": "sam')
    assert run.manifest("sample") is None


def test_resume_redoes_a_stage_and_only_what_depends_on_it(tmp_path):
    from cosingan_monai.pipeline.run_folder import run_stage

    calls: list[str] = []

    def run_all(resume: bool) -> None:
        run = RunFolder(tmp_path / "run", resume=resume)
        for name, after in (("prep", ()), ("arm1", ("prep",)), ("arm2", ("prep", "arm1")), ("solo", ())):
            run_stage(run, name, lambda m: None, lambda r, name=name: calls.append(name), after=after)
        run_stage(run, "linear", lambda m: None, lambda r: calls.append("linear"))  # after=None: after everything

    run_all(resume=False)
    assert calls == ["prep", "arm1", "arm2", "solo", "linear"]
    calls.clear()
    (tmp_path / "run" / "manifests" / "arm1.json").unlink()
    run_all(resume=True)
    assert calls == ["arm1", "arm2", "linear"]  # prep and solo are trusted, arm2 depends on arm1
    calls.clear()
    run_all(resume=True)
    assert calls == []


def test_span_of_stages_run_side_by_side():
    """Two GANs that overlapped count once (first start to last finish); stages of separate invocations (hours
    apart, after --resume) count at most their summed walls; one stage is its wall."""
    a = {"finished": "2026-12-07T10:05:00", "wall_s": 300.0}  # 10:00:00 - 10:05:00
    b = {"finished": "2026-12-07T10:05:40", "wall_s": 280.0}  # 10:01:00 - 10:05:40
    assert span_s([a, b]) == 340.0
    later = {"finished": "2026-12-07T18:00:00", "wall_s": 100.0}
    assert span_s([a, later]) == 400.0
    assert span_s([b]) == 280.0 and span_s([]) == 0.0
