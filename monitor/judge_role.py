"""The judge role: verdicts -> incidents and encoder decisions, on the runtime of steps.

`vqmon run --role judge` (also part of `--role all`). One consumer group
(`judge_role.group_id`) reads vqmon.verdicts and vqmon.dead-letter; `JudgeStep` feeds
monitor.judge.Judge and monitor.encoding.EncodingPolicy and publishes vqmon.incidents
(key: incident id) and vqmon.encoder-decisions (key: stream/rendition).

Partitioning. Localisation (source vs one rendition) needs every rendition of a stream
in one judge. The screen role produces verdicts and dead letters with the stream name as
partition key (monitor.publisher.OutMessage.partition_key, murmur2 like kafka-python's
default partitioner), so a stream's renditions share one partition index in both
topics. Both topics are created with the same partition count, and the group's range
assignor gives partition i of each topic to the same member: a judge owns whole streams
and the role scales by adding members.

Offsets. A verdict waits in its round (all renditions of one seq) until the judge
judges that round; the round's records are then committed together once the incidents
and decisions made from it are acknowledged (`Context.publish_group`). A crash before
that redelivers the whole round.

State without local disk. On every partition assignment the step is rebuilt for the
streams the instance now owns (`rebuild`):
1. replay the last `replay_segments` verdicts before the judge group's committed offset
   of each assigned verdicts partition through `Judge.observe` (events dropped: they
   were published before those offsets were committed), then judge the rounds it left
   waiting (every verdict before a committed offset was in a judged round): baselines
   and the gates' bad and good runs come back as they were;
2. drop the incidents that replay made up (`Judge.forget_incidents`): a window that
   starts mid-run would invent some, and the topic is the authority;
3. `Judge.restore` from vqmon.incidents, read from the beginning up to its end offsets
   (compacted: the latest event per incident id): open incidents keep their ids and
   resolve once, resolved ids are remembered;
4. `EncodingPolicy.restore` from vqmon.encoder-decisions likewise (settings, cooldowns);
5. consume from the committed offset.
Alertmanager (`alertmanager.enabled`): incident events and, periodically, the open
incidents are pushed by `AlertPusher` off the runtime's thread.
Diagnoses (vqmon.diagnoses, when the topic exists) are read by every judge from the
topic's end outside the group, so their partitioning does not matter: each judge
attaches the ones about its own incidents.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from kafka.coordinator.assignors.range import RangePartitionAssignor
from pydantic import Field

from ingest import kafka as kafka_io
from ingest.config import StrictModel
from monitor.alertmanager import AlertmanagerClient, AlertmanagerError
from monitor.clients import (
    Consumer,
    KafkaConsumerClient,
    Partition,
    Producer,
    Record,
    partition_for,
)
from monitor.encoding import EncodingPolicy
from monitor.health import HealthState
from monitor.judge import Judge
from monitor.messages import (
    decision_message,
    incident_message,
)
from monitor.metrics import Metrics
from monitor.runtime import Context, Message, Runtime, RuntimeSettings
from monitor.types import EncoderDecision, Incident, MessageError, Observation, finite_number

if TYPE_CHECKING:
    from monitor.config import Config

log = logging.getLogger(__name__)

T = TypeVar("T")

UNREADABLE_VERDICT = "unreadable_verdict"


class JudgeRoleConfig(StrictModel):
    """`vqmon run --role judge`: where the judge reads, how it rebuilds its state."""

    group_id: str = Field(
        "vqmon-judge",
        description="Consumer group of the judge role (judges sharing it split the streams).",
    )
    tick_interval_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How often waiting rounds and silent streams are checked (Judge.tick).",
    )
    replay_segments: int = Field(
        200,
        ge=0,
        le=100000,
        description="Verdicts per assigned partition read back before the committed offset on "
        "assignment, to rebuild baselines and bad runs (0: start cold).",
    )
    restore_timeout_s: float = Field(
        60.0, gt=0, description="Most time to read the incidents and decisions topics back."
    )
    read_diagnoses: bool = Field(
        True, description="Attach VLM diagnoses (kafka.topics.diagnoses) when that topic exists."
    )
    compact_outputs: bool = Field(
        True,
        description="Create the incidents and encoder-decisions topics with "
        "cleanup.policy=compact (they hold the judge's state).",
    )


@dataclass(frozen=True, slots=True)
class JudgeTopics:
    verdicts: str
    dead_letter: str
    incidents: str
    decisions: str
    diagnoses: str | None = None


def summarize_diagnosis(doc: Mapping[str, Any]) -> dict[str, Any]:
    """What an incident keeps of a vqmon.diagnosis/1: model, class, severity, score. Only
    short text and finite numbers are kept (the incident is re-published with it)."""
    out: dict[str, Any] = {
        key: _scalar(doc.get(key)) for key in ("segment_id", "model", "prompt_version")
    }
    tasks = doc.get("tasks")
    for task in tasks if isinstance(tasks, list) else ():
        if not isinstance(task, Mapping):
            continue
        for key in ("degradation", "severity", "score_mean", "global_score"):
            value = _scalar(task.get(key))
            if value is not None and key not in out:
                out[key] = value
    return out


def _scalar(value: Any) -> str | float | None:
    """Short valid text or a finite number, else None."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return None
        return value[:200]
    return finite_number(value)


