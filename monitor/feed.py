"""A built-in synthetic publisher of live ladders, and a closed-loop encoder.

For trying vqmon with no video source: with the embedded broker, `vqmon run` publishes
real H.264 segments (PyAV) of a few streams and renditions while it screens them. By
default every `black_every`-th segment of the first stream is black, so flags and alerts
show up too.

Closed loop (`feed.closed_loop`): the feed reads vqmon.encoder-decisions from the topic's
end (no consumer group: every feed sees every decision) and applies each real (not
dry-run) decision for its own rungs with monitor.encoder_settings (`LadderSettings`):
the rung is encoded with the new bitrate, preset or filter from the next segment on.

Schedule (`feed.schedule`): impairments injected at given segment numbers, for tests
and demos: a starved rung (its bitrate drops, as after a bad config push, until a
decision raises it), black or frozen runs, noise or blur, on one rendition or on all
(a source fault).

Encodes are cached per (stream, rendition, clip variant, encoder settings, impairment),
so a steady ladder costs no encoding after the first rounds.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from ingest.contract import largest_display, segment_message
from ingest.impair import blur, corrupt_packets, noise
from ingest.kafka import KafkaConfig, client_options, close_producer
from ingest.synth import RGB, EncodeSettings, encode, pattern_frames
from monitor.encoder_settings import LadderSettings
from monitor.sections import FeedConfig, Impairment
from monitor.types import EncoderDecision, EncoderSettings, MessageError

log = logging.getLogger(__name__)

PATTERNS = ("scene", "bars", "texture", "zoneplate")
VARIANTS = 3  # distinct clips per stream and rendition, published in turn
FPS = 25


class DecisionSource(Protocol):
    def poll(self) -> list[EncoderDecision]: ...

    def close(self) -> None: ...


class KafkaDecisionSource:
    """Reads vqmon.encoder-decisions from its end at start; no group, nothing committed."""

    def __init__(self, cfg: KafkaConfig, bootstrap: list[str], topic: str) -> None:
        from kafka import KafkaConsumer
        from kafka.structs import TopicPartition

        self._c = KafkaConsumer(enable_auto_commit=False, **client_options(cfg, bootstrap))
        parts: set[int] = set()
        deadline = time.monotonic() + 30
        while not parts and time.monotonic() < deadline:
            parts = self._c.partitions_for_topic(topic) or set()
            if not parts:
                self._c.topics()  # refreshes the metadata
                time.sleep(0.2)
        if not parts:
            raise RuntimeError(f"topic {topic!r} not found: cannot read encoder decisions")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self._c.assign(tps)
        self._c.seek_to_end(*tps)
        for tp in tps:
            self._c.position(tp)  # resolve "the end" now, not at the first poll

    def poll(self) -> list[EncoderDecision]:
        out: list[EncoderDecision] = []
        for batch in self._c.poll(timeout_ms=0).values():
            for r in batch:
                try:
                    out.append(EncoderDecision.from_json(json.loads(r.value)))
                except (ValueError, TypeError, MessageError, RecursionError) as exc:
                    log.warning("unreadable encoder decision skipped", extra={"error": str(exc)})
        return out

    def close(self) -> None:
        self._c.close(autocommit=False)


@dataclass(frozen=True, slots=True)
class Published:
    """What the feed published for one segment (kept when `keep_log`)."""

    stream: str
    rendition: str
    seq: int
    variant: int
    settings: EncodeSettings
    impairments: tuple[str, ...]
    bytes: int
    at: float


def _size(rendition: str) -> tuple[int, int]:
    w, h = (int(v) for v in rendition.split("x"))
    return w, h


class Feed:
    """Publishes rounds of segments (every stream x rendition) until stopped."""

    def __init__(
        self,
        cfg: FeedConfig,
        producer: Any,
        topic: str,
        *,
        decisions: DecisionSource | None = None,
        keep_log: bool = False,
        cache_entries: int = 512,
    ) -> None:
        self.cfg = cfg
        self.producer = producer
        self.topic = topic
        self.decisions = decisions
        self.keep_log = keep_log
        self.published = 0
        self.log: list[Published] = []
        self.applied: list[tuple[float, int, EncoderDecision]] = []
        """(time, next seq, decision) of every decision applied."""
        self.names = cfg.names()
        self.patterns: list[str] = [*cfg.patterns] or list(PATTERNS)
        self.frames = max(1, round(cfg.segment_seconds * FPS))
        self.base = EncodeSettings(fps=FPS, gop=self.frames, container="mpegts")
        initial = {
            (s, r): EncoderSettings(bitrate=cfg.bitrates.get(r))
            for s in self.names
            for r in cfg.renditions
        }
        self.ladder = LadderSettings(initial)
        # Every rung is shown at the ladder's top size, as a player does; said in each
        # segment's header so no screen worker judges a low rung at its coded size before
        # it has seen the top one.
        self.display = largest_display(_size(r) for r in cfg.renditions)
        self.seq = 0
        self._good: dict[tuple[str, str], EncoderSettings] = dict(initial)
        """Each rung's last settings that encoded (put back when a decision's do not)."""
        self._cache: collections.OrderedDict[tuple[Any, ...], bytes] = collections.OrderedDict()
        self._cache_entries = cache_entries
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="vqmon-feed", daemon=True)

    def start(self) -> Feed:
        self.thread.start()
        return self

    def _run(self) -> None:
        period = self.cfg.segment_seconds / self.cfg.speed
        next_round = time.monotonic()
        while not self._stop.is_set() and not self.done:
            try:
                self.step()
            except Exception:
                log.warning("synthetic feed round failed", exc_info=True)
            next_round += period
            self._stop.wait(max(0.0, next_round - time.monotonic()))

    @property
    def done(self) -> bool:
        """Every round asked for (FeedConfig.rounds) is published."""
        return self.cfg.rounds is not None and self.seq >= self.cfg.rounds

    def step(self) -> None:
        """One round: apply decisions and the schedule, publish every rung's segment."""
        self.apply_decisions()
        self._schedule(self.seq)
        for s, stream in enumerate(self.names):
            for rendition in self.cfg.renditions:
                rung = self.ladder.get(stream, rendition)
                try:
                    self._publish(s, stream, rendition, self.seq)
                except Exception as exc:  # one rung's settings must not stop the others
                    good = self._good.get((stream, rendition))
                    log.warning(
                        "synthetic feed could not encode a rung; its last settings that "
                        "encoded are back",
                        extra={
                            "rung": f"{stream}/{rendition}",
                            "settings": rung.to_json(),
                            "error": f"{type(exc).__name__}: {exc}"[:300],
                        },
                    )
                    if good is not None:
                        self.ladder.set(stream, rendition, good)
                else:
                    self._good[(stream, rendition)] = rung
        self.seq += 1

    def apply_decisions(self) -> None:
        if self.decisions is None:
            return
        for d in self.decisions.poll():
            if d.dry_run or d.stream not in self.names or d.rendition not in self.cfg.renditions:
                continue
            try:
                changed = self.ladder.apply(d)
            except ValueError as exc:  # a decision this encoder cannot apply: the next one may
                log.warning("encoder decision not applied", extra={"id": d.id, "error": str(exc)})
                continue
            if changed:
                self.applied.append((time.time(), self.seq, d))
                log.info(
                    "feed applied an encoder decision",
                    extra={"id": d.id, "settings": d.settings.to_json()},
                )

    def _schedule(self, seq: int) -> None:
        """Starve events change the ladder at their first segment (and restore at the end)."""
        for imp in self.cfg.schedule:
            if imp.kind != "starve":
                continue
            rungs = [imp.rendition] if imp.rendition else list(self.cfg.renditions)
            for r in rungs:
                if seq == imp.from_seq:
                    self._set_bitrate(imp.stream, r, imp.bitrate)
                elif imp.segments is not None and seq == imp.from_seq + imp.segments:
                    self._set_bitrate(imp.stream, r, self.cfg.bitrates.get(r))

    def _set_bitrate(self, stream: str, rendition: str, bitrate: int | None) -> None:
        current = self.ladder.get(stream, rendition)
        self.ladder.set(stream, rendition, replace(current, bitrate=bitrate))

    def _publish(self, s: int, stream: str, rendition: str, seq: int) -> None:
        every = self.cfg.black_every
        active = [
            i for i in self.cfg.schedule if i.kind != "starve" and i.active(stream, rendition, seq)
        ]
        black = s == 0 and every > 0 and seq % every == every - 1
        impairments = tuple(_imp_key(i) for i in active) + (("black",) if black else ())
        variant = seq % VARIANTS
        rung = self.ladder.get(stream, rendition)
        if not rung.enabled:
            return  # dropped from the ladder by a decision
        settings = self.ladder.encode_settings(stream, rendition, self.base)
        data = self._encode(s, rendition, variant, settings, impairments, active, black)
        m = segment_message(
            data,
            stream=stream,
            rendition=rendition,
            seq=seq,
            bitrate=rung.bitrate,
            display=self.display,
        )
        try:
            self.producer.send(self.topic, key=m.key, value=m.value, headers=m.headers)
        except Exception:
            log.warning("synthetic feed could not publish", exc_info=True)
            return
        self.published += 1
        if self.keep_log:
            self.log.append(
                Published(
                    stream, rendition, seq, variant, settings, impairments, len(data), time.time()
                )
            )

    def source_frames(self, s: int, rendition: str, variant: int) -> list[RGB]:
        """The pristine pictures of one clip (the reference for VMAF)."""
        w, h = _size(rendition)
        kind = self.patterns[s % len(self.patterns)]
        return list(pattern_frames(kind, w, h, self.frames, seed=s * 10 + variant))

    def _encode(
        self,
        s: int,
        rendition: str,
        variant: int,
        settings: EncodeSettings,
        impairments: tuple[str, ...],
        active: Sequence[Impairment],
        black: bool,
    ) -> bytes:
        key = (s, rendition, variant, settings, impairments)
        data = self._cache.get(key)
        if data is not None:
            self._cache.move_to_end(key)
            return data
        frames = impaired(self.source_frames(s, rendition, variant), active, black)
        data = encode(frames, settings)
        for imp in active:
            if imp.kind == "loss":  # transport, after the encoder
                data = corrupt_packets(data, imp.strength / 100, seed=variant, mode="drop")
        self._cache[key] = data
        while len(self._cache) > self._cache_entries:
            self._cache.popitem(last=False)
        return data

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)
        try:
            self.producer.flush(timeout=5)
        finally:
            try:
                # with records still pending (a broker gone slow) it drops them and raises
                close_producer(self.producer, 5)
            finally:
                if self.decisions is not None:
                    self.decisions.close()


def _imp_key(i: Impairment) -> str:
    return f"{i.kind}:{i.strength}" if i.kind in ("noise", "blur", "loss") else i.kind


def impaired(frames: list[RGB], active: Sequence[Impairment], black: bool) -> list[RGB]:
    """The clip's frames with the active content impairments applied (pure)."""
    out = frames
    for imp in active:
        if imp.kind == "black":
            out = [np.zeros_like(f) for f in out]
        elif imp.kind == "freeze":
            out = [out[0].copy() for _ in out]
        elif imp.kind == "noise":
            out = noise(out, imp.strength, seed=len(out))
        elif imp.kind == "blur":
            out = blur(out, imp.strength)
    if black:
        out = [np.zeros_like(f) for f in out]
    return out
