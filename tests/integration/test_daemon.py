"""`vqmon run` against a real broker: every segment gets a verdict, bad input a dead letter."""

from __future__ import annotations

import base64
import functools
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from ingest.broker import EmbeddedBroker
from ingest.synth import EncodeSettings, clip, encode, split_fmp4
from tests.integration.conftest import (
    PARTITIONS,
    TopicReader,
    Topics,
    daemon_config,
    producer,
    publish,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_verdict_for_every_segment_of_every_stream_and_rendition(
    broker: EmbeddedBroker, tiny_segments: list[bytes], tmp_path: Path, start_daemon: Any
) -> None:
    bs = broker.bootstrap_servers
    topics = Topics.unique("roundtrip")
    topics.create(bs)
    p = producer(bs)
    expected: set[str] = set()
    for stream in ("news", "sport", "movies"):
        for rendition in ("low", "high"):
            for seq in range(4):
                publish(
                    p,
                    topics.segments,
                    tiny_segments[seq % 4],
                    stream=stream,
                    rendition=rendition,
                    seq=seq,
                )
                expected.add(f"{stream}/{rendition}/{seq}")
    # A CMAF rendition: the init segment first (header init=1), then media fragments.
    init, fragments = split_fmp4(
        clip(
            "scene",
            width=160,
            height=90,
            seconds=2.0,
            settings=EncodeSettings(container="mp4-frag", gop=25),
        )
    )
    publish(p, topics.segments, init, stream="cmaf", rendition="v1", seq=0, extra=[("init", b"1")])
    for seq, frag in enumerate(fragments, start=1):
        publish(p, topics.segments, frag, stream="cmaf", rendition="v1", seq=seq)
        expected.add(f"cmaf/v1/{seq}")
    p.flush()
    p.close()
    assert len(fragments) == 2

    daemon = start_daemon(daemon_config(tmp_path, bs, topics, pipeline={"decode_workers": 2}))
    reader = TopicReader(bs, topics.verdicts)
    reader.until(lambda msgs: expected <= {k for k, _, _ in msgs}, 90, daemon)

    for key, value, headers in reader.messages:
        assert key == value["segment_id"]
        assert value["schema"] == "vqmon.verdict/1"
        assert value["scorers"] and all("@" in s for s in value["scorers"])
        assert value["stream_info"]["codec"] == "h264"
        assert (value["stream_info"]["width"], value["stream_info"]["height"]) == (160, 90)
        assert value["source"]["topic"] == topics.segments
        assert headers["stream"].decode() == value["stream"]
    by_key = {k: v for k, v, _ in reader.messages}
    assert by_key["news/low/0"]["declared_bitrate"] == 200000
    assert by_key["cmaf/v1/1"]["stream_info"]["container"].startswith("mov")
    reader.close()

    # The metric counts a segment once the daemon has seen the broker's acknowledgement,
    # which can follow the verdict's appearance on the topic by a moment.
    wait_for(
        lambda: daemon.metric("vqmon_segments_processed_total", reason="ok") >= len(expected),
        10,
        "segments counted",
        daemon,
    )
    assert daemon.metric("vqmon_segments_processed_total", reason="init") == 1
    # The provider that actually runs the student (CPU here: the CUDA one falls back).
    info = [
        ln for ln in daemon.get("/metrics")[1].splitlines() if ln.startswith("vqmon_scorer_info{")
    ]
    assert any(
        'scorer="distilled"' in ln and 'provider="CPUExecutionProvider"' in ln for ln in info
    )
    assert daemon.get("/healthz")[0] == 200
    assert daemon.terminate() == 0
    assert '"msg": "stopped"' in daemon.tail()

    # Offsets were committed (on shutdown at the latest) up to the end of every partition.
    c = KafkaConsumer(bootstrap_servers=[bs], group_id=topics.group, enable_auto_commit=False)
    tps = [TopicPartition(topics.segments, i) for i in range(PARTITIONS)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    counts = dict.fromkeys(tps, 0)
    for _ in range(10):
        for tp, batch in c.poll(300).items():
            counts[tp] += len(batch)
    committed = {tp: c.committed(tp) or 0 for tp in tps}
    c.close()
    assert committed == counts


def _serve(root: Path) -> ThreadingHTTPServer:
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _huge_resolution_segment() -> bytes:
    """One frame at 8192x4608 (38 Mpixel): over the default max_pixels, refused from the header."""
    import numpy as np

    frame = np.zeros((4608, 8192, 3), np.uint8)
    return encode([frame], EncodeSettings(preset="ultrafast", crf=40, gop=1))


def test_bad_input_goes_to_dead_letter_and_the_daemon_keeps_serving(
    broker: EmbeddedBroker, tiny_segments: list[bytes], tmp_path: Path, start_daemon: Any
) -> None:
    bs = broker.bootstrap_servers
    topics = Topics.unique("bad")
    topics.create(bs)
    rng = __import__("random").Random(7)
    bad: dict[str, tuple[bytes, str]] = {
        "random": (bytes(rng.getrandbits(8) for _ in range(5000)), "unsupported_container"),
        "truncated": (tiny_segments[0][:400], "decode_error"),
        "huge": (_huge_resolution_segment(), "limit_exceeded"),
        "empty": (b"", "empty"),
        "ftp": (json.dumps({"uri": "ftp://example.com/seg.ts"}).encode(), "unsupported_reference"),
        "badseq": (tiny_segments[1], "bad_header"),
        # A 100 KB display header that is no size at all.
        "baddisplay": (tiny_segments[1], "bad_header"),
    }
    hostile = {
        "badseq": [("seq", b"not-a-number")],
        "baddisplay": [("seq", b"5"), ("display", b"9" * 100_000 + b"x1")],
    }
    p = producer(bs)
    for i, (name, (value, _)) in enumerate(bad.items()):
        extra = hostile.get(name, [])
        headers = [("stream", name.encode()), ("rendition", b"r"), ("x-trace", b"abc")]
        if not extra:
            headers.append(("seq", str(i).encode()))
        p.send(topics.segments, key=f"{name}/r".encode(), value=value, headers=headers + extra)
    # A file:// reference to a real segment, and a plain good segment, after the bad ones.
    ref = tmp_path / "big.ts"
    ref.write_bytes(tiny_segments[2])
    publish(
        p,
        topics.segments,
        json.dumps({"uri": ref.as_uri()}).encode(),
        stream="ref",
        rendition="r",
        seq=0,
    )
    publish(p, topics.segments, tiny_segments[3], stream="good", rendition="r", seq=0)
    server = _serve(tmp_path)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    publish(
        p,
        topics.segments,
        json.dumps({"uri": f"{url}/big.ts"}).encode(),
        stream="http",
        rendition="r",
        seq=0,
    )
    publish(
        p,
        topics.segments,
        json.dumps({"uri": f"{url}/missing.ts"}).encode(),
        stream="http404",
        rendition="r",
        seq=0,
    )
    p.flush()
    p.close()
    bad["http404"] = (b"", "bad_reference")

    # file:// needs a root and loopback http an allow-list: both are off by default.
    references = {"file_root": str(tmp_path), "http_allow_networks": ["127.0.0.0/8"]}
    daemon = start_daemon(daemon_config(tmp_path, bs, topics, ingest={"references": references}))
    dead = TopicReader(bs, topics.dead_letter)
    dead.until(lambda msgs: len(msgs) >= len(bad), 90, daemon)
    verdicts = TopicReader(bs, topics.verdicts)
    want = {"ref/r/0", "good/r/0", "http/r/0"}
    verdicts.until(lambda msgs: want <= {k for k, _, _ in msgs}, 60, daemon)
    server.shutdown()

    reasons = {base64.b64decode(v["key"]).decode(): v for _, v, _ in dead.messages}
    assert set(reasons) == {f"{name}/r" for name in bad}
    for name, (value, reason) in bad.items():
        letter = reasons[f"{name}/r"]
        assert letter["schema"] == "vqmon.dead-letter/1"
        assert letter["reason"] == reason, (name, letter["error"])
        assert letter["error"]
        headers = {k: base64.b64decode(v) for k, v in letter["headers"]}
        assert headers["stream"] == name.encode()
        if name != "http404":  # published with the original value and an extra header
            assert base64.b64decode(letter["value"]) == value
            assert letter["value_bytes"] == len(value)
            assert headers["x-trace"] == b"abc"
        assert letter["source"]["topic"] == topics.segments
    for _, _, headers in dead.messages:
        assert headers["vqmon-reason"] in {r.encode() for _, r in bad.values()}
    dead.close()
    verdicts.close()

    wait_for(
        lambda: daemon.metric("vqmon_dead_letters_total", reason="decode_error") == 1,
        20,
        "dead-letter metrics",
        daemon,
    )
    for reason in (
        "unsupported_container",
        "limit_exceeded",
        "empty",
        "unsupported_reference",
        "bad_header",
        "bad_reference",
    ):
        expected = sum(1 for _, r in bad.values() if r == reason)
        assert daemon.metric("vqmon_dead_letters_total", reason=reason) == expected
        assert daemon.metric("vqmon_segments_processed_total", reason=reason) == expected
    assert daemon.proc.poll() is None
    assert daemon.get("/readyz")[0] == 200
    assert daemon.terminate() == 0