# ---------------------------------------------------------------- reading state back


class StateReader(Protocol):
    """Reads the judge's state back from Kafka (tests inject an in-memory one)."""

    def partition_count(self, topic: str) -> int: ...

    def incidents(self) -> list[Incident]: ...

    def decisions(self) -> list[EncoderDecision]: ...

    def committed(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        """The judge group's committed offsets (partitions without one are left out)."""
        ...

    def recent(self, ends: Mapping[Partition, int], count: int) -> list[Observation]:
        """Up to `count` verdicts of each partition before its offset in `ends`, in order."""
        ...

    def diagnoses(self) -> list[dict[str, Any]]:
        """Diagnoses published since the last call (from the topic's end at start)."""
        ...

    def close(self) -> None: ...


class KafkaStateReader:
    """Plain consumers without a group (assign + seek): never commits, never rebalances."""

    def __init__(
        self,
        cfg: kafka_io.KafkaConfig,
        bootstrap: list[str],
        topics: JudgeTopics,
        timeout_s: float,
    ) -> None:
        from kafka import KafkaConsumer

        self.topics = topics
        self.timeout_s = timeout_s
        opts = kafka_io.client_options(cfg, bootstrap)
        # Only asks the group coordinator for committed offsets: never subscribes, so it
        # never joins the group it names.
        self._offsets = KafkaConsumer(group_id=cfg.group_id, enable_auto_commit=False, **opts)
        self._c = kafka_io.make_reader(cfg, bootstrap)
        self._diag: Any = None
        if topics.diagnoses is not None:
            self._diag = KafkaConsumer(enable_auto_commit=False, **opts)
            tps = self._tps(self._diag, topics.diagnoses)
            self._diag.assign(tps)
            self._diag.seek_to_end(*tps)

    @staticmethod
    def _tps(consumer: Any, topic: str) -> list[Any]:
        from kafka.structs import TopicPartition

        parts = consumer.partitions_for_topic(topic) or set()
        return [TopicPartition(topic, p) for p in sorted(parts)]

    def partition_count(self, topic: str) -> int:
        return len(self._c.partitions_for_topic(topic) or ())

    def _read(
        self, starts: Mapping[Any, int], ends: Mapping[Any, int], *, past_end: bool = False
    ) -> list[Any]:
        """Records of each partition from its start up to its end offset (read past a
        listed end: kafka_io.read_range)."""
        out, left = kafka_io.read_range(self._c, starts, ends, self.timeout_s, past_end=past_end)
        if left:
            log.warning("state read timed out", extra={"left": [str(tp) for tp in left]})
        return out

    def _whole(self, topic: str) -> list[Any]:
        tps = self._tps(self._c, topic)
        if not tps:
            return []
        begins = self._c.beginning_offsets(tps)
        ends = self._c.end_offsets(tps)
        return self._read(begins, ends, past_end=True)

    def incidents(self) -> list[Incident]:
        return _parse_all(self._whole(self.topics.incidents), Incident.from_json)

    def decisions(self) -> list[EncoderDecision]:
        return _parse_all(self._whole(self.topics.decisions), EncoderDecision.from_json)

    def committed(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        from kafka.structs import TopicPartition

        out: dict[Partition, int] = {}
        for p in partitions:
            offset = self._offsets.committed(TopicPartition(*p), timeout_ms=5000)
            if offset:
                out[p] = int(offset)
        return out

    def recent(self, ends: Mapping[Partition, int], count: int) -> list[Observation]:
        from kafka.structs import TopicPartition

        if count <= 0 or not ends:
            return []
        tps = {TopicPartition(*p): end for p, end in ends.items()}
        begins = self._c.beginning_offsets(list(tps))
        starts = {tp: max(begins.get(tp, 0), end - count) for tp, end in tps.items()}
        return _parse_all(self._read(starts, tps), Observation.from_verdict_json)

    def diagnoses(self) -> list[dict[str, Any]]:
        if self._diag is None:
            return []
        out: list[dict[str, Any]] = []
        for batch in self._diag.poll(timeout_ms=0).values():
            for r in batch:
                try:
                    doc = json.loads(r.value)
                except (ValueError, TypeError, RecursionError):
                    continue
                if isinstance(doc, dict) and isinstance(doc.get("segment_id"), str):
                    out.append(doc)
        return out

    def close(self) -> None:
        self._c.close(autocommit=False)
        self._offsets.close(autocommit=False)
        if self._diag is not None:
            self._diag.close(autocommit=False)


def _parse_all(records: Iterable[Any], parse: Callable[[Mapping[str, Any]], T]) -> list[T]:
    out: list[T] = []
    for r in records:
        try:
            doc = json.loads(r.value)
            out.append(parse(doc))
        except (ValueError, TypeError, MessageError, KeyError, ArithmeticError, RecursionError):
            log.debug("state record skipped", extra={"offset": getattr(r, "offset", None)})
    return out


# ---------------------------------------------------------------- Alertmanager


class AlertPusher:
    """Pushes incident events to Alertmanager off the runtime's thread (optional work).

    A bounded queue: when Alertmanager is slow or down, batches are dropped and counted,
    never the loop held. Open incidents are re-pushed every `resolve_timeout_s / 3` by
    the step (`due`), so an alert ends by itself if vqmon stops.
    """

    def __init__(self, client: AlertmanagerClient, *, queue_size: int = 100) -> None:
        self.client = client
        self.dropped = 0
        self.failed = 0
        self.sent = 0
        self._queue: queue.Queue[tuple[list[Incident], float] | None] = queue.Queue(queue_size)
        self._last_full = 0.0
        self._thread = threading.Thread(target=self._run, name="vqmon-alertmanager", daemon=True)
        self._thread.start()

    def submit(self, incidents: list[Incident], now: float) -> None:
        if not incidents:
            return
        try:
            self._queue.put_nowait((list(incidents), now))
        except queue.Full:
            self.dropped += 1

    def due(self, now: float) -> bool:
        """Whether the open incidents should be re-pushed now."""
        if now - self._last_full >= self.client.cfg.resolve_timeout_s / 3:
            self._last_full = now
            return True
        return False

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            incidents, now = item
            try:
                self.sent += self.client.push(incidents, now)
            except AlertmanagerError as exc:
                self.failed += 1
                log.warning("alertmanager push failed", extra={"error": str(exc)[:300]})
            except Exception:  # this thread must outlive any one batch
                self.failed += 1
                log.exception("alertmanager push failed unexpectedly")

    def close(self, timeout_s: float = 2.0) -> None:
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)


# ---------------------------------------------------------------- the step


class JudgeHooks(Protocol):
    """Observer (monitor.metrics.Metrics implements it)."""

    def observe_incidents(self, events: Iterable[Incident]) -> None: ...

    def set_open_incidents(self, incidents: Iterable[Incident]) -> None: ...


@dataclass
class _Waiting:
    """The records of one (stream, seq) round not yet judged, and what they said."""

    records: list[Record] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)


