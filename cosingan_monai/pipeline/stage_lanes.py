"""How the pipeline spends the CPU: threads per bundle subprocess, and independent stages run side by side.

On a CPU, independent stages run two at a time with the cores split between them, and OMP_WAIT_POLICY=PASSIVE
keeps extra threads from spinning, except in a bundle run with several threads that finds the CPU idle when it starts
(`wait_policy_env`); on a GPU stages run one at a time (one device) with the environment's threads.
The measurements behind these defaults: docs/results.md "Pipeline scheduling on CPU".
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

#: torch.jit export and other in-process work of parallel stages is not known to be thread-safe: serialize it
IN_PROCESS_LOCK = threading.Lock()
#: OMP_WAIT_POLICY as plan_stages set it; a policy the user set is never changed
AUTO_WAIT_POLICY = "PASSIVE"
#: idle cores a multi-threaded bundle run needs at its start to spin: all of its threads but a quarter core
IDLE_MARGIN = 0.25


@dataclass(frozen=True)
class StagePlan:
    """Independent stages run `lanes` at a time, each bundle subprocess with `threads` CPU threads (None: the
    environment's OMP_NUM_THREADS)."""

    lanes: int = 1
    threads: int | None = None


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0))


def plan_stages(lanes: int | None = None) -> StagePlan:
    """The CPU plan: sequential stages get every core (via the environment), parallel ones share them by lanes.

    `lanes` None = automatic: 2 on a CPU with at least 2 cores, 1 on a GPU. OMP_NUM_THREADS set by the user wins for
    every stage.
    """
    import torch

    if torch.cuda.is_available():
        return StagePlan(lanes or 1, None)
    cores = usable_cores()
    user_threads = "OMP_NUM_THREADS" in os.environ
    os.environ.setdefault("OMP_NUM_THREADS", str(cores))
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = AUTO_WAIT_POLICY
        os.environ["COSINGAN_AUTO_WAIT_POLICY"] = "1"  # ours, not the user's: wait_policy_env may lift it
    lanes = max(1, lanes if lanes is not None else min(2, cores))
    return StagePlan(lanes, None if user_threads else max(1, cores // lanes))


def idle_cores(window_s: float = 0.5) -> float | None:
    """How many of this process's usable cores were idle over the next `window_s` seconds (from /proc/stat); None
    where /proc/stat cannot be read (not Linux)."""

    def sample() -> dict[int, tuple[int, int]]:
        ticks = {}
        with open("/proc/stat", encoding="ascii") as fh:
            for line in fh:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit():
                    values = [int(f) for f in fields]
                    ticks[int(name[3:])] = (values[3] + values[4], sum(values[:8]))  # (idle + iowait, total)
        return ticks

    try:
        before = sample()
        time.sleep(window_s)
        after = sample()
    except (OSError, ValueError, IndexError):
        return None
    idle = 0.0
    for cpu in os.sched_getaffinity(0):
        if cpu in before and cpu in after:
            total = after[cpu][1] - before[cpu][1]
            idle += (after[cpu][0] - before[cpu][0]) / total if total > 0 else 1.0
    return idle


def wait_policy_env(threads: int, idle: float | None = None) -> tuple[dict[str, str | None], str]:
    """OpenMP environment for a bundle run with `threads` threads, and a line that says why: (changes, note).

    Passive waits make each of the GAN's many small kernels wake sleeping threads: the demo GAN takes 255-268 s with
    2 passive threads and 167-179 s with libgomp's default (spin, then sleep) on an idle 2-core machine, but 607 s
    with the default when another job holds a core (docs/results.md "Pipeline scheduling on CPU"). So a run with
    several threads drops the PASSIVE that plan_stages set (the key maps to None: remove it) when, measured at its
    start, at least `threads` - IDLE_MARGIN cores are idle; one thread, a user's own policy, or a busy CPU keep the
    environment. `idle` None = measure now (idle_cores).
    """
    if threads <= 1 or os.environ.get("COSINGAN_AUTO_WAIT_POLICY") != "1":
        return {}, ""
    if os.environ.get("OMP_WAIT_POLICY") != AUTO_WAIT_POLICY:
        return {}, ""
    idle = idle_cores() if idle is None else idle
    if idle is None:
        return {}, f"OpenMP waits: {AUTO_WAIT_POLICY} ({threads} threads; CPU load unknown)"
    if idle >= threads - IDLE_MARGIN:
        return {"OMP_WAIT_POLICY": None}, f"OpenMP waits: spin, then sleep ({threads} threads, {idle:.1f} cores idle)"
    return {}, f"OpenMP waits: {AUTO_WAIT_POLICY} ({threads} threads, {idle:.1f} cores idle: the CPU is shared)"


def split_threads(jobs: int, threads: int | None, plan: StagePlan) -> tuple[int, int | None]:
    """(lanes, threads per job) for `jobs` independent trainings that share one thread budget: `threads` (None: the
    environment's OMP_NUM_THREADS, else every usable core) split over up to plan.lanes jobs at a time.

    Why: the demo GAN trains in 222 s on one thread and 255 s on two passive ones (docs/results.md "Several GANs
    two at a time"), so two GANs side by side with one thread each finish in about half the time of one after the
    other with two. One job, or one lane, keeps `threads` unchanged.
    """
    total = threads if threads is not None else int(os.environ.get("OMP_NUM_THREADS") or usable_cores())
    lanes = max(1, min(plan.lanes, jobs, total))
    return (1, threads) if lanes == 1 else (lanes, total // lanes)


def run_in_lanes(jobs: Mapping[str, Callable[[], T]], lanes: int) -> dict[str, T]:
    """Run independent jobs `lanes` at a time, in the mapping's order; returns their results by name (run_graph
    without inputs)."""
    return run_graph(jobs, {}, lanes)


def run_graph(jobs: Mapping[str, Callable[[], T]], after: Mapping[str, Sequence[str]], lanes: int) -> dict[str, T]:
    """Run jobs `lanes` at a time, each once the jobs named in `after[name]` have finished; of the jobs that are
    ready, the first in the mapping's order starts first (put the longest first). Returns the results by name, in
    the mapping's order.

    The jobs are stages whose work runs in bundle subprocesses, so Python threads suffice to overlap them. Why a
    graph and not phases: an evaluation starts as soon as its own training is done, in the lane another training
    left, instead of waiting for the slowest training. Every job whose inputs succeeded runs to its end even when
    another fails (its finished work is kept for --resume); jobs after a failed one are skipped; then the first
    failure, in the mapping's order, is raised.
    """
    unknown = {d for deps in after.values() for d in deps} - set(jobs)
    if unknown or set(after) - set(jobs):
        raise ValueError(f"jobs wait on jobs that are not there: {sorted(unknown | (set(after) - set(jobs)))}")
    pending = dict(jobs)
    results: dict[str, T] = {}
    failed: dict[str, BaseException | None] = {}

    def ready() -> list[str]:
        while skip := [n for n in pending if any(d in failed for d in after.get(n, ()))]:
            for name in skip:  # an input failed (or was skipped): skipped, never raised for itself
                failed[name] = None
                del pending[name]
        return [n for n in pending if all(d in results for d in after.get(n, ()))]

    if lanes <= 1:  # in this thread, one at a time
        while names := ready():
            name = names[0]
            job = pending.pop(name)
            try:
                results[name] = job()
            except Exception as exc:  # raised below, after the jobs that do not need this one
                failed[name] = exc
    else:
        with ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="stage") as pool:
            running: dict[Future[T], str] = {}
            while True:
                for name in ready()[: lanes - len(running)]:
                    running[pool.submit(pending.pop(name))] = name
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    name = running.pop(future)
                    if future.exception() is not None:
                        failed[name] = future.exception()
                    else:
                        results[name] = future.result()
    if pending:
        raise ValueError(f"jobs wait on each other in a circle: {sorted(pending)}")
    for name in jobs:
        error = failed.get(name)
        if error is not None:
            raise error
    return {name: results[name] for name in jobs}  # the mapping's order, not the finishing order
