"""`vqmon publish FILE`: cut a video file into the segment contract and publish it to a Kafka
topic, and/or write it as a live HLS output, at real time or as fast as possible.

    vqmon publish talk.mp4 --bootstrap localhost:9092 --stream talk
    vqmon publish talk.mkv --ladder 1280x720:3000k,640x360:800k --realtime \
        --bootstrap localhost:9092 --hls out/hls

Without `--ladder` the file's packets are copied and cut at keyframes (re-encoded when
MPEG-TS cannot carry the codec, or with `--reencode`); with one, each rendition is
encoded from the decoded frames by PyAV (libx264) with a keyframe starting every segment.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka.errors import KafkaError

from ingest import kafka as kafka_io
from ingest.contract import segment_message
from ingest.cut import Cut, Rung, cut_file, parse_ladder, probe
from ingest.hls_writer import HlsWriter, Variant
from ingest.types import IngestError

log = logging.getLogger("vqmon.publish")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "publish",
        help="cut a video file into segments and publish them (Kafka and/or HLS)",
        description="Cut FILE (any container PyAV reads) into segments of the vqmon segment "
        "contract and publish them to a Kafka topic (--bootstrap) and/or as a live HLS "
        "output (--hls DIR), at real time (--realtime) or as fast as possible.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--bootstrap", help="Kafka brokers, host:port[,host:port]")
    p.add_argument("--topic", default="vqmon.segments", help="segments topic (%(default)s)")
    p.add_argument("--stream", help="stream name (default: the file name without extension)")
    p.add_argument(
        "--rendition", default="source", help="rendition name without a ladder (%(default)s)"
    )
    p.add_argument(
        "--segment-duration", type=float, default=2.0, help="seconds per segment (%(default)s)"
    )
    p.add_argument(
        "--ladder",
        help="re-encode into renditions: WxH:BITRATE[,...], e.g. 1280x720:3000k,640x360:800k "
        "(name one with NAME=WxH:BITRATE; default names are the heights, '720p')",
    )
    p.add_argument(
        "--reencode", action="store_true", help="re-encode at the source size, no ladder"
    )
    p.add_argument("--preset", default="veryfast", help="x264 preset (%(default)s)")
    p.add_argument(
        "--realtime",
        action="store_true",
        help="publish each segment when its media time has passed, like a live encoder",
    )
    p.add_argument("--hls", type=Path, metavar="DIR", help="also write a live HLS output here")
    p.add_argument(
        "--hls-list-size",
        type=int,
        default=0,
        help="segments kept in each HLS media playlist (0: all, an EVENT playlist)",
    )
    p.add_argument(
        "--partitions",
        type=int,
        default=4,
        help="partitions when the topic has to be created (%(default)s)",
    )
    p.set_defaults(func=run)


@dataclass
class Published:
    segments: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


class KafkaSink:
    """Publishes cuts as contract messages; delivery failures are counted, not raised."""

    def __init__(self, bootstrap: list[str], topic: str, stream: str, partitions: int) -> None:
        cfg = kafka_io.KafkaConfig(bootstrap_servers=bootstrap, partitions=partitions)
        try:
            kafka_io.ensure_topics(cfg, bootstrap, [topic])
        except Exception as exc:  # no CreateTopics permission: the topic may exist anyway
            log.warning("could not check or create the topic %s: %s", topic, exc)
        self.producer = kafka_io.make_producer(cfg, bootstrap)
        self.topic, self.stream = topic, stream
        self._lock = threading.Lock()
        self.failed = 0
        self.errors: list[str] = []

    def put(self, cut: Cut) -> None:
        m = segment_message(
            cut.data, stream=self.stream, rendition=cut.rendition, seq=cut.seq, bitrate=cut.bitrate
        )
        future = self.producer.send(self.topic, key=m.key, value=m.value, headers=m.headers)
        future.add_errback(self._failed, f"{self.stream}/{cut.rendition}/{cut.seq}")

    def _failed(self, segment: str, exc: BaseException) -> None:
        with self._lock:
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(f"{segment}: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        try:
            self.producer.flush(timeout=60)
        finally:
            kafka_io.close_producer(self.producer, 10)


def variants_for(path: Path, ladder: list[Rung] | None, rendition: str) -> list[Variant]:
    """What the master playlist lists, before the first segment is cut."""
    if ladder:
        return [Variant(r.name, r.width, r.height, int((r.bitrate or 0) * 1.2)) for r in ladder]
    info = probe(path)
    size = path.stat().st_size
    estimate = info.bitrate or (int(size * 8 / info.duration_s) if info.duration_s else 0)
    return [Variant(rendition, info.width, info.height, estimate)]


def publish_cuts(
    cuts: Iterable[Cut],
    sinks: list[Callable[[Cut], None]],
    *,
    realtime: bool,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Published:
    """Hand every cut to every sink; with `realtime`, a segment goes out once its media time
    has passed since the first one (as a live encoder would publish it)."""
    done = Published()
    t0 = clock()
    for cut in cuts:
        if realtime:
            wait = t0 + cut.start_s + cut.duration_s - clock()
            if wait > 0:
                sleep(wait)
        for sink in sinks:
            sink(cut)
        done.segments[cut.rendition] += 1
        done.bytes += len(cut.data)
    done.seconds = clock() - t0
    return done


def run(args: argparse.Namespace) -> int:
    def fail(message: str, code: int = 2) -> int:
        print(f"vqmon publish: {message}", file=sys.stderr)
        return code

    if not args.bootstrap and args.hls is None:
        return fail("nowhere to publish: give --bootstrap HOST:PORT and/or --hls DIR")
    stream = args.stream or args.file.stem
    try:
        ladder = parse_ladder(args.ladder) if args.ladder else None
        segment_message(b"", stream=stream, rendition=args.rendition, seq=0)  # checks names
        variants = variants_for(args.file, ladder, args.rendition)
    except IngestError as exc:
        return fail(str(exc), 1)
    except ValueError as exc:
        return fail(str(exc))
    if args.segment_duration <= 0:
        return fail("--segment-duration must be positive")
    sinks: list[Callable[[Cut], None]] = []
    kafka: KafkaSink | None = None
    hls: HlsWriter | None = None
    if args.bootstrap:
        servers = [s.strip() for s in args.bootstrap.split(",") if s.strip()]
        try:
            kafka = KafkaSink(servers, args.topic, stream, args.partitions)
        except KafkaError as exc:
            return fail(f"cannot publish to Kafka at {args.bootstrap}: {exc}", 1)
        sinks.append(kafka.put)
    if args.hls is not None:
        hls = HlsWriter(
            args.hls, variants, segment_s=args.segment_duration, list_size=args.hls_list_size
        )
        sinks.append(hls.put)
    cuts = cut_file(
        args.file,
        args.segment_duration,
        ladder=ladder,
        reencode=args.reencode,
        rendition=args.rendition,
        preset=args.preset,
    )
    try:
        done = publish_cuts(cuts, sinks, realtime=args.realtime)
    except IngestError as exc:
        return fail(str(exc), 1)
    finally:
        if hls is not None:
            hls.close()
        if kafka is not None:
            kafka.close()
    print(_summary(stream, done, args, kafka), flush=True)
    if kafka is not None and kafka.failed:
        return fail(f"{kafka.failed} segments were not delivered: " + "; ".join(kafka.errors), 1)
    return 0


def _summary(stream: str, done: Published, args: Any, kafka: KafkaSink | None) -> str:
    counts = ", ".join(f"{r} x{n}" for r, n in done.segments.items()) or "none"
    where = []
    if kafka is not None:
        where.append(f"topic {args.topic} at {args.bootstrap}")
    if args.hls is not None:
        where.append(f"HLS {args.hls / 'master.m3u8'}")
    return (
        f"vqmon publish: {sum(done.segments.values())} segments of {stream} ({counts}), "
        f"{done.bytes / 1e6:.1f} MB in {done.seconds:.1f} s to " + " and ".join(where)
    )
