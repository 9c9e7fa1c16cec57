"""The screen role: parse -> screen (decode + score in worker processes) -> outputs.

Three steps on the runtime (monitor.runtime), each small:

- `ParseStep`: the segment contract (ingest.contract); caches CMAF init segments and
  attaches them; a record that breaks the contract becomes a dead letter.
- `ScreenStep`: a bounded intake in front of the worker pool (full -> MessageRejected,
  so the runtime pauses partitions); decides per rendition how fully to screen
  (`AdaptivePlanner`); hands each result to the next step.
- `OutputStep`: verdict and alert messages (monitor.messages), plus an escalation when
  the policy admits one (monitor.escalate), metrics, summary; the record is committable
  once its outputs are acknowledged.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ingest.contract import InitSegment, SegmentJob, is_display, largest_display, parse_message
from ingest.initcache import InitCache
from ingest.types import IngestError, Segment
from monitor.boundary import Edge, edge_of
from monitor.clients import Partition, Record
from monitor.escalate import Escalator
from monitor.escalation import Recent, Room
from monitor.messages import SegmentFacts, Source, alert_messages, verdict_message
from monitor.runtime import Context, Forward, Message, MessageRejected, Step
from monitor.sections import AlertsConfig, ScreeningConfig
from monitor.workers import Failed, Mode, Result, Screened, ScreenJob, WorkerPool
from scorers.types import Verdict

log = logging.getLogger(__name__)

DISPLAY_WINDOW_S = 120.0
"""A rendition not screened this long no longer sets its stream's display size."""
MAX_EDGES = 10_000
"""Renditions whose last segments' edges are kept (least recent forgotten)."""
EDGES_KEPT = 4
"""A rendition's latest segments whose edges are kept (a redelivery looks one back)."""


def source_of(record: Record) -> Source:
    return Source(record.topic, record.partition, record.offset, record.timestamp_ms)


class ParseStep(Forward):
    def __init__(self, ctx: Context, cache: InitCache, next_step: Step[SegmentJob]) -> None:
        self.ctx = ctx
        self.cache = cache
        self.next = next_step

    def submit(self, message: Message[Record]) -> None:
        r = message.record
        try:
            parsed = parse_message(r.key, r.value, r.headers, offset=r.offset, source=r.where)
        except IngestError as exc:
            self.ctx.dead_letter(r, exc.reason, str(exc))
            return
        if isinstance(parsed, InitSegment):
            try:
                self.cache.put(parsed.stream, parsed.rendition, parsed.data, source=r.where)
            except IngestError as exc:  # an init segment over its size limit
                self.ctx.dead_letter(r, exc.reason, str(exc))
                return
            self.ctx.done(r, "init")
            return
        init = self.cache.get(parsed.segment.stream, parsed.segment.rendition)
        if init is not None:
            parsed = dataclasses.replace(
                parsed, segment=dataclasses.replace(parsed.segment, init=init)
            )
        self.next.submit(Message(r, parsed, message.polled_at))


# Events a keyframe cannot show (or that must be confirmed on every frame): a full verdict
# with one of these keeps the rendition on full screens for a while.
EVENT_FLAGS = frozenset({"black", "freeze", "corruption"})


