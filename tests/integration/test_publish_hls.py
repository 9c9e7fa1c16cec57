"""Real content in: `vqmon publish` into the real broker, and `source: hls` over a local HTTP
server (an fMP4 ladder from PyAV's HLS muxer, and a TS ladder the publisher grows live)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ingest.broker import EmbeddedBroker
from ingest.synth import EncodeSettings, clip
from tests.hls_helpers import pyav_hls_ladder, serve_dir
from tests.integration.conftest import ROOT, TopicReader, Topics, daemon_config, wait_for

pytestmark = pytest.mark.integration


def source_file(tmp_path: Path, seconds: float) -> Path:
    """A real encoded file as a user would have it: H.264 in MP4, 160x90, keyframe each second."""
    path = tmp_path / "talk.mp4"
    s = EncodeSettings("libx264", "mp4", gop=25)
    path.write_bytes(clip("scene", width=160, height=90, seconds=seconds, settings=s))
    return path


def vqmon(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "monitor", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_publish_a_file_to_kafka_and_get_one_verdict_per_segment(
    broker: EmbeddedBroker, tmp_path: Path, start_daemon: Any
) -> None:
    bs = broker.bootstrap_servers
    topics = Topics.unique("publish")
    topics.create(bs)
    path = source_file(tmp_path, 4.0)
    pub = vqmon(
        "publish", str(path), "--bootstrap", bs, "--topic", topics.segments,
        "--ladder", "160x90:200k,96x54:60k",
    )  # fmt: skip
    out, _ = pub.communicate(timeout=120)
    assert pub.returncode == 0, out
    assert "4 segments of talk (90p x2, 54p x2)" in out

    daemon = start_daemon(daemon_config(tmp_path, bs, topics))
    reader = TopicReader(bs, topics.verdicts)
    expected = {f"talk/{r}/{i}" for r in ("90p", "54p") for i in range(2)}  # 2-s segments
    reader.until_keys(expected, stall_s=60, max_s=180, daemon=daemon)
    assert sorted(reader.keys()) == sorted(expected)  # one verdict per segment, no more
    for _, v, _ in reader.messages:
        assert v["declared_bitrate"] == {"90p": 200_000, "54p": 60_000}[v["rendition"]]
        width = v["stream_info"]["width"]
        assert width == {"90p": 160, "54p": 96}[v["rendition"]]
        assert v["stream_info"]["duration_s"] == pytest.approx(2.0, abs=0.1)
    reader.close()
    assert daemon.terminate() == 0

    # the report, read straight from the output topics
    report = tmp_path / "report.html"
    rep = vqmon(
        "report", "--bootstrap", bs, "--verdicts-topic", topics.verdicts,
        "--alerts-topic", topics.alerts, "--dead-letter-topic", topics.dead_letter,
        "--out", str(report),
    )  # fmt: skip
    out, _ = rep.communicate(timeout=120)
    assert rep.returncode == 0, out
    assert "4 verdicts" in report.read_text() and "talk" in report.read_text()


def test_hls_source_screens_every_segment_of_every_rendition_and_follows_a_live_playlist(
    broker: EmbeddedBroker, tmp_path: Path, start_daemon: Any
) -> None:
    bs = broker.bootstrap_servers
    topics = Topics.unique("hls")
    topics.create(bs)
    www = tmp_path / "www"
    pyav_hls_ladder(www / "sport", seconds=2.0)  # fMP4, VOD: 2 rungs x 2 segments
    path = source_file(tmp_path, 5.0)
    with serve_dir(www) as base:
        source = {
            "type": "hls",
            "urls": [f"{base}/sport/master.m3u8", f"{base}/news/master.m3u8"],
            "poll_interval_s": 0.3,
        }
        daemon = start_daemon(daemon_config(tmp_path, bs, topics, source=source))
        daemon.wait_ready(90)  # sport is there; news does not exist yet
        # news appears now and grows at real time: 1-s segments over 5 s
        pub = vqmon(
            "publish", str(path), "--hls", str(www / "news"), "--stream", "news",
            "--segment-duration", "1", "--ladder", "160x90:200k,96x54:60k", "--realtime",
        )  # fmt: skip
        reader = TopicReader(bs, topics.verdicts)
        expected = {f"sport/{r}/{i}" for r in ("180p", "90p") for i in range(2)}
        expected |= {f"news/{r}/{i}" for r in ("90p", "54p") for i in range(5)}
        reader.until_keys(expected, stall_s=60, max_s=180)
        out, _ = pub.communicate(timeout=60)
        published_at = time.time()
        assert pub.returncode == 0, out
        # every playlist ended and every segment is done: the daemon stops by itself
        wait_for(lambda: daemon.proc.poll() is not None, 60, "the daemon to stop at the end")
    assert daemon.proc.returncode == 0, daemon.tail()
    assert sorted(reader.keys()) == sorted(expected), daemon.tail()
    by_key = {k: v for k, v, _ in reader.messages}
    # the first news segment was screened while the publisher was still growing the playlist
    assert by_key["news/90p/0"]["screened_at"] < published_at - 2
    assert by_key["news/90p/0"]["declared_bitrate"] == 240_000  # master BANDWIDTH
    assert by_key["sport/180p/1"]["stream_info"]["width"] == 320
    assert by_key["news/54p/3"]["source"]["topic"] == f"{base}/news/54p/index.m3u8"
    assert "screened 14 segments of 2 streams (4 renditions)" in daemon.log.read_text()
    reader.close()
