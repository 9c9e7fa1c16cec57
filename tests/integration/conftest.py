"""A real Tansu broker, real encodes, and the daemon as a subprocess (so it can be killed -9)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from ingest.broker import EmbeddedBroker, free_port
from ingest.contract import segment_message
from ingest.kafka import KafkaConfig, ensure_topics
from ingest.synth import EncodeSettings, clip

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
_ids = itertools.count()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b


@pytest.fixture(scope="session")
def tiny_segments() -> list[bytes]:
    """Four distinct 1 s H.264/MPEG-TS segments at 160x90 (fast to decode)."""
    s = EncodeSettings(fps=25, gop=25)
    return [
        clip(k, width=160, height=90, seconds=1.0, seed=i, settings=s)
        for i, k in enumerate(("scene", "bars", "texture", "gradient"))
    ]


@dataclass
class Topics:
    segments: str
    verdicts: str
    alerts: str
    dead_letter: str
    group: str

    @classmethod
    def unique(cls, name: str) -> Topics:
        n = f"{name}-{os.getpid()}-{next(_ids)}"
        return cls(f"seg.{n}", f"ver.{n}", f"alr.{n}", f"dlq.{n}", f"grp.{n}")

    def create(self, bootstrap: str) -> None:
        cfg = KafkaConfig(partitions=PARTITIONS)
        ensure_topics(
            cfg, [bootstrap], [self.segments, self.verdicts, self.alerts, self.dead_letter]
        )


def daemon_config(tmp_path: Path, bootstrap: str, topics: Topics, **sections: Any) -> Path:
    cfg: dict[str, Any] = {
        "kafka": {
            "bootstrap_servers": [bootstrap],
            "group_id": topics.group,
            "topics": {
                "segments": topics.segments,
                "verdicts": topics.verdicts,
                "alerts": topics.alerts,
                "dead_letter": topics.dead_letter,
            },
            "partitions": PARTITIONS,
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
            "request_timeout_ms": 10000,
        },
        "decode": {"threads": 1, "sampling": {"mode": "uniform", "count": 2}},
        "pipeline": {"decode_workers": 1, "shutdown_timeout_s": 10},
        "http": {"host": "127.0.0.1", "port": free_port()},
        "logging": {"level": "INFO", "format": "json"},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    path = tmp_path / f"vqmon-{next(_ids)}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@dataclass
class DaemonProcess:
    config: Path
    log: Path
    port: int
    role: str = "screen"
    proc: subprocess.Popen[bytes] = field(init=False)

    def start(self) -> DaemonProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "monitor",
                    "run",
                    "--config",
                    str(self.config),
                    "--role",
                    self.role,
                ],
                cwd=ROOT,
                stdout=out,
                stderr=out,
            )
        return self

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def metric(self, name: str, **labels: str) -> float:
        """Value of one sample from /metrics (0 when absent)."""
        _, text = self.get("/metrics")
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            sample, _, value = line.rpartition(" ")
            metric, _, rest = sample.partition("{")
            got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
            if metric == name and got == want:
                return float(value)
        return 0.0

    def wait_ready(self, timeout_s: float = 60) -> None:
        wait_for(lambda: self.get("/readyz")[0] == 200, timeout_s, "daemon ready", self)

    def terminate(self, timeout_s: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def tail(self) -> str:
        return self.log.read_text()[-4000:] if self.log.exists() else ""


def wait_for(cond: Any, timeout_s: float, what: str, daemon: DaemonProcess | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        if daemon is not None and daemon.proc.poll() is not None:
            raise AssertionError(f"daemon exited ({daemon.proc.returncode}):\n{daemon.tail()}")
        time.sleep(0.2)
    tail = daemon.tail() if daemon is not None else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Any]:
    started: list[DaemonProcess] = []

    def start(config: Path, role: str = "screen") -> DaemonProcess:
        port = int(yaml.safe_load(config.read_text())["http"]["port"])
        d = DaemonProcess(config, tmp_path / f"daemon-{len(started)}.log", port, role).start()
        started.append(d)
        return d

    yield start
    for d in started:
        d.kill()


def producer(bootstrap: str, *, idempotent: bool = True) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=[bootstrap],
        acks="all",
        enable_idempotence=idempotent,
        max_request_size=16 * 1024 * 1024,
        linger_ms=5,
    )


def publish(
    p: KafkaProducer,
    topic: str,
    value: bytes,
    *,
    stream: str,
    rendition: str,
    seq: int,
    extra: list[tuple[str, bytes]] | None = None,
) -> None:
    m = segment_message(value, stream=stream, rendition=rendition, seq=seq, bitrate=200_000)
    p.send(topic, key=m.key, value=m.value, headers=[*m.headers, *(extra or [])])


class TopicReader:
    """Reads a topic from the beginning, across polls, keeping (key, value json, headers)."""

    def __init__(self, bootstrap: str, topic: str, *, decode_value: bool = True) -> None:
        self.decode_value = decode_value
        self.consumer = KafkaConsumer(
            bootstrap_servers=[bootstrap],
            enable_auto_commit=False,
            max_partition_fetch_bytes=16 * 1024 * 1024,
        )
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.messages: list[tuple[str, dict[str, Any], dict[str, bytes]]] = []

    def read(self, timeout_ms: int = 500) -> list[tuple[str, dict[str, Any], dict[str, bytes]]]:
        for batch in self.consumer.poll(timeout_ms=timeout_ms).values():
            for r in batch:
                headers = {k: v for k, v in r.headers}
                value = json.loads(r.value) if self.decode_value else {"bytes": len(r.value)}
                self.messages.append((r.key.decode(), value, headers))
        return self.messages

    def keys(self) -> list[str]:
        return [k for k, _, _ in self.messages]

    def until(self, cond: Any, timeout_s: float, daemon: DaemonProcess | None = None) -> None:
        wait_for(lambda: cond(self.read(200)), timeout_s, "messages", daemon)

    def until_keys(
        self,
        expected: set[str],
        *,
        stall_s: float,
        max_s: float,
        daemon: DaemonProcess | None = None,
        explain: Callable[[set[str]], str] | None = None,
    ) -> None:
        """Wait until every key of `expected` was read, for as long as new ones keep coming.

        Fails when no new expected key arrived for `stall_s` (the daemon stalled or lost
        them) or after `max_s` in all, naming the missing keys (and `explain(missing)`).
        A loaded machine only makes progress slower, so it does not make this fail.
        """
        start = last_progress = time.monotonic()
        seen: set[str] = set()
        while True:
            now_seen = expected & set(self.keys())
            if now_seen == expected:
                return
            now = time.monotonic()
            if len(now_seen) > len(seen):
                seen, last_progress = now_seen, now
            if daemon is not None and daemon.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({daemon.proc.returncode}):\n{daemon.tail()}")
            if now - last_progress > stall_s or now - start > max_s:
                missing = expected - now_seen
                why = "no progress" if now - last_progress > stall_s else "too slow"
                raise AssertionError(
                    f"{why}: {len(missing)} of {len(expected)} keys missing after "
                    f"{now - start:.0f} s (last new key {now - last_progress:.0f} s ago): "
                    f"{sorted(missing)[:20]}\n"
                    + (explain(missing) + "\n" if explain is not None else "")
                    + (daemon.tail() if daemon is not None else "")
                )
            self.read(200)

    def close(self) -> None:
        self.consumer.close()
