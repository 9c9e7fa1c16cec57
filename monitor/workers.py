"""Screen worker processes behind a watchdog: decode and score where the pixels are.

Each worker decodes a segment with PyAV and runs the CPU scoring chain on it in the
same process, so the pixels never cross a pipe: a worker answers with a typed
`Screened` result of a few kilobytes (verdict, stream info, decode summary) or a
`Failed` one. Workers are processes so a decode or an inference that hangs inside
FFmpeg or ONNX Runtime (beyond the decoder's cooperative deadline), or crashes the
interpreter, can be killed and replaced without taking the daemon down. Each worker
has its own pipe: killing one cannot corrupt a queue shared with the others.

Frames cross the pipe only when the diagnosis tier may want them: when the verdict trips
an escalation trigger (or the audit sample picks it), the worker also builds the
`EscalationRequest` (a few hundred kB of JPEGs) and attaches it to `Screened`; the
parent's `EscalationPolicy` then decides (rate limits, budget) whether it is sent.

A worker killed or dead while it worked on a segment is charged to that segment (it
becomes a dead letter); the restart budget counts only deaths no input explains (a
worker dying idle, a worker that cannot start), so a flood of hostile input costs
that input, not the service. Past the budget the pool raises WorkerPoolFailed and the
daemon exits for its supervisor.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from threadpoolctl import threadpool_limits

from ingest.config import DecodeConfig, SamplingConfig, StrictModel
from ingest.contract import SegmentJob
from ingest.decode import decode
from ingest.reference import ReferenceConfig, fetch
from ingest.types import DecodedSegment, DecodeTimeout, IngestError, StreamInfo
from monitor.boundary import Edge, held_across
from monitor.escalation import (
    EscalationConfig,
    Recent,
    Room,
    candidate,
    is_soft,
    is_weak,
    unsettled,
)
from scorers.artifacts import MEASURES_KEY
from scorers.chain import Chain
from scorers.types import Verdict
from scorers.vlm.request import make_request
from scorers.vlm.types import EscalationRequest, RequestError

log = logging.getLogger(__name__)

HUNG = DecodeTimeout.reason
CRASHED = "decoder_crashed"
INTERNAL = "internal_error"
SCORER_ERROR = "scorer_error"

Mode = Literal["full", "cheap"]


class WorkerPoolFailed(Exception):
    """Workers keep dying for no input's fault: more restarts than the configured budget."""


@dataclass(frozen=True, slots=True)
class ScreenJob:
    """One segment to screen: how fully, and what the cheap mode compares against."""

    job: SegmentJob
    mode: Mode = "full"
    predicted_bytes_ref: float | None = None
    """The rendition's small predicted frames, recently (cheap mode's yardstick): the median
    over its recent clean segments of their 10th percentile of predicted-frame sizes."""
    recent: Recent | None = None
    """The rendition's rolling medians (the escalation's relative triggers)."""
    room: Room = "all"
    """Which escalations the limits would admit of this stream now (EscalationPolicy.room):
    "soft" makes no request for an audit or a weak trigger, "impaired" none for a soft
    trigger either, "none" makes none."""
    prev_edge: Edge | None = None
    """What the rendition's previous segment ended on, when it was screened before this job
    left: a freeze from this segment's first frame may be a picture that stopped at the
    boundary (monitor.boundary)."""


@dataclass(frozen=True, slots=True)
class DecodeSummary:
    errors: int
    corrupt_frames: int
    seconds: float
    messages: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Screened:
    """A verdict made in a worker, with what the outputs and the adaptive mode need."""

    job_id: int
    verdict: Verdict
    info: StreamInfo
    decode: DecodeSummary
    predicted_bytes: float
    """10th percentile of the segment's predicted-frame sizes (from the packets, any mode)."""
    suspicion: tuple[str, ...] = ()
    """Why a cheap screen was promoted to a full one (empty otherwise)."""
    seconds: float = 0.0
    score_seconds: float = 0.0
    declared_bitrate: int | None = None
    escalation: EscalationRequest | None = None
    """Frames and verdict for the diagnosis tier, only when a trigger or the audit fired."""
    escalation_error: str | None = None
    """Why no request could be made although a trigger fired (e.g. no sampled frames)."""


