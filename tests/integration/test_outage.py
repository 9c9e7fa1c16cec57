"""Broker restart while the daemon runs: it reconnects by itself and loses nothing.

The broker persists to S3 (a local moto_server) so its topics and committed offsets
survive the restart, as a real cluster's would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from ingest.broker import EmbeddedBroker, free_port, wait_for_port
from tests.integration.conftest import TopicReader, Topics, daemon_config, producer

pytestmark = pytest.mark.integration


def _moto_server() -> str | None:
    venv_bin = Path(sys.executable).parent / "moto_server"
    return str(venv_bin) if venv_bin.exists() else shutil.which("moto_server")


@pytest.fixture
def s3_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    moto = _moto_server()
    if moto is None:
        pytest.skip("moto_server not installed (pip install 'moto[server]')")
    port = free_port()
    proc = subprocess.Popen(
        [moto, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for_port("127.0.0.1", port, 30), "moto_server did not start"
        bucket = urllib.request.Request(f"http://127.0.0.1:{port}/tansu", method="PUT")
        urllib.request.urlopen(bucket, timeout=10).close()
        env = {
            "AWS_ENDPOINT": f"http://127.0.0.1:{port}",
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "eu-west-2",
        }
        broker = EmbeddedBroker(storage="s3://tansu/", env=env, log_path=tmp_path / "tansu.log")
        with broker:
            yield broker
    finally:
        proc.terminate()
        proc.wait(10)


def _producer(bs: str) -> KafkaProducer:
    """acks=all, retrying, not idempotent: a batch in flight when the broker dies and sent
    again may be answered DUPLICATE_SEQUENCE_NUMBER by a restarted Tansu, which
    kafka-python counts as success although the records were not kept (the daemon's
    producer is not idempotent for the same reason). A duplicate input is harmless here:
    both copies get the same verdict key."""
    return producer(bs, idempotent=False)


def _publish(bs: str, topic: str, segments: list[bytes], seqs: range) -> set[str]:
    """Publish and make sure the broker has every message: kafka-python's flush() does not
    raise for failed sends, so failures are sent again with another producer."""
    todo = [(seq, s) for seq in seqs for s in range(3)]
    for _ in range(10):
        p = _producer(bs)
        futures = []
        for seq, s in todo:
            futures.append(
                p.send(
                    topic,
                    key=f"s{s}/r".encode(),
                    value=segments[(seq + s) % len(segments)],
                    headers=[
                        ("stream", f"s{s}".encode()),
                        ("rendition", b"r"),
                        ("seq", str(seq).encode()),
                    ],
                )
            )
        p.flush()
        todo = [item for item, f in zip(todo, futures, strict=True) if f.failed()]
        p.close()
        if not todo:
            return {f"s{s}/r/{seq}" for seq in seqs for s in range(3)}
        time.sleep(1)
    raise AssertionError(f"{len(todo)} segments could not be published")


def _explain(bs: str, topics: Topics, daemon: Any, tansu_log: Path) -> Callable[[set[str]], str]:
    """What a failure report needs: were the missing segments on the input topic at all,
    what the daemon counted, and where the full logs are."""

    def explain(missing: set[str]) -> str:
        inputs = TopicReader(bs, topics.segments, decode_value=False)
        try:
            ends = sum(inputs.consumer.end_offsets(list(inputs.consumer.assignment())).values())
            deadline = time.monotonic() + 60
            while len(inputs.messages) < ends and time.monotonic() < deadline:
                inputs.read(500)
        finally:
            inputs.close()
        published = {
            f"{h['stream'].decode()}/{h['rendition'].decode()}/{h['seq'].decode()}"
            for _, _, h in inputs.messages
        }
        return (
            f"{len(missing - published)} of the missing segments are not on the input topic "
            f"({len(inputs.messages)} of {ends} records read); daemon counted "
            f"{daemon.metric('vqmon_segments_processed_total', reason='ok'):.0f} screened, "
            f"{daemon.metric('vqmon_queue_depth', stage='produce'):.0f} outputs unacknowledged, "
            f"{daemon.metric('vqmon_assigned_partitions'):.0f} partitions assigned, "
            f"{daemon.metric('vqmon_paused_partitions'):.0f} paused\n"
            f"daemon log: {daemon.log}\ntansu log: {tansu_log}"
        )

    return explain


def _every_verdict(
    bs: str, topics: Topics, daemon: Any, expected: set[str], tansu_log: Path, max_s: float
) -> None:
    """Every expected segment gets its verdict. Reconnecting takes seconds and screening the
    rest is slow on a loaded machine: wait as long as verdicts keep arriving, fail when
    they stop with segments still missing."""
    reader = TopicReader(bs, topics.verdicts)
    reader.until_keys(
        expected,
        stall_s=120,
        max_s=max_s,
        daemon=daemon,
        explain=_explain(bs, topics, daemon, tansu_log),
    )
    assert set(reader.keys()) == expected
    reader.close()


def test_broker_restart_while_running_loses_nothing(
    s3_broker: EmbeddedBroker, tiny_segments: list[bytes], tmp_path: Path, start_daemon: Any
) -> None:
    bs = s3_broker.bootstrap_servers
    topics = Topics.unique("outage")
    topics.create(bs)
    expected = _publish(bs, topics.segments, tiny_segments, range(0, 60))
    daemon = start_daemon(daemon_config(tmp_path, bs, topics))
    reader = TopicReader(bs, topics.verdicts)
    reader.until(lambda msgs: len(msgs) >= 20, 120, daemon)
    reader.close()

    s3_broker.kill()  # mid-run: outputs and commits in flight fail
    time.sleep(3)  # the daemon sees connection failures for a while
    assert daemon.proc.poll() is None
    s3_broker.start()

    expected |= _publish(bs, topics.segments, tiny_segments, range(60, 80))
    _every_verdict(bs, topics, daemon, expected, tmp_path / "tansu.log", max_s=900)
    assert daemon.get("/healthz")[0] == 200
    assert daemon.terminate() == 0


def test_a_broker_that_is_not_there_at_start_is_one_line(tmp_path: Path) -> None:
    # the real CLI against an address nothing listens on: after the client's bootstrap
    # timeout, one line naming the brokers and what to check, exit 1 (systemd restarts it)
    config = tmp_path / "c.yaml"
    port = free_port()
    config.write_text(f"kafka:\n  bootstrap_servers: [127.0.0.1:{port}]\n  embedded: false\n")
    vqmon = Path(sys.executable).parent / "vqmon"
    done = subprocess.run(
        [str(vqmon), "run", "--config", str(config), "--duration", "5"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 1
    assert "vqmon run: cannot reach the Kafka brokers (127.0.0.1:" in done.stderr
    assert "check kafka.bootstrap_servers" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("role", ["judge", "diagnose"])
def test_a_role_without_screening_reports_its_own_run(role: str, tmp_path: Path) -> None:
    # the real CLI on the embedded broker (a subprocess: no client thread outlives it in
    # the test process): the run's seconds are its own (the diagnose role's summary once
    # said -1796479628 s), and the judge's totals are filled in
    vqmon = Path(sys.executable).parent / "vqmon"
    done = subprocess.run(
        [str(vqmon), "run", "--role", role, "--duration", "3"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env={**os.environ, "VQMON_HTTP__PORT": "0"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"vqmon: ran the {role} role for ")
    line = next(x for x in done.stdout.splitlines() if x.startswith("  summary: "))
    summary = json.loads(line.removeprefix("  summary: "))
    assert summary["roles"] == [role]
    assert 2.0 <= summary["seconds"] < 120.0
    if role == "judge":
        assert summary["judge"] == {"incidents_opened": 0, "encoder_decisions": 0}
    else:
        assert "judge" not in summary and summary["diagnose"] == {}


def test_a_broker_that_hangs_while_running_loses_nothing(
    tiny_segments: list[bytes], tmp_path: Path, start_daemon: Any
) -> None:
    # Hung, not gone: connections stay open and nothing answers (a stalled broker host).
    # Requests time out, deliveries fail, the publisher recreates its producer (each
    # attempt waiting a request timeout for a first answer), and the group may rebalance.
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        bs = broker.bootstrap_servers
        topics = Topics.unique("hang")
        topics.create(bs)
        expected = _publish(bs, topics.segments, tiny_segments, range(0, 40))
        daemon = start_daemon(
            daemon_config(tmp_path, bs, topics, kafka={"request_timeout_ms": 3000})
        )
        reader = TopicReader(bs, topics.verdicts)
        reader.until(lambda msgs: len(msgs) >= 1, 120, daemon)  # the rest still to send
        reader.close()
        broker.hang()
        try:
            time.sleep(40)  # past the delivery timeout (30 s): outputs in flight fail
            assert daemon.proc.poll() is None, daemon.tail()
            # what VqmonOutputsUnacknowledged reads: their age runs on through the resets
            waited = daemon.metric("vqmon_oldest_unacknowledged_output_seconds", role="screen")
            assert waited > 20, waited
        finally:
            broker.resume()
        expected |= _publish(bs, topics.segments, tiny_segments, range(40, 50))
        _every_verdict(bs, topics, daemon, expected, tmp_path / "tansu.log", max_s=600)
        resets = daemon.metric("vqmon_producer_resets_total")
        assert daemon.terminate() == 0
        assert resets >= 1, "the hang never failed a delivery: hang longer"
