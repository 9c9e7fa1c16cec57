"""Decode worker processes behind a watchdog.

PyAV/FFmpeg run in separate processes so a decode that hangs inside FFmpeg (beyond
the decoder's cooperative deadline) or crashes the interpreter can be killed and
replaced without taking the daemon down. Each worker has its own pipe: killing one
cannot corrupt a queue shared with the others. Restarts are bounded; past the
budget the pool raises WorkerPoolFailed and the daemon exits for its supervisor.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ingest.config import DecodeConfig
from ingest.decode import decode
from ingest.kafka import SegmentJob
from ingest.reference import ReferenceConfig, fetch
from ingest.types import DecodedSegment, DecodeTimeout, IngestError

log = logging.getLogger(__name__)

HUNG = DecodeTimeout.reason
CRASHED = "decoder_crashed"
INTERNAL = "internal_error"


class WorkerPoolFailed(Exception):
    """Workers keep dying: more restarts than the configured budget."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one job: a decoded segment, or a reason code and message."""

    job_id: int
    decoded: DecodedSegment | None
    reason: str | None = None
    error: str | None = None
    seconds: float = 0.0


Runner = Callable[[int, SegmentJob, DecodeConfig, ReferenceConfig], Any]


def _worker_main(
    conn: multiprocessing.connection.Connection,
    decode_cfg: DecodeConfig,
    ref_cfg: ReferenceConfig,
    runner: Runner,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        job_id, job = msg
        conn.send(runner(job_id, job, decode_cfg, ref_cfg))


def run_job(
    job_id: int, job: SegmentJob, decode_cfg: DecodeConfig, ref_cfg: ReferenceConfig
) -> Any:
    started = time.monotonic()
    seg = job.segment
    try:
        if job.uri is not None:
            data = fetch(
                job.uri, max_bytes=decode_cfg.limits.max_bytes, config=ref_cfg, source=seg.source
            )
            seg = dataclasses.replace(seg, data=data)
        decoded = decode(seg, decode_cfg)
    except IngestError as exc:
        return ("err", job_id, exc.reason, str(exc), time.monotonic() - started)
    except Exception as exc:  # a decoder bug must not kill the worker: report and go on
        return ("err", job_id, INTERNAL, f"{type(exc).__name__}: {exc}", time.monotonic() - started)
    # The bytes stay with the parent: sending them back would double the pipe traffic.
    light = dataclasses.replace(decoded, segment=dataclasses.replace(seg, data=b"", init=None))
    return ("ok", job_id, light, time.monotonic() - started)


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    jobs: collections.deque[tuple[int, SegmentJob]]
    head_started: float
    outbox: queue.SimpleQueue[tuple[int, SegmentJob] | None]
    sender: threading.Thread


def _sender(conn: multiprocessing.connection.Connection, outbox: queue.SimpleQueue[Any]) -> None:
    """Feeds jobs to one worker. A thread, because a send blocks while the worker is busy
    sending a large result back: sending from the loop that reads results would deadlock."""
    while (msg := outbox.get()) is not None:
        try:
            conn.send(msg)
        except (OSError, ValueError):
            return  # the worker died; poll() notices and replaces it


class DecodePool:
    def __init__(
        self,
        workers: int,
        prefetch: int,
        decode_cfg: DecodeConfig,
        ref_cfg: ReferenceConfig,
        *,
        job_timeout_s: float,
        max_restarts: int,
        restart_window_s: float,
        on_restart: Callable[[str], None] | None = None,
        runner: Runner | None = None,
    ) -> None:
        """`runner` (a module-level function, for tests) replaces decode in the workers."""
        self.runner = runner or run_job
        self.prefetch = prefetch
        self.decode_cfg = decode_cfg
        self.ref_cfg = ref_cfg
        self.job_timeout_s = job_timeout_s
        self.max_restarts = max_restarts
        self.restart_window_s = restart_window_s
        self.on_restart = on_restart
        self._restart_times: collections.deque[float] = collections.deque()
        self._ctx = multiprocessing.get_context("spawn")
        self._workers = [self._spawn() for _ in range(workers)]

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_worker_main,
            args=(child, self.decode_cfg, self.ref_cfg, self.runner),
            name="vqmon-decode",
            daemon=True,
        )
        proc.start()
        child.close()
        outbox: queue.SimpleQueue[tuple[int, SegmentJob] | None] = queue.SimpleQueue()
        sender = threading.Thread(
            target=_sender, args=(parent, outbox), name="vqmon-decode-send", daemon=True
        )
        sender.start()
        return _Worker(proc, parent, collections.deque(), time.monotonic(), outbox, sender)

    @property
    def size(self) -> int:
        return len(self._workers)

    @property
    def in_flight(self) -> int:
        return sum(len(w.jobs) for w in self._workers)

    def free_slots(self) -> int:
        return sum(self.prefetch - len(w.jobs) for w in self._workers)

    def submit(self, job_id: int, job: SegmentJob) -> None:
        worker = min(self._workers, key=lambda w: len(w.jobs))
        if len(worker.jobs) >= self.prefetch:
            raise RuntimeError("submit() without a free slot; check free_slots() first")
        self._send(worker, job_id, job)

    def _send(self, worker: _Worker, job_id: int, job: SegmentJob) -> None:
        if not worker.jobs:
            worker.head_started = time.monotonic()
        worker.jobs.append((job_id, job))
        worker.outbox.put((job_id, job))

    def poll(self, timeout_s: float) -> list[Outcome]:
        """Collect finished jobs (waiting up to `timeout_s`) and enforce the watchdog."""
        busy = [w for w in self._workers if w.jobs]
        out: list[Outcome] = []
        if busy:
            ready = multiprocessing.connection.wait(
                [w.conn for w in busy] + [w.process.sentinel for w in busy], timeout_s
            )
            for w in busy:
                if w.conn in ready or w.process.sentinel in ready:
                    out.extend(self._drain(w))
        elif timeout_s > 0:
            time.sleep(timeout_s)
        out.extend(self._watchdog())
        return out

    def _drain(self, w: _Worker) -> list[Outcome]:
        out: list[Outcome] = []
        try:
            while w.jobs and w.conn.poll():
                msg = w.conn.recv()
                job_id, _ = w.jobs.popleft()
                w.head_started = time.monotonic()
                if msg[1] != job_id:
                    raise RuntimeError(f"worker answered job {msg[1]} for job {job_id}")
                if msg[0] == "ok":
                    out.append(Outcome(job_id, msg[2], seconds=msg[3]))
                else:
                    out.append(Outcome(job_id, None, msg[2], msg[3], msg[4]))
        except (EOFError, OSError):
            pass
        if w.jobs and not w.process.is_alive():
            out.extend(
                self._replace(
                    w, CRASHED, f"the decoder process died (exit code {w.process.exitcode})"
                )
            )
        return out

    def _watchdog(self) -> list[Outcome]:
        now = time.monotonic()
        out: list[Outcome] = []
        for w in list(self._workers):
            if w.jobs and now - w.head_started > self.job_timeout_s:
                out.extend(
                    self._replace(
                        w,
                        HUNG,
                        f"decode did not finish within {self.job_timeout_s:.0f}s "
                        "(decode timeout + watchdog grace): the worker was killed; the segment "
                        "is malformed or too heavy for this node",
                    )
                )
        return out

    def _replace(self, w: _Worker, reason: str, error: str) -> list[Outcome]:
        """Kill `w`, fail its current job, start a new worker, and hand it the queued jobs."""
        job_id, _ = w.jobs.popleft()
        seconds = time.monotonic() - w.head_started
        pending = list(w.jobs)
        self._kill(w)
        if self.on_restart is not None:
            self.on_restart(reason)
        self._budget()
        new = self._spawn()
        self._workers[self._workers.index(w)] = new
        for jid, job in pending:
            self._send(new, jid, job)
        log.warning("decode worker replaced", extra={"reason": reason, "detail": error})
        return [Outcome(job_id, None, reason, error, seconds)]

    def _budget(self) -> None:
        now = time.monotonic()
        self._restart_times.append(now)
        while self._restart_times and now - self._restart_times[0] > self.restart_window_s:
            self._restart_times.popleft()
        if len(self._restart_times) > self.max_restarts:
            raise WorkerPoolFailed(
                f"{len(self._restart_times)} decode worker restarts within "
                f"{self.restart_window_s:.0f}s (pipeline.max_worker_restarts="
                f"{self.max_restarts}); giving up so the supervisor can restart the daemon"
            )

    @staticmethod
    def _kill(w: _Worker) -> None:
        if w.process.is_alive() and w.process.pid is not None:
            os.kill(w.process.pid, signal.SIGKILL)
        w.process.join(5)
        w.outbox.put(None)
        w.sender.join(5)
        w.conn.close()

    def close(self) -> None:
        for w in self._workers:
            w.outbox.put(None)  # stops the sender ...
        for w in self._workers:
            w.sender.join(3)
            with contextlib.suppress(OSError, ValueError):
                w.conn.send(None)  # ... then the worker
        deadline = time.monotonic() + 3
        for w in self._workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
            self._kill(w)
