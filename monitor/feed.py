"""A built-in synthetic publisher: real H.264 segments of a few streams and renditions.

For trying vqmon with no video source: with the embedded broker, `vqmon run` publishes
these to the segments topic while it screens them. Every `black_every`-th segment of
the first stream is black, so flags and alerts show up too.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
from kafka import KafkaProducer

from ingest.contract import segment_message
from ingest.synth import EncodeSettings, encode, pattern_frames
from monitor.sections import FeedConfig

log = logging.getLogger(__name__)

PATTERNS = ("scene", "bars", "texture", "zoneplate")
VARIANTS = 3  # distinct clips per stream and rendition, published in turn


def make_clips(cfg: FeedConfig, fps: int = 25) -> dict[tuple[int, str], list[bytes]]:
    """(stream index, rendition) -> a few encoded clips; plus key (-1, rendition): a black clip."""
    frames = max(1, round(cfg.segment_seconds * fps))
    settings = EncodeSettings(fps=fps, gop=frames, container="mpegts")
    clips: dict[tuple[int, str], list[bytes]] = {}
    for rendition in cfg.renditions:
        w, h = (int(v) for v in rendition.split("x"))
        for s in range(cfg.streams):
            kind = PATTERNS[s % len(PATTERNS)]
            clips[(s, rendition)] = [
                encode(pattern_frames(kind, w, h, frames, seed=s * 10 + v), settings)
                for v in range(VARIANTS)
            ]
        black = (np.zeros((h, w, 3), np.uint8) for _ in range(frames))
        clips[(-1, rendition)] = [encode(black, settings)]
    return clips


class Feed:
    """Publishes rounds of segments (every stream x rendition) until stopped."""

    def __init__(self, cfg: FeedConfig, producer: KafkaProducer, topic: str) -> None:
        self.cfg = cfg
        self.producer = producer
        self.topic = topic
        self.published = 0
        self._stop = threading.Event()
        self._clips = make_clips(cfg)
        self.thread = threading.Thread(target=self._run, name="vqmon-feed", daemon=True)

    def start(self) -> Feed:
        self.thread.start()
        return self

    def _run(self) -> None:
        period = self.cfg.segment_seconds / self.cfg.speed
        seq = 0
        next_round = time.monotonic()
        while not self._stop.is_set():
            self._publish_round(seq)
            seq += 1
            next_round += period
            self._stop.wait(max(0.0, next_round - time.monotonic()))

    def _publish_round(self, seq: int) -> None:
        for s in range(self.cfg.streams):
            for rendition in self.cfg.renditions:
                every = self.cfg.black_every
                black = s == 0 and every > 0 and seq % every == every - 1
                data = (
                    self._clips[(-1, rendition)][0]
                    if black
                    else self._clips[(s, rendition)][seq % VARIANTS]
                )
                m = segment_message(data, stream=f"demo-{s + 1}", rendition=rendition, seq=seq)
                try:
                    self.producer.send(self.topic, key=m.key, value=m.value, headers=m.headers)
                except Exception:
                    log.warning("synthetic feed could not publish", exc_info=True)
                    return
                self.published += 1

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)
        try:
            self.producer.flush(timeout=5)
        finally:
            self.producer.close(timeout=5)