@dataclass(frozen=True, slots=True)
class Failed:
    job_id: int
    reason: str
    error: str
    seconds: float = 0.0


Result = Screened | Failed


@dataclass
class WorkerSetup:
    """What each worker process builds its decoder and scoring chain from."""

    decode: DecodeConfig
    references: ReferenceConfig
    scorers: Sequence[StrictModel] = ()
    """Scorer configs (the `scorers:` list); empty runs no scorer (decode only)."""
    cheap_ratio: float = 0.9
    """Cheap mode promotes when over a quarter of the predicted frames are smaller than this
    share of the reference (frozen and black pictures code to skip frames)."""
    escalation: EscalationConfig | None = None
    """Triggers and frame settings of the escalation; None makes no escalation requests."""
    _chain: Chain | None = field(default=None, repr=False)

    @property
    def chain(self) -> Chain | None:
        if self._chain is None and self.scorers:
            self._chain = Chain.from_configs(self.scorers)
        return self._chain


Runner = Callable[[int, ScreenJob, WorkerSetup], Result]


def _worker_main(
    conn: multiprocessing.connection.Connection, setup: WorkerSetup, runner: Runner
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    # The pool already fills the cores: no BLAS helper threads. OpenBLAS starts one per core
    # and they spin after each call, taking CPU from the other workers (~3% a segment).
    threadpool_limits(1)
    try:
        _ = setup.chain  # load the models now, not on the first segment
    except Exception:  # reported per job by the runner, with the reason
        log.debug("scoring chain not built at start", exc_info=True)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        job_id, job = msg
        conn.send(runner(job_id, job, setup))


# What a keyframe shows of an event, and what the cheap verdict may report: picture
# properties (blur, noise, banding, blockiness) judged on one intra-coded frame differ from
# the same judged on a segment's sampled frames, so they are left to the full screens.
CHEAP_FLAGS = frozenset({"black", "corruption"})


def cheap_suspicion(
    decoded: DecodedSegment, verdict: Verdict, ref: float | None, ratio: float
) -> list[str]:
    """Why a keyframes-only screen should be redone fully (empty when it looks fine)."""
    why = []
    p = decoded.packets
    damaged = p is not None and (p.corrupt or p.pts_gaps)
    if decoded.decode_errors or decoded.corrupt_frames or damaged:
        why.append("corruption")
    events = {f.kind for f in verdict.flags} & CHEAP_FLAGS
    if events:
        why.append("flags:" + ",".join(sorted(events)))
    if p is not None and ref:
        predicted = p.sizes[~p.keyframe]
        if predicted.size and float((predicted < ratio * ref).mean()) > 0.25:
            why.append("tiny_frames")
    return why


def screen_job(job_id: int, job: ScreenJob, setup: WorkerSetup) -> Result:
    """Fetch (references), decode and score one segment; failures become a typed `Failed`."""
    started = time.monotonic()
    seg = job.job.segment
    try:
        if job.job.uri is not None:
            data = fetch(
                job.job.uri,
                max_bytes=setup.decode.limits.max_bytes,
                config=setup.references,
                source=seg.source,
            )
            seg = dataclasses.replace(seg, data=data)
        cfg = setup.decode
        if job.mode == "cheap":
            cfg = cfg.model_copy(
                update={"sampling": SamplingConfig(mode="keyframes", count=cfg.sampling.count)}
            )
        decoded = decode(seg, cfg)
    except IngestError as exc:
        return Failed(job_id, exc.reason, str(exc), time.monotonic() - started)
    except Exception as exc:  # a decoder bug must not kill the worker: report and go on
        return Failed(job_id, INTERNAL, f"{type(exc).__name__}: {exc}", time.monotonic() - started)
    decoded_at = time.monotonic()
    suspicion: list[str] = []
    try:
        verdict = _score(setup, decoded)
        if job.mode == "cheap":
            kept = tuple(f for f in verdict.flags if f.kind in CHEAP_FLAGS)
            # nor the raw measures: a keyframe's edges are not the sampled frames' level
            extra = {k: v for k, v in verdict.extra.items() if k != MEASURES_KEY}
            verdict = dataclasses.replace(verdict, mode="cheap", flags=kept, extra=extra)
            suspicion = cheap_suspicion(
                decoded, verdict, job.predicted_bytes_ref, setup.cheap_ratio
            )
            if suspicion:
                decoded = decode(seg, setup.decode)
                verdict = dataclasses.replace(_score(setup, decoded), mode="promoted")
    except IngestError as exc:
        return Failed(job_id, exc.reason, str(exc), time.monotonic() - started)
    except Exception as exc:  # a scorer bug costs this segment, not the worker
        log.exception("scoring failed", extra={"source": seg.source})
        return Failed(
            job_id, SCORER_ERROR, f"{type(exc).__name__}: {exc}", time.monotonic() - started
        )
    try:
        verdict = held_across(verdict, job.prev_edge)
    except Exception:  # a scorer's odd evidence costs the boundary judgement, not the worker
        log.exception("boundary judgement failed", extra={"source": seg.source})
    request, request_error = _escalation(setup, job, decoded, verdict)
    done = time.monotonic()
    return Screened(
        job_id,
        verdict,
        decoded.info,
        DecodeSummary(
            decoded.decode_errors, decoded.corrupt_frames, decoded.decode_seconds, decoded.errors
        ),
        decoded.packets.predicted_bytes() if decoded.packets is not None else 0.0,
        tuple(suspicion),
        done - started,
        done - decoded_at,
        seg.bitrate,
        request,
        request_error,
    )


def _escalation(
    setup: WorkerSetup, job: ScreenJob, decoded: DecodedSegment, verdict: Verdict
) -> tuple[EscalationRequest | None, str | None]:
    """The escalation request when a trigger or the audit picks this verdict."""
    cfg = setup.escalation
    if cfg is None:
        return None, None
    reason = candidate(verdict, cfg, job.recent)
    if reason is None:
        return None, None
    reasons = reason.split(",")
    # audits, weak triggers, and the rendition's habits and ongoing events alone; soft
    # triggers beside them at most
    news = unsettled(verdict, reasons, job.recent)
    weak = reason == "audit" or not news or is_weak(news)
    refused = {"none": True, "impaired": weak or is_soft(news), "soft": weak, "all": False}
    if refused[job.room]:
        return None, None  # the limits would refuse it: no JPEG frames for nothing
    try:
        return make_request(decoded, verdict, reason, cfg.frames), None
    except RequestError as exc:
        return None, str(exc)
    except Exception as exc:  # a JPEG encoding problem must not cost the verdict
        log.warning("escalation request failed", extra={"segment": verdict.segment_id})
        return None, f"{type(exc).__name__}: {exc}"


def _score(setup: WorkerSetup, decoded: DecodedSegment) -> Verdict:
    chain = setup.chain
    if chain is None:
        return Verdict.empty(decoded, "decode-only")
    return chain.score([decoded])[0]


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    jobs: collections.deque[tuple[int, ScreenJob]]
    head_started: float
    outbox: queue.SimpleQueue[tuple[int, ScreenJob] | None]
    sender: threading.Thread


def _sender(conn: multiprocessing.connection.Connection, outbox: queue.SimpleQueue[object]) -> None:
    """Feeds jobs to one worker. A thread, because a send blocks while the worker is busy
    sending a result back: sending from the loop that reads results could deadlock."""
    while (msg := outbox.get()) is not None:
        try:
            conn.send(msg)
        except (OSError, ValueError):
            return  # the worker died; poll() notices and replaces it


class WorkerPool:
    def __init__(
        self,
        workers: int,
        prefetch: int,
        setup: WorkerSetup,
        *,
        job_timeout_s: float,
        max_restarts: int,
        restart_window_s: float,
        on_restart: Callable[[str], None] | None = None,
        runner: Runner | None = None,
    ) -> None:
        """`runner` (a module-level function, for tests) replaces screen_job in the workers."""
        self.runner = runner or screen_job
        self.prefetch = prefetch
        self.setup = setup
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
            args=(child, self.setup, self.runner),
            name="vqmon-screen",
            daemon=True,
        )
        proc.start()
        child.close()
        outbox: queue.SimpleQueue[tuple[int, ScreenJob] | None] = queue.SimpleQueue()
        sender = threading.Thread(
            target=_sender, args=(parent, outbox), name="vqmon-screen-send", daemon=True
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

    def oldest_job_s(self) -> float:
        """How long the longest-running current job has been at work (0 when idle)."""
        now = time.monotonic()
        return max((now - w.head_started for w in self._workers if w.jobs), default=0.0)

    def submit(self, job_id: int, job: ScreenJob) -> None:
        worker = min(self._workers, key=lambda w: len(w.jobs))
        if len(worker.jobs) >= self.prefetch:
            raise RuntimeError("submit() without a free slot; check free_slots() first")
        self._send(worker, job_id, job)

    def _send(self, worker: _Worker, job_id: int, job: ScreenJob) -> None:
        if not worker.jobs:
            worker.head_started = time.monotonic()
        worker.jobs.append((job_id, job))
        worker.outbox.put((job_id, job))

    def poll(self, timeout_s: float) -> list[Result]:
        """Collect finished jobs (waiting up to `timeout_s`) and enforce the watchdog."""
        busy = [w for w in self._workers if w.jobs]
        out: list[Result] = []
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

    def _drain(self, w: _Worker) -> list[Result]:
        out: list[Result] = []
        try:
            while w.jobs and w.conn.poll():
                msg = w.conn.recv()
                job_id, _ = w.jobs.popleft()
                w.head_started = time.monotonic()
                if getattr(msg, "job_id", None) != job_id:
                    raise RuntimeError(f"worker answered {msg!r:.80} for job {job_id}")
                out.append(msg)
        except (EOFError, OSError):
            pass
        if w.jobs and not w.process.is_alive():
            out.extend(
                self._replace(
                    w, CRASHED, f"the worker process died (exit code {w.process.exitcode})"
                )
            )
        return out

    def _watchdog(self) -> list[Result]:
        now = time.monotonic()
        out: list[Result] = []
        for w in list(self._workers):
            if w.jobs and now - w.head_started > self.job_timeout_s:
                out.extend(
                    self._replace(
                        w,
                        HUNG,
                        f"screening did not finish within {self.job_timeout_s:.0f}s "
                        "(decode timeout + watchdog grace): the worker was killed; the segment "
                        "is malformed or too heavy for this node",
                    )
                )
            elif not w.jobs and not w.process.is_alive():
                # Nothing explains this death: it counts against the restart budget.
                self._kill(w)
                self._restarted("idle_death", charged=False)
                self._workers[self._workers.index(w)] = self._spawn()
        return out

    def _replace(self, w: _Worker, reason: str, error: str) -> list[Result]:
        """Kill `w`, fail its current job, start a new worker, and hand it the queued jobs."""
        job_id, _ = w.jobs.popleft()
        seconds = time.monotonic() - w.head_started
        pending = list(w.jobs)
        self._kill(w)
        self._restarted(reason, charged=True)
        new = self._spawn()
        self._workers[self._workers.index(w)] = new
        for jid, job in pending:
            self._send(new, jid, job)
        log.warning("screen worker replaced", extra={"reason": reason, "detail": error})
        return [Failed(job_id, reason, error, seconds)]

    def _restarted(self, reason: str, *, charged: bool) -> None:
        """Count a restart; only those no input is charged with use up the budget."""
        if self.on_restart is not None:
            self.on_restart(reason)
        if charged:
            return
        now = time.monotonic()
        self._restart_times.append(now)
        while self._restart_times and now - self._restart_times[0] > self.restart_window_s:
            self._restart_times.popleft()
        if len(self._restart_times) > self.max_restarts:
            raise WorkerPoolFailed(
                f"{len(self._restart_times)} screen worker deaths no input explains within "
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

    def close(self, timeout_s: float = 3.0) -> None:
        for w in self._workers:
            w.outbox.put(None)  # stops the sender ...
        for w in self._workers:
            w.sender.join(min(timeout_s, 1.0))
            with contextlib.suppress(OSError, ValueError):
                w.conn.send(None)  # ... then the worker
        deadline = time.monotonic() + timeout_s
        for w in self._workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
            self._kill(w)
