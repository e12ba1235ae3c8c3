"""Independent pipeline stages side by side: they overlap, every job finishes, and a failure is raised."""

from __future__ import annotations

import os
import threading

import pytest

from cosingan_monai.pipeline.stage_lanes import (
    StagePlan,
    idle_cores,
    plan_stages,
    run_graph,
    run_in_lanes,
    split_threads,
    wait_policy_env,
)


def test_two_lanes_run_jobs_at_the_same_time():
    barrier = threading.Barrier(2, timeout=10)  # breaks (BrokenBarrierError) unless both jobs wait at once

    def job(value: int) -> int:
        barrier.wait()
        return value

    assert run_in_lanes({"a": lambda: job(1), "b": lambda: job(2)}, lanes=2) == {"a": 1, "b": 2}


def test_a_failing_job_is_raised_after_the_others_finish():
    finished = []

    def fail() -> None:
        raise RuntimeError("bundle covid_seg_3d train failed")

    def slow() -> str:
        threading.Event().wait(0.2)
        finished.append("slow")
        return "ok"

    with pytest.raises(RuntimeError, match="covid_seg_3d"):
        run_in_lanes({"fail": fail, "slow": slow}, lanes=2)
    assert finished == ["slow"]


def test_one_lane_runs_in_order():
    order: list[str] = []
    run_in_lanes({k: (lambda k=k: order.append(k)) for k in "abc"}, lanes=1)
    assert order == ["a", "b", "c"]


