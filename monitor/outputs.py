"""Output messages (verdicts, alerts, dead letters) and the publisher that gets them acknowledged.

The JSON shapes are documented in docs/topics.md; the builders are pure functions.
`Publisher` sends every output of a segment and reports the segment done only when the
broker has acknowledged all of them. On any delivery failure it recreates the
producer (acks=all, deliberately not idempotent: see ingest.kafka.make_producer)
and sends every unacknowledged output again: duplicates are
possible and recognisable by key, losses are not.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer

from ingest.types import DecodedSegment
from monitor.sections import AlertsConfig
from scorers.types import Verdict

log = logging.getLogger(__name__)

VERDICT_SCHEMA = "vqmon.verdict/1"
ALERT_SCHEMA = "vqmon.alert/1"
DEAD_LETTER_SCHEMA = "vqmon.dead-letter/1"
JSON_HEADERS = [("content-type", b"application/json")]


@dataclass(frozen=True, slots=True)
class Source:
    """Where a consumed record came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class OutMessage:
    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def verdict_value(verdict: Verdict, decoded: DecodedSegment, source: Source) -> dict[str, Any]:
    seg = decoded.segment
    return {
        "schema": VERDICT_SCHEMA,
        **verdict.to_json(),
        "stream_info": dataclasses.asdict(decoded.info),
        "declared_bitrate": seg.bitrate,
        "decode": {
            "errors": decoded.decode_errors,
            "corrupt_frames": decoded.corrupt_frames,
            "seconds": round(decoded.decode_seconds, 4),
            "messages": list(decoded.errors),
        },
        "source": source.to_json(),
        "screened_at": round(time.time(), 3),
    }


def verdict_message(
    topic: str, verdict: Verdict, decoded: DecodedSegment, source: Source
) -> OutMessage:
    headers = (
        *JSON_HEADERS,
        ("stream", verdict.stream.encode()),
        ("rendition", verdict.rendition.encode()),
    )
    return OutMessage(
        topic,
        verdict.segment_id.encode(),
        _dumps(_finite(verdict_value(verdict, decoded, source))),
        headers,
    )


def alert_messages(topic: str, verdict: Verdict, cfg: AlertsConfig) -> list[OutMessage]:
    """One alert per flag at or above the severity threshold (and for a low MOS if set)."""
    if not cfg.enabled:
        return []
    base = {
        "schema": ALERT_SCHEMA,
        "segment_id": verdict.segment_id,
        "stream": verdict.stream,
        "rendition": verdict.rendition,
        "seq": verdict.seq,
        "mos": None if verdict.mos is None else round(verdict.mos, 4),
        "scorers": list(verdict.scorers),
    }
    out = []
    for flag in verdict.flags:
        if flag.severity >= cfg.min_severity:
            body = {**base, "kind": flag.kind, **flag.to_json()}
            out.append(_alert(topic, verdict, flag.kind, body))
    if cfg.mos_below is not None and verdict.mos is not None and verdict.mos < cfg.mos_below:
        severity = min(1.0, (cfg.mos_below - verdict.mos) / max(cfg.mos_below - 1.0, 1e-6))
        body = {
            **base,
            "kind": "low_mos",
            "severity": round(severity, 4),
            "start_s": 0.0,
            "duration_s": None,
            "evidence": {"mos_below": cfg.mos_below},
        }
        out.append(_alert(topic, verdict, "low_mos", body))
    return out


def _alert(topic: str, verdict: Verdict, kind: str, body: dict[str, Any]) -> OutMessage:
    return OutMessage(
        topic, f"{verdict.segment_id}/{kind}".encode(), _dumps(_finite(body)), tuple(JSON_HEADERS)
    )


def dead_letter_message(
    topic: str,
    *,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes | None]] | None,
    source: Source,
    reason: str,
    error: str,
    max_value_bytes: int,
) -> OutMessage:
    """The original record (value base64, headers) with the reason code and the error text."""
    raw = value or b""
    kept = raw[:max_value_bytes]
    body = {
        "schema": DEAD_LETTER_SCHEMA,
        "reason": reason,
        "error": error,
        "source": source.to_json(),
        "key": None if key is None else base64.b64encode(key).decode(),
        "headers": [
            [k, None if v is None else base64.b64encode(v).decode()] for k, v in headers or []
        ],
        "value": base64.b64encode(kept).decode(),
        "value_bytes": len(raw),
        "value_truncated": len(kept) < len(raw),
        "failed_at": round(time.time(), 3),
    }
    out_headers = [(k, v) for k, v in headers or [] if v is not None]
    out_headers += [*JSON_HEADERS, ("vqmon-reason", reason.encode())]
    return OutMessage(topic, key or b"", _dumps(body), tuple(out_headers))


