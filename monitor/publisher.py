"""Gets every output of a consumed record acknowledged by the broker, at least once.

`Publisher.publish(token, messages)` sends; `poll()` returns the tokens whose outputs
are all acknowledged. A retriable delivery failure recreates the producer (acks=all,
deliberately not idempotent: see ingest.kafka.make_producer) and resends every
unacknowledged output: duplicates are possible and recognisable by key, losses are not.
An error no retry can cure (too large, invalid record, not authorised) is final for
that output: its `fallback` (a reduced message) is sent instead, or, without one, the
output is given up, logged and counted, so one bad output never holds its partition.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from monitor.clients import Producer, SendFuture, is_final

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutMessage:
    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    fallback: OutMessage | None = None
    """Sent in place of this message if the broker can never accept it."""
    partition_key: bytes | None = None
    """Chooses the partition instead of `key` (same murmur2 partitioner): e.g. the stream
    name, so every rendition of a stream lands in one partition (monitor.judge_role)."""


@dataclass
class _Pending:
    messages: list[OutMessage]
    acked: list[bool]
    generation: int
    sent_at: float
    first_sent_at: float = field(default_factory=time.monotonic)


# (token, generation, message index, error or None)
_Event = tuple[int, int, int, BaseException | None]


def _send(producer: Producer, m: OutMessage) -> SendFuture:
    if m.partition_key is None:
        return producer.send(m.topic, m.key, m.value, list(m.headers))
    return producer.send(m.topic, m.key, m.value, list(m.headers), partition_key=m.partition_key)


class Publisher:
    def __init__(
        self,
        factory: Callable[[], Producer],
        *,
        stuck_after_s: float = 60.0,
        retry_backoff_s: float = 1.0,
        on_reset: Callable[[], None] | None = None,
        on_lost: Callable[[OutMessage, BaseException], None] | None = None,
    ) -> None:
        self._factory = factory
        self._producer: Producer | None = None
        self._generation = 0
        self._broken = False
        self._next_attempt = 0.0
        self.stopping = False
        """While stopping, a broken producer is not recreated (shutdown has a deadline)."""
        self.stuck_after_s = stuck_after_s
        self.retry_backoff_s = retry_backoff_s
        self.on_reset = on_reset
        self.on_lost = on_lost
        self._pending: dict[int, _Pending] = {}
        self._events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self._connect()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def oldest_unacked_s(self) -> float:
        """Age of the oldest output not yet acknowledged (0 when none)."""
        if not self._pending:
            return 0.0
        return time.monotonic() - min(p.first_sent_at for p in self._pending.values())

    def publish(self, token: int, messages: list[OutMessage]) -> None:
        """Send `messages`; `token` comes back from poll() once all are acknowledged."""
        now = time.monotonic()
        entry = _Pending(list(messages), [False] * len(messages), self._generation, now, now)
        self._pending[token] = entry
        if not messages:
            self._events.put((token, entry.generation, -1, None))
            return
        if not self._broken:
            self._send(token, entry)

    def _send(self, token: int, entry: _Pending) -> None:
        entry.generation = gen = self._generation
        entry.sent_at = time.monotonic()
        producer = self._producer
        if producer is None:
            self._broken = True
            return
        for i, m in enumerate(entry.messages):
            if entry.acked[i]:
                continue
            try:
                future = _send(producer, m)
            except Exception as exc:  # too large (client side), metadata unavailable, ...
                self._events.put((token, gen, i, exc))
                if not is_final(exc):
                    return
                continue
            self._watch(future, token, gen, i)

    def _watch(self, future: SendFuture, token: int, gen: int, i: int) -> None:
        events = self._events

        def acked(_metadata: object) -> None:
            events.put((token, gen, i, None))

        def failed(exc: BaseException) -> None:
            events.put((token, gen, i, exc))

        future.add_callback(acked)
        future.add_errback(failed)

    def poll(self) -> list[int]:
        """Tokens whose outputs are all acknowledged since the last call; retries failures."""
        done: list[int] = []
        while True:
            try:
                token, gen, i, exc = self._events.get_nowait()
            except queue.Empty:
                break
            entry = self._pending.get(token)
            if entry is None or gen != entry.generation:
                continue  # from a producer already replaced
            if exc is not None and is_final(exc):
                self._replace(token, entry, i, exc)
            elif exc is not None:
                if not self._broken:
                    log.warning(
                        "output delivery failed; recreating the producer",
                        extra={"error": f"{type(exc).__name__}: {exc}"},
                    )
                self._broken = True
                continue
            elif i >= 0:
                entry.acked[i] = True
            if all(entry.acked):
                del self._pending[token]
                done.append(token)
        now = time.monotonic()
        if not self._broken and any(
            now - e.sent_at > self.stuck_after_s for e in self._pending.values()
        ):
            log.warning("outputs unacknowledged for too long; recreating the producer")
            self._broken = True
        if self._broken and not self.stopping and now >= self._next_attempt:
            self._reset()
        return done

    def _replace(self, token: int, entry: _Pending, i: int, exc: BaseException) -> None:
        """A final error: send the output's fallback in its place, or give it up."""
        failed = entry.messages[i]
        fallback = failed.fallback
        log.warning(
            "output refused for good",
            extra={
                "topic": failed.topic,
                "bytes": len(failed.value),
                "error": f"{type(exc).__name__}: {exc}",
                "fallback": fallback is not None,
            },
        )
        if fallback is None:
            entry.acked[i] = True
            if self.on_lost is not None:
                self.on_lost(failed, exc)
            return
        entry.messages[i] = fallback
        if self._producer is None or self._broken:
            return  # sent with the rest after the reset
        gen = entry.generation
        try:
            future = _send(self._producer, fallback)
        except Exception as send_exc:
            self._events.put((token, gen, i, send_exc))
            return
        self._watch(future, token, gen, i)

    def _reset(self) -> None:
        self._next_attempt = time.monotonic() + self.retry_backoff_s
        old, self._producer = self._producer, None
        if old is not None:
            try:
                old.close(0)
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
                self._events.put((token, self._generation, -1, None))

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

    def flush(self, deadline: float) -> list[int]:
        """Wait until `deadline` (monotonic) for outstanding outputs; the tokens that completed."""
        done: list[int] = []
        while self._pending and time.monotonic() < deadline:
            left = deadline - time.monotonic()
            if self._producer is not None and not self._broken:
                try:
                    self._producer.flush(max(0.05, min(1.0, left)))
                except Exception:
                    log.debug("flush did not complete", exc_info=True)
            else:
                time.sleep(min(0.1, max(0.0, left)))
            done.extend(self.poll())
        return done

    def close(self, timeout_s: float = 5.0) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout_s)
            except Exception:
                log.debug("closing the producer failed", exc_info=True)
            self._producer = None