@dataclass
class _Rendition:
    segments: int = 0
    promote_left: int = 0
    usual_flags: frozenset[str] = frozenset()
    predicted: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=8))

    def reference(self) -> float | None:
        # The median: one segment that carried a short, unflagged stretch of skip frames
        # (the start of a freeze) must not drag the yardstick down for the next ones.
        if len(self.predicted) < 2:
            return None
        return float(sorted(self.predicted)[len(self.predicted) // 2])


class AdaptivePlanner:
    """How fully to screen each segment of a rendition (pure bookkeeping, no I/O).

    Full mode: always full. Adaptive mode: full for the first segments (to learn the
    rendition's frame sizes), every `full_every`-th segment, and for `promote_for`
    segments after anything looked wrong; cheap otherwise. A cheap screen whose own
    signals look wrong is redone fully by the worker on the spot (mode "promoted").
    """

    def __init__(self, config: ScreeningConfig, max_renditions: int = 100000) -> None:
        self.config = config
        self.max_renditions = max_renditions
        self._state: collections.OrderedDict[tuple[str, str], _Rendition] = (
            collections.OrderedDict()
        )

    def _get(self, stream: str, rendition: str) -> _Rendition:
        key = (stream, rendition)
        st = self._state.get(key)
        if st is None:
            st = self._state[key] = _Rendition()
            while len(self._state) > self.max_renditions:
                self._state.popitem(last=False)
        self._state.move_to_end(key)
        return st

    def plan(self, stream: str, rendition: str) -> tuple[Mode, float | None]:
        """(mode, the rendition's predicted-frame size reference for the cheap mode)."""
        policy = self.config.policy(stream)
        st = self._get(stream, rendition)
        st.segments += 1
        if policy.mode == "full":
            return "full", None
        ref = st.reference()
        if ref is None or st.promote_left > 0 or st.segments % policy.full_every == 0:
            st.promote_left = max(0, st.promote_left - 1)
            return "full", ref
        return "cheap", ref

    def learn(self, verdict: Verdict, predicted_bytes: float) -> None:
        policy = self.config.policy(verdict.stream)
        st = self._get(verdict.stream, verdict.rendition)
        kinds = {f.kind for f in verdict.flags}
        if verdict.mode != "cheap":
            # A new picture property (not an event) is noted, not chased: the next full
            # screens see whether it stays.
            if kinds - st.usual_flags - EVENT_FLAGS:
                st.promote_left = max(st.promote_left, 1)
            st.usual_flags = frozenset(kinds - EVENT_FLAGS)
        if kinds & EVENT_FLAGS:
            st.promote_left = policy.promote_for
        elif predicted_bytes > 0:
            st.predicted.append(predicted_bytes)


class ScreenStep:
    """A bounded intake in front of the worker pool; results go to the next step."""

    def __init__(
        self,
        ctx: Context,
        pool: WorkerPool,
        planner: AdaptivePlanner,
        next_step: Step[Screened],
        *,
        intake: int,
        observe: Callable[[str, float], None] | None = None,
        recent: Callable[[str, str], Recent | None] | None = None,
        room: Callable[[str], Room] | None = None,
    ) -> None:
        self.ctx = ctx
        self.pool = pool
        self.planner = planner
        self.next = next_step
        self.capacity = intake
        self.observe = observe or (lambda _n, _v: None)
        self.recent = recent or (lambda _s, _r: None)
        """The rendition's rolling medians, for the worker's escalation check."""
        self.room: Callable[[str], Room] = room or (lambda _s: "all")
        """Which escalations the limits would admit of a stream now (the worker's hint)."""
        self.intake: collections.deque[Message[SegmentJob]] = collections.deque()
        self.running: dict[int, Message[SegmentJob]] = {}
        self.displays: collections.OrderedDict[str, dict[str, tuple[tuple[int, int], float]]]
        self.displays = collections.OrderedDict()
        """Per stream, each rendition's coded size as last screened without damage, and
        when. The largest of those seen within DISPLAY_WINDOW_S (the ladder's top rung)
        is given to segments that carry no `display` header, so every worker judges a
        stream's rungs at one size instead of each learning it from what it happened to
        see (a worker that had not seen the top rung judged a low one at its coded size).
        A damaged segment teaches nothing; a rung gone from the ladder is forgotten."""
        self._edges: collections.OrderedDict[tuple[str, str], dict[int, Edge]]
        self._edges = collections.OrderedDict()
        """Per rendition, what its last EDGES_KEPT segments decided ended on, by seq
        (monitor.boundary): seq - 1's is given to a segment's job (a redelivered segment
        finds its predecessor's, not its own)."""
        self._held: dict[int, Result] = {}
        """Finished results waiting for an earlier job of their rendition: the policy
        decides a rendition's segments in the order they were sent (see _release)."""
        self._ids = 0
        self._last_progress = time.monotonic()

    @property
    def depth(self) -> int:
        return len(self.intake)

    def submit(self, message: Message[SegmentJob]) -> None:
        if len(self.intake) >= self.capacity:
            raise MessageRejected
        self.intake.append(message)

    def _dispatch(self) -> None:
        while self.intake and self.pool.free_slots() > 0:
            message = self.intake.popleft()
            seg = message.payload.segment
            mode, ref = self.planner.plan(seg.stream, seg.rendition)
            recent = self.recent(seg.stream, seg.rendition)
            if recent is not None and recent.settled and self._in_flight(seg):
                # the rendition's habits and events may change with the earlier segment
                # still being screened (a still shot that ends is no habit any more): a
                # stale hint could skip the frames of what the policy then escalates
                recent = dataclasses.replace(recent, settled=())
            self._ids += 1
            self.running[self._ids] = message
            self.observe("queue_seconds", time.monotonic() - message.polled_at)
            room = self.room(seg.stream)
            job = message.payload
            if seg.display is None and (shown := self.display_of(seg.stream)) is not None:
                job = dataclasses.replace(job, segment=dataclasses.replace(seg, display=shown))
            # the segment just before's, if it was decided (not after a gap)
            edge = self._edges.get((seg.stream, seg.rendition), {}).get(seg.seq - 1)
            self.pool.submit(self._ids, ScreenJob(job, mode, ref, recent, room, edge))

    def _in_flight(self, seg: Segment) -> bool:
        """An earlier segment of seg's rendition is being screened (not yet decided)."""
        return any(
            m.payload.segment.stream == seg.stream and m.payload.segment.rendition == seg.rendition
            for m in self.running.values()
        )

    def poll(self, wait_s: float = 0.02) -> None:
        self._dispatch()
        for result in self.pool.poll(wait_s if self.running else 0.0):
            self._held[result.job_id] = result
        self._release()
        self._dispatch()
        self.next.poll()

    def _release(self) -> None:
        """Hand on each held result once no earlier job of its rendition is running.
        Workers finish out of order (a cheap job overtakes a full one); a rendition's
        rolling state (habits, runs, ongoing events) is order-sensitive, and the settled
        hint a job carried was made for the state its predecessors leave, so a later
        segment decided first could leave that hint stale and the worker's skipped frames
        would drop an impairment as no_frames. A slow job holds its rendition's later
        results back, at most until the pool's job timeout fails it."""
        blocked: set[tuple[str, str]] = set()
        for job_id, message in list(self.running.items()):  # in dispatch order
            seg = message.payload.segment
            key = (seg.stream, seg.rendition)
            if job_id in self._held and key not in blocked:
                self._finished(self._held.pop(job_id))
            else:
                blocked.add(key)
        for job_id in [j for j in self._held if j not in self.running]:
            self._finished(self._held.pop(job_id))  # its message is gone: dropped there

    def _finished(self, result: Result) -> None:
        self._last_progress = time.monotonic()
        message = self.running.pop(result.job_id, None)
        if message is None:
            return  # its partition was revoked meanwhile
        if isinstance(result, Failed):
            self.observe("screen_seconds", result.seconds)
            self.ctx.dead_letter(message.record, result.reason, result.error)
            return
        self.observe("screen_seconds", result.seconds)
        self.observe("score_seconds", result.score_seconds)
        self._learn_display(result)
        self._learn_edge(result.verdict)
        self.planner.learn(result.verdict, result.predicted_bytes)
        self.next.submit(Message(message.record, result, message.polled_at))

    def _learn_edge(self, v: Verdict) -> None:
        key = (v.stream, v.rendition)
        edges = self._edges.setdefault(key, {})
        edge = edge_of(v)
        if edge is None:
            edges.pop(v.seq, None)
        else:
            edges[v.seq] = edge
        while len(edges) > EDGES_KEPT:
            del edges[min(edges)]
        self._edges.move_to_end(key)
        while len(self._edges) > MAX_EDGES:
            self._edges.popitem(last=False)

    def display_of(self, stream: str) -> tuple[int, int] | None:
        """The size a stream's segments without a `display` header are judged at."""
        now = time.monotonic()
        seen = self.displays.get(stream, {}).values()
        return largest_display(size for size, at in seen if now - at < DISPLAY_WINDOW_S)

    def _learn_display(self, result: Screened) -> None:
        size = (result.info.width, result.info.height)
        if result.decode.errors or result.decode.corrupt_frames:
            return  # a damaged segment's size is not the ladder's
        if not is_display(size):
            return  # no display a header could carry either
        v = result.verdict
        rungs = self.displays.setdefault(v.stream, {})
        rungs[v.rendition] = (size, time.monotonic())
        while len(rungs) > 64:  # renditions of one stream: a ladder, bounded
            del rungs[next(iter(rungs))]
        self.displays.move_to_end(v.stream)
        while len(self.displays) > 10_000:
            self.displays.popitem(last=False)

    def join(self, deadline: float) -> None:
        while (self.intake or self.running) and time.monotonic() < deadline:
            self.poll(wait_s=min(0.05, max(0.0, deadline - time.monotonic())))
        self.next.join(deadline)

    def forget(self, partitions: set[Partition]) -> int:
        kept = [m for m in self.intake if m.record.tp not in partitions]
        dropped = len(self.intake) - len(kept)
        self.intake = collections.deque(kept)
        return dropped + self.next.forget(partitions)

    def stalled_s(self) -> float:
        if not self.running:
            return 0.0
        return min(self.pool.oldest_job_s(), time.monotonic() - self._last_progress)

    def close(self) -> None:
        self.pool.close()
        self.next.close()


class OutputStep:
    """Verdict, alert and escalation messages for each screened segment, published together."""

    def __init__(
        self,
        ctx: Context,
        verdicts_topic: str,
        alerts_topic: str,
        alerts: AlertsConfig,
        on_verdict: Callable[[Verdict, Screened], None] | None = None,
        escalator: Escalator | None = None,
    ) -> None:
        self.ctx = ctx
        self.verdicts_topic = verdicts_topic
        self.alerts_topic = alerts_topic
        self.alerts = alerts
        self.on_verdict = on_verdict or (lambda _v, _s: None)
        self.escalator = escalator

    def submit(self, message: Message[Screened]) -> None:
        screened = message.payload
        verdict = screened.verdict
        seg = _segment_facts(message)
        # decided first: the verdict says whether it was escalated (a restart's warm start
        # reads that back into the budget window)
        escalations = None if self.escalator is None else self.escalator.outputs(screened)
        messages = [
            verdict_message(
                self.verdicts_topic,
                verdict,
                seg,
                source_of(message.record),
                None if escalations is None else bool(escalations),
            ),
            *alert_messages(self.alerts_topic, verdict, self.alerts),
            *(escalations or ()),
        ]
        self.on_verdict(verdict, screened)
        self.ctx.publish(message.record, messages)

    def poll(self) -> None:
        pass

    def join(self, deadline: float) -> None:
        pass

    def forget(self, partitions: set[Partition]) -> int:
        return 0

    def stalled_s(self) -> float:
        return 0.0

    def close(self) -> None:
        pass


def _segment_facts(message: Message[Screened]) -> SegmentFacts:
    s = message.payload
    return SegmentFacts(
        s.info,
        s.declared_bitrate,
        s.decode.errors,
        s.decode.corrupt_frames,
        s.decode.seconds,
        s.decode.messages,
        s.suspicion,
    )