def test_user_threads_win(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    plan = plan_stages()
    assert plan.threads is None  # bundles inherit the user's OMP_NUM_THREADS
    assert plan.lanes == min(2, len(os.sched_getaffinity(0)))
    assert plan_stages(lanes=1).lanes == 1


def test_cores_are_shared_between_lanes(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr("cosingan_monai.pipeline.stage_lanes.usable_cores", lambda: 8)
    plan = plan_stages()
    assert (plan.lanes, plan.threads) == (2, 4)
    assert os.environ["OMP_NUM_THREADS"] == "8" and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def _recording_jobs(names: str, events: list[str], fail: str = "") -> dict:
    def job(name: str) -> str:
        events.append(f"{name} start")
        threading.Event().wait(0.05)
        events.append(f"{name} end")
        if name == fail:
            raise RuntimeError(f"{name} broke")
        return name

    return {n: (lambda n=n: job(n)) for n in names}


@pytest.mark.parametrize("lanes", [1, 2])
def test_run_graph_starts_a_job_once_its_inputs_are_done(lanes):
    """The pipeline's shape: 3D long, 2D then the classifier (it starts from the 2D weights), evaluations after
    their trainings."""
    events: list[str] = []
    jobs = _recording_jobs(["3d", "2d", "cls", "eval_2d", "eval_cls"], events)
    after = {"cls": ("2d",), "eval_2d": ("2d",), "eval_cls": ("cls",)}
    assert run_graph(jobs, after, lanes) == {n: n for n in jobs}
    for job, inputs in after.items():
        for inp in inputs:
            assert events.index(f"{job} start") > events.index(f"{inp} end")
    if lanes == 2:
        assert events[:2] == ["3d start", "2d start"]  # the mapping's order among ready jobs
        assert events.index("cls start") < events.index("eval_2d start")


@pytest.mark.parametrize("lanes", [1, 2])
def test_run_graph_skips_the_jobs_after_a_failure_and_raises_it(lanes):
    events: list[str] = []
    jobs = _recording_jobs(["a", "b", "c", "d"], events, fail="b")
    with pytest.raises(RuntimeError, match="b broke"):
        run_graph(jobs, {"c": ("b",), "d": ("c",)}, lanes)
    assert "c start" not in events and "d start" not in events  # they need b's output
    assert "a end" in events  # independent work is finished (kept for --resume)


def test_run_graph_refuses_unknown_and_circular_inputs():
    with pytest.raises(ValueError, match="not there: \\['x'\\]"):
        run_graph({"a": lambda: 1}, {"a": ("x",)}, 2)
    with pytest.raises(ValueError, match="circle"):
        run_graph({"a": lambda: 1, "b": lambda: 2}, {"a": ("b",), "b": ("a",)}, 2)


def test_split_threads_shares_one_budget_between_parallel_jobs(monkeypatch):
    """k GANs on a 2-lane CPU plan: two at a time with half the threads each; one job, one thread or a GPU plan
    (one lane) keep the budget as it was."""
    cpu = StagePlan(lanes=2, threads=1)
    assert split_threads(4, 2, cpu) == (2, 1)
    assert split_threads(2, 8, cpu) == (2, 4)
    assert split_threads(1, 2, cpu) == (1, 2)  # a single GAN keeps every thread
    assert split_threads(3, 1, cpu) == (1, 1)  # one thread cannot be split
    assert split_threads(4, None, StagePlan(lanes=1)) == (1, None)  # GPU: one device, one after the other
    monkeypatch.setenv("OMP_NUM_THREADS", "6")  # None: the environment's budget
    assert split_threads(4, None, cpu) == (2, 3)


def test_train_gans_runs_lanes_at_a_time_and_keeps_the_slice_order(monkeypatch, tmp_path):
    """--train-slices K / the experiment's k GANs: two bundle runs at once (they meet at a barrier), each with
    the threads it was given, and the models come back in the slices' order."""
    from cosingan_monai.pipeline import pipeline

    barrier = threading.Barrier(2, timeout=10)  # breaks unless two trainings wait at once
    seen: list[tuple[str, int | None]] = []

    def fake_run(bundle, config, preset, values, resume=False, threads=None):
        seen.append((values["case"], threads))
        barrier.wait()

    monkeypatch.setattr(pipeline.bundles, "copy_bundle", lambda name, root, suffix="": root / f"{name}{suffix}")
    monkeypatch.setattr(pipeline.bundles, "run_bundle", fake_run)
    slices = [{"image": f"s{i}.nii.gz", "label": f"l{i}.nii.gz", "slice": i} for i in range(4)]
    models = pipeline.train_gans(slices, tmp_path, "test", threads=1, lanes=2)
    assert models == [str(tmp_path / "bundles" / f"cosingan_train_z{i:03d}" / "models" / "model.pt") for i in range(4)]
    assert sorted(seen) == [(f"s{i}.nii.gz", 1) for i in range(4)]


def test_idle_cores_counts_the_usable_cores():
    idle = idle_cores(0.2)
    if idle is None:
        pytest.skip("no /proc/stat here")
    assert 0.0 <= idle <= len(os.sched_getaffinity(0)) + 1e-6


@pytest.fixture()
def pipeline_policy(monkeypatch):
    """The environment after plan_stages on a CPU where the user set no OMP_WAIT_POLICY."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("COSINGAN_AUTO_WAIT_POLICY", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    plan_stages()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_a_multi_threaded_run_spins_only_on_an_idle_cpu(pipeline_policy):
    """Passive waits cost the demo GAN about 1.5x on an idle CPU, spinning 2.2x on a shared one (docs/results.md)."""
    changes, note = wait_policy_env(2, idle=1.9)
    assert changes == {"OMP_WAIT_POLICY": None} and "spin" in note and "1.9 cores idle" in note
    changes, note = wait_policy_env(2, idle=1.0)  # another job holds a core
    assert changes == {} and "PASSIVE" in note and "shared" in note
    assert wait_policy_env(1, idle=2.0) == ({}, "")  # one thread: no team to wait for
    assert wait_policy_env(4, idle=3.8)[0] == {"OMP_WAIT_POLICY": None}
    assert wait_policy_env(4, idle=3.5)[0] == {}


def test_a_policy_the_user_set_is_kept(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.delenv("COSINGAN_AUTO_WAIT_POLICY", raising=False)
    plan_stages()
    assert wait_policy_env(2, idle=2.0) == ({}, "")
    monkeypatch.setenv("COSINGAN_AUTO_WAIT_POLICY", "1")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # set by the user after the pipeline's default
    assert wait_policy_env(2, idle=2.0) == ({}, "")


def test_bundle_subprocess_gets_the_policy_and_logs_why(pipeline_policy, monkeypatch, tmp_path):
    """The subprocess of an idle-CPU run has no OMP_WAIT_POLICY; its log says so in its first line."""
    import subprocess

    from cosingan_monai.pipeline import bundle_runner

    seen = {}

    def fake_run(cmd, cwd, env, stdout, **kwargs):
        seen["env"] = env
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(bundle_runner.subprocess, "run", fake_run)
    monkeypatch.setattr(bundle_runner, "wait_policy_env", lambda threads: wait_policy_env(threads, idle=2.0))
    (tmp_path / "logs").mkdir()
    log = bundle_runner._run_subprocess(tmp_path, "train", tmp_path / "args.json", 1, None)
    assert "OMP_WAIT_POLICY" not in seen["env"] and seen["env"]["OMP_NUM_THREADS"] == "2"
    assert log.read_text().startswith("[cosingan-monai] OpenMP waits: spin")
    bundle_runner._run_subprocess(tmp_path, "train", tmp_path / "args.json", 1, 1)  # one thread: kept
    assert seen["env"]["OMP_WAIT_POLICY"] == "PASSIVE" and seen["env"]["OMP_NUM_THREADS"] == "1"