class JudgeStep:
    """The judge role's one step (monitor.runtime.Step over raw records)."""

    def __init__(
        self,
        ctx: Context,
        judge: Judge,
        policy: EncodingPolicy,
        topics: JudgeTopics,
        *,
        tick_interval_s: float = 1.0,
        hooks: JudgeHooks | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ctx = ctx
        self.judge = judge
        self.policy = policy
        self.topics = topics
        self.tick_interval_s = tick_interval_s
        self.hooks = hooks
        self.clock = clock
        self.waiting: dict[tuple[str, int], _Waiting] = {}
        self.diagnoses: Callable[[], list[dict[str, Any]]] = list
        self.alerts: AlertPusher | None = None
        """Optional Alertmanager push of every incident event (config alertmanager)."""
        self._last_tick = 0.0

    def reset(self, judge: Judge, policy: EncodingPolicy) -> None:
        """Start over with rebuilt state (after an assignment); waiting records are dropped
        (the runtime hands them back on revocation)."""
        self.judge, self.policy = judge, policy
        self.waiting.clear()
        if self.hooks is not None:
            self.hooks.set_open_incidents(judge.open_incidents())

    def submit(self, message: Message[Record]) -> None:
        r = message.record
        try:
            obs = self._parse(r)
        except (ValueError, TypeError, MessageError, RecursionError) as exc:
            self.ctx.dead_letter(r, UNREADABLE_VERDICT, f"{type(exc).__name__}: {exc}")
            return
        if obs is None:
            self.ctx.done(r, "skipped")
            return
        w = self.waiting.setdefault((obs.stream, obs.seq), _Waiting())
        w.records.append(r)
        w.observations.append(obs)
        now = self.clock()
        self._settle(self.judge.observe(obs, now), now)

    def _parse(self, r: Record) -> Observation | None:
        if r.value is None:
            raise ValueError("empty value")
        doc = json.loads(r.value)
        if not isinstance(doc, dict):
            raise ValueError("the value is not a JSON object")
        if r.topic == self.topics.dead_letter:
            return Observation.from_dead_letter_json(doc)
        return Observation.from_verdict_json(doc)

    def _settle(self, events: list[Incident], now: float) -> None:
        """Publish what closed rounds produced; their records commit once it is acknowledged."""
        closed = [k for k in self.waiting if k[1] not in self._pending(k[0])]
        records: list[Record] = []
        decisions: list[EncoderDecision] = []
        for key in sorted(closed, key=lambda k: k[1]):
            w = self.waiting.pop(key)
            records += w.records
            for obs in sorted(w.observations, key=lambda o: o.rendition):
                mine = self.judge.open_incidents(obs.stream)
                decisions += self.policy.observe(obs, mine, now)
        messages = [incident_message(self.topics.incidents, e) for e in events]
        messages += [decision_message(self.topics.decisions, d) for d in decisions]
        if self.alerts is not None:
            self.alerts.submit(events, now)
        if events:
            for e in events:
                log.info(
                    "incident",
                    extra={"id": e.id, "state": e.state, "localisation": e.localisation},
                )
            if self.hooks is not None:
                self.hooks.observe_incidents(events)
                self.hooks.set_open_incidents(self.judge.open_incidents())
        for d in decisions:
            log.info("encoder decision", extra={"id": d.id, "dry_run": d.dry_run})
        if records or messages:
            self.ctx.publish_group(records, messages)

    def _pending(self, stream: str) -> set[int]:
        return self.judge.waiting(stream)

    def poll(self) -> None:
        now = self.clock()
        for doc in self.diagnoses():
            events = self.judge.attach_diagnosis(doc["segment_id"], summarize_diagnosis(doc), now)
            if events:
                self._settle(events, now)
        if now - self._last_tick >= self.tick_interval_s:
            self._last_tick = now
            self._settle(self.judge.tick(now), now)
        if self.alerts is not None and self.alerts.due(now):
            self.alerts.submit(self.judge.open_incidents(), now)

    def join(self, deadline: float) -> None:
        """Nothing to finish: rounds not judged yet are handed back uncommitted."""

    def forget(self, partitions: set[Partition]) -> int:
        dropped = 0
        for key in list(self.waiting):
            w = self.waiting[key]
            kept = [r for r in w.records if r.tp not in partitions]
            dropped += len(w.records) - len(kept)
            if not kept:
                del self.waiting[key]
            else:
                w.records = kept
        return dropped

    def stalled_s(self) -> float:
        return 0.0

    def close(self) -> None:
        if self.alerts is not None:
            self.alerts.close()


# ---------------------------------------------------------------- rebuilding on assignment


def owned_streams_filter(
    assigned: Iterable[Partition], verdicts_topic: str, partitions: int
) -> Callable[[str], bool]:
    """Whether this instance owns a stream: the stream's verdict partition is assigned."""
    mine = {p.partition for p in assigned if p.topic == verdicts_topic}

    def owned(stream: str) -> bool:
        return partitions > 0 and partition_for(stream.encode(), range(partitions)) in mine

    return owned


def rebuild(
    step: JudgeStep,
    reader: StateReader,
    assigned: list[Partition],
    make: Callable[[], tuple[Judge, EncodingPolicy]],
    replay_segments: int,
) -> dict[str, int]:
    """New judge and policy for the streams of `assigned`, restored from the topics."""
    topics = step.topics
    owned = owned_streams_filter(assigned, topics.verdicts, reader.partition_count(topics.verdicts))
    judge, policy = make()
    ends = reader.committed([tp for tp in assigned if tp.topic == topics.verdicts])
    replayed = reader.recent(ends, replay_segments)
    now = step.clock()
    for obs in replayed:
        judge.observe(obs, now)  # events already published before these offsets committed
    # Every verdict before a committed offset was in a round already judged (a waiting
    # round holds its offsets back): judge what the replay left waiting now, so it is
    # not judged again against the restored incidents below.
    judge.flush(now)
    judge.forget_incidents()  # the topic, not the replay window, says which exist
    incidents = [i for i in reader.incidents() if owned(i.stream)]
    judge.restore(incidents)
    decisions = [d for d in reader.decisions() if owned(d.stream)]
    policy.restore(decisions)
    judge.adopt_diagnoses(step.judge)
    step.reset(judge, policy)
    return {
        "incidents": len(incidents),
        "open": len(judge.open_incidents()),
        "decisions": len(decisions),
        "replayed": len(replayed),
    }


# ---------------------------------------------------------------- assembly


class JudgeDaemon:
    """Assembles the judge role: consumer group, publisher, runtime, `JudgeStep`."""

    def __init__(
        self,
        config: Config,
        bootstrap: list[str],
        metrics: Metrics,
        health: HealthState,
        *,
        consumer: Consumer | None = None,
        producer_factory: Callable[[], Producer] | None = None,
        reader: StateReader | None = None,
        watchdog: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.metrics = metrics
        self.health = health
        self.watchdog = watchdog
        self._consumer = consumer
        self._producer_factory = producer_factory
        self._reader = reader
        self.runtime: Runtime | None = None
        self.step: JudgeStep | None = None
        self._stop_asked = False

    def stop(self) -> None:
        self._stop_asked = True
        if self.runtime is not None:
            self.runtime.stop()

    def topics(self, diagnoses: bool) -> JudgeTopics:
        t = self.config.kafka.topics
        return JudgeTopics(
            t.verdicts,
            t.dead_letter,
            t.incidents,
            t.encoder_decisions,
            t.diagnoses if diagnoses else None,
        )

    def _make(self) -> tuple[Judge, EncodingPolicy]:
        return Judge(self.config.judge), EncodingPolicy(self.config.encoding, self.metrics)

    def run(self, duration_s: float | None = None) -> None:
        cfg = self.config
        role: JudgeRoleConfig = cfg.judge_role
        kcfg = cfg.kafka.model_copy(update={"group_id": role.group_id})
        topics = self.topics(False)
        if cfg.kafka.create_topics and self._consumer is None:
            compact = {"cleanup.policy": "compact"} if role.compact_outputs else {}
            kafka_io.ensure_topics(
                kcfg,
                self.bootstrap,
                [topics.verdicts, topics.dead_letter, topics.incidents, topics.decisions],
                {topics.incidents: compact, topics.decisions: compact},
            )
        reader = self._reader or KafkaStateReader(
            kcfg, self.bootstrap, topics, role.restore_timeout_s
        )
        diagnoses = role.read_diagnoses and self._reader is None
        if diagnoses and reader.partition_count(cfg.kafka.topics.diagnoses) > 0:
            reader.close()
            topics = self.topics(True)
            reader = KafkaStateReader(kcfg, self.bootstrap, topics, role.restore_timeout_s)
        # monitor.config imports this module (JudgeRoleConfig): the pipeline's helpers,
        # which import the config, are imported here.
        from monitor.pipeline import dead_letter_maker, make_publisher

        publisher = make_publisher(cfg, self.bootstrap, self.metrics, self._producer_factory)
        # Range assignment co-partitions the verdicts and dead-letter topics: partition i
        # of both (the same streams) goes to the same judge.
        consumer = self._consumer or KafkaConsumerClient(
            kafka_io.make_consumer(
                kcfg, self.bootstrap, partition_assignment_strategy=(RangePartitionAssignor,)
            )
        )
        p = cfg.pipeline
        runtime = Runtime(
            consumer,
            [topics.verdicts, topics.dead_letter],
            publisher,
            dead_letter_maker(cfg),
            RuntimeSettings(
                commit_interval_s=p.commit_interval_s,
                shutdown_timeout_s=p.shutdown_timeout_s,
                unacked_timeout_s=p.unacked_timeout_s,
            ),
            self.health,
            watchdog=self.watchdog,
            observe=self.observer(),
        )
        self.runtime = runtime
        if self._stop_asked:
            runtime.stop()
        judge, policy = self._make()
        step = JudgeStep(
            runtime.context,
            judge,
            policy,
            topics,
            tick_interval_s=role.tick_interval_s,
            hooks=self.metrics,
        )
        step.diagnoses = reader.diagnoses
        if cfg.alertmanager.enabled:
            step.alerts = AlertPusher(AlertmanagerClient(cfg.alertmanager))
        self.step = step

        def assigned(partitions: list[Partition]) -> None:
            t0 = time.monotonic()
            counts = rebuild(step, reader, partitions, self._make, role.replay_segments)
            log.info(
                "judge state rebuilt",
                extra={**counts, "seconds": round(time.monotonic() - t0, 2)},
            )

        runtime.on_assigned = assigned
        log.info(
            "judging",
            extra={"topics": [topics.verdicts, topics.dead_letter], "group": role.group_id},
        )
        try:
            runtime.run(step, duration_s)
        finally:
            reader.close()

    def observer(self) -> Callable[[str, float], None]:
        """The runtime's metrics hook: the screen pipeline's stage metrics are not the
        judge's to set."""
        from monitor.pipeline import runtime_observer

        return runtime_observer(self.metrics, stages=False, role="judge")
