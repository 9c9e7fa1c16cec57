"""The screen pool's watchdog: hung and crashed workers are replaced, budgets enforced."""

from __future__ import annotations

import ast
import os
import threading
import time

import pytest

from ingest.config import DecodeConfig
from ingest.contract import SegmentJob
from ingest.reference import ReferenceConfig
from ingest.types import Segment
from monitor.workers import (
    CRASHED,
    HUNG,
    Failed,
    Result,
    Screened,
    ScreenJob,
    WorkerPool,
    WorkerPoolFailed,
    WorkerSetup,
    screen_job,
)
from scorers.artifacts import ArtifactsConfig


def misbehave(job_id: int, job: ScreenJob, setup: WorkerSetup) -> Result:
    stream = job.job.segment.stream
    if stream == "hang":
        time.sleep(3600)
    if stream == "crash":
        os._exit(3)
    if stream == "die_idle":  # answers, then the process dies with no job on it
        threading.Timer(0.3, os._exit, (4,)).start()
    if stream == "big":
        return Failed(job_id, "big", "r" * 4_000_000)
    if stream == "blas":  # the BLAS thread pools this worker runs with
        from threadpoolctl import threadpool_info

        return Failed(job_id, "blas", repr([p["num_threads"] for p in threadpool_info()]))
    return screen_job(job_id, job, setup)


def pool(**kw: object) -> WorkerPool:
    args: dict[str, object] = dict(
        job_timeout_s=6.0, max_restarts=5, restart_window_s=60, runner=misbehave
    )
    args.update(kw)
    setup = WorkerSetup(DecodeConfig(), ReferenceConfig(), [ArtifactsConfig()])
    return WorkerPool(1, 3, setup, **args)  # type: ignore[arg-type]


def job(data: bytes, stream: str) -> ScreenJob:
    return ScreenJob(SegmentJob(Segment(data, stream)))


def collect(p: WorkerPool, n: int, timeout_s: float = 60) -> dict[int, Result]:
    out: dict[int, Result] = {}
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        out.update((o.job_id, o) for o in p.poll(0.2))
    return out


def test_hung_and_crashed_jobs_are_replaced_and_queued_jobs_still_run(ts_h264: bytes) -> None:
    restarts: list[str] = []
    p = pool(on_restart=restarts.append)
    try:
        p.submit(1, job(ts_h264, "hang"))
        p.submit(2, job(ts_h264, "ok"))
        p.submit(3, job(ts_h264, "crash"))
        out = collect(p, 3)
        p.submit(4, job(ts_h264, "ok"))
        out.update(collect(p, 1))
    finally:
        p.close()
    one, two, three, four = out[1], out[2], out[3], out[4]
    assert isinstance(one, Failed) and one.reason == HUNG and "killed" in one.error
    assert isinstance(two, Screened) and two.info.frame_count == 50
    assert two.verdict.scorers[0].startswith("artifacts@")  # scored in the worker
    assert isinstance(three, Failed) and three.reason == CRASHED and "exit code 3" in three.error
    assert isinstance(four, Screened)
    assert restarts == [HUNG, CRASHED]


def test_crashes_charged_to_an_input_do_not_use_the_restart_budget(ts_h264: bytes) -> None:
    # A flood of inputs that crash the decoder costs those inputs, not the service.
    p = pool(max_restarts=1)
    try:
        for i in range(4):
            p.submit(i, job(ts_h264, "crash"))
            out = collect(p, 1)
            assert isinstance(out[i], Failed) and out[i].reason == CRASHED  # type: ignore[union-attr]
    finally:
        p.close()


def test_deaths_no_input_explains_use_the_budget(ts_h264: bytes) -> None:
    p = pool(max_restarts=1)
    try:
        p.submit(1, job(ts_h264, "die_idle"))
        collect(p, 1)
        time.sleep(1.0)
        p.poll(0.1)  # the first idle death: replaced, within budget
        p.submit(2, job(ts_h264, "die_idle"))
        collect(p, 1)
        time.sleep(1.0)
        with pytest.raises(WorkerPoolFailed, match="max_worker_restarts=1"):
            p.poll(0.1)
    finally:
        p.close()


@pytest.mark.timeout(60)
def test_large_jobs_and_results_with_prefetch_do_not_deadlock() -> None:
    # Both directions over the pipe far beyond its buffer: a job queued to a worker that
    # is still sending a big result back must not block the loop that reads results.
    p = pool()
    try:
        for i in range(3):
            p.submit(i, job(b"j" * 4_000_000, "big"))
        out = collect(p, 3, timeout_s=30)
    finally:
        p.close()
    assert sorted(out) == [0, 1, 2]


def test_workers_run_one_blas_thread(ts_h264: bytes) -> None:
    """The pool fills the cores: BLAS helper threads (which spin after each call) would take
    CPU from the other workers."""
    import numpy as np
    from threadpoolctl import threadpool_info

    np.ones(4) @ np.ones(4)  # numpy's BLAS is loaded here too
    assert threadpool_info(), "no BLAS thread pool found to check"
    p = pool()
    try:
        p.submit(1, job(ts_h264, "blas"))
        out = collect(p, 1)[1]
    finally:
        p.close()
    assert isinstance(out, Failed) and out.reason == "blas"
    threads = ast.literal_eval(out.error)  # a worker imports fewer libraries than pytest
    assert threads and all(n == 1 for n in threads), out.error