def _finite(obj: Any) -> Any:
    """JSON has no NaN/Infinity: map them to null."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


@dataclass
class _Pending:
    messages: list[OutMessage]
    remaining: int
    generation: int
    sent_at: float


class Publisher:
    """Sends outputs and reports which segments (tokens) are fully acknowledged."""

    def __init__(
        self,
        factory: Callable[[], KafkaProducer],
        *,
        stuck_after_s: float = 60.0,
        retry_backoff_s: float = 1.0,
        on_reset: Callable[[], None] | None = None,
    ) -> None:
        self._factory = factory
        self._producer: KafkaProducer | None = None
        self._generation = 0
        self._broken = False
        self._next_attempt = 0.0
        self.stuck_after_s = stuck_after_s
        self.retry_backoff_s = retry_backoff_s
        self.on_reset = on_reset
        self._pending: dict[int, _Pending] = {}
        self._events: queue.SimpleQueue[tuple[int, int, BaseException | None]] = queue.SimpleQueue()
        self._connect()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def publish(self, token: int, messages: list[OutMessage]) -> None:
        """Send `messages`; `token` comes back from poll() once all are acknowledged."""
        entry = _Pending(list(messages), len(messages), self._generation, time.monotonic())
        self._pending[token] = entry
        if not messages:
            self._events.put((token, entry.generation, None))
            entry.remaining = 1
            return
        if not self._broken:
            self._send(token, entry)

    def _send(self, token: int, entry: _Pending) -> None:
        entry.generation = self._generation
        entry.remaining = len(entry.messages)
        entry.sent_at = time.monotonic()
        producer = self._producer
        if producer is None:
            self._broken = True
            return
        gen = self._generation
        for m in entry.messages:
            try:
                future = producer.send(m.topic, key=m.key, value=m.value, headers=list(m.headers))
            except Exception as exc:  # KafkaTimeoutError when metadata is unavailable, ...
                self._events.put((token, gen, exc))
                return
            future.add_callback(lambda _md, t=token: self._events.put((t, gen, None)))
            future.add_errback(lambda exc, t=token: self._events.put((t, gen, exc)))

    def poll(self) -> list[int]:
        """Tokens whose outputs are all acknowledged since the last call; retries failures."""
        done: list[int] = []
        while True:
            try:
                token, gen, exc = self._events.get_nowait()
            except queue.Empty:
                break
            entry = self._pending.get(token)
            if entry is None or gen != entry.generation:
                continue  # from a producer already replaced
            if exc is not None:
                if not self._broken:
                    log.warning(
                        "output delivery failed; recreating the producer",
                        extra={"error": f"{type(exc).__name__}: {exc}"},
                    )
                self._broken = True
                continue
            entry.remaining -= 1
            if entry.remaining <= 0:
                del self._pending[token]
                done.append(token)
        now = time.monotonic()
        if not self._broken and any(
            now - e.sent_at > self.stuck_after_s for e in self._pending.values()
        ):
            log.warning("outputs unacknowledged for too long; recreating the producer")
            self._broken = True
        if self._broken and now >= self._next_attempt:
            self._reset()
        return done

    def _reset(self) -> None:
        self._next_attempt = time.monotonic() + self.retry_backoff_s
        old, self._producer = self._producer, None
        if old is not None:
            try:
                old.close(timeout=0)
            except Exception:  # closing a producer whose broker vanished may raise
                log.debug("closing the old producer failed", exc_info=True)
        self._generation += 1
        if not self._connect():
            return
        self._broken = False
        if self.on_reset is not None:
            self.on_reset()
        for token, entry in list(self._pending.items()):
            if entry.messages:
                self._send(token, entry)
            else:
                entry.generation = self._generation
                self._events.put((token, self._generation, None))

    def _connect(self) -> bool:
        try:
            self._producer = self._factory()
        except Exception as exc:  # NoBrokersAvailable while the cluster is down
            log.warning(
                "cannot create the producer yet; will retry",
                extra={"error": f"{type(exc).__name__}: {exc}"},
            )
            self._producer = None
            self._broken = True
            return False
        return True

    def flush(self, timeout_s: float) -> list[int]:
        """Wait up to `timeout_s` for outstanding outputs; return the tokens that completed."""
        deadline = time.monotonic() + timeout_s
        done: list[int] = []
        while self._pending and time.monotonic() < deadline:
            if self._producer is not None and not self._broken:
                try:
                    self._producer.flush(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
                except Exception:
                    log.debug("flush did not complete", exc_info=True)
            else:
                time.sleep(0.1)
            done.extend(self.poll())
        return done

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except Exception:
                log.debug("closing the producer failed", exc_info=True)
            self._producer = None
