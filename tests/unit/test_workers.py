"""The decode pool's watchdog: hung and crashed workers are replaced, budgets enforced."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from ingest.config import DecodeConfig
from ingest.kafka import SegmentJob
from ingest.reference import ReferenceConfig
from ingest.types import Segment
from monitor.workers import CRASHED, HUNG, DecodePool, Outcome, WorkerPoolFailed, run_job


def misbehave(job_id: int, job: SegmentJob, cfg: DecodeConfig, ref: ReferenceConfig) -> Any:
    if job.segment.stream == "hang":
        time.sleep(3600)
    if job.segment.stream == "crash":
        os._exit(3)
    if job.segment.stream == "big":
        return ("ok", job_id, b"r" * 4_000_000, 0.0)
    return run_job(job_id, job, cfg, ref)


def pool(**kw: Any) -> DecodePool:
    args: dict[str, Any] = dict(
        job_timeout_s=6.0, max_restarts=5, restart_window_s=60, runner=misbehave
    )
    args.update(kw)
    return DecodePool(1, 3, DecodeConfig(), ReferenceConfig(), **args)


def collect(p: DecodePool, n: int, timeout_s: float = 60) -> dict[int, Outcome]:
    out: dict[int, Outcome] = {}
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        out.update((o.job_id, o) for o in p.poll(0.2))
    return out


def test_hung_and_crashed_jobs_are_replaced_and_queued_jobs_still_run(ts_h264: bytes) -> None:
    restarts: list[str] = []
    p = pool(on_restart=restarts.append)
    try:
        p.submit(1, SegmentJob(Segment(ts_h264, "hang")))
        p.submit(2, SegmentJob(Segment(ts_h264, "ok")))
        p.submit(3, SegmentJob(Segment(ts_h264, "crash")))
        out = collect(p, 3)
        p.submit(4, SegmentJob(Segment(ts_h264, "ok")))
        out.update(collect(p, 1))
    finally:
        p.close()
    assert out[1].reason == HUNG and "killed" in (out[1].error or "")
    assert out[2].decoded is not None and out[2].decoded.info.frame_count == 50
    assert out[3].reason == CRASHED and "exit code 3" in (out[3].error or "")
    assert out[4].decoded is not None
    assert restarts == [HUNG, CRASHED]


def test_restart_budget(ts_h264: bytes) -> None:
    p = pool(max_restarts=1)
    try:
        p.submit(1, SegmentJob(Segment(ts_h264, "crash")))
        collect(p, 1)
        p.submit(2, SegmentJob(Segment(ts_h264, "crash")))
        with pytest.raises(WorkerPoolFailed, match="max_worker_restarts=1"):
            collect(p, 1)
    finally:
        p.close()


@pytest.mark.timeout(60)
def test_large_jobs_and_results_with_prefetch_do_not_deadlock() -> None:
    # Both directions over the pipe far beyond its buffer: a job queued to a worker that
    # is still sending a big result back must not block the loop that reads results.
    p = pool()
    try:
        for i in range(3):
            p.submit(i, SegmentJob(Segment(b"j" * 4_000_000, "big")))
        out = collect(p, 3, timeout_s=30)
    finally:
        p.close()
    assert sorted(out) == [0, 1, 2]
