"""The closed loop for real: feed -> screen -> judge -> decisions -> feed, on a real broker.

The feed (monitor.feed.Feed) runs in the test process as the closed-loop encoder: it
encodes live ladders with PyAV, injects the scheduled impairments and applies the
encoder decisions it reads. The daemon runs `--role all` (screen + judge) as a
subprocess, so it can be killed -9.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaProducer

from ingest.broker import EmbeddedBroker, free_port
from ingest.kafka import KafkaConfig, ensure_topics
from monitor.feed import Feed, KafkaDecisionSource
from monitor.sections import FeedConfig
from tests.integration.conftest import (
    PARTITIONS,
    DaemonProcess,
    TopicReader,
    Topics,
    daemon_config,
    wait_for,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LOW, HIGH = "160x90", "320x180"
BITRATES = {LOW: 150_000, HIGH: 300_000}


@dataclass
class LoopTopics:
    base: Topics
    incidents: str
    decisions: str
    judge_group: str

    @classmethod
    def unique(cls, name: str) -> LoopTopics:
        base = Topics.unique(name)
        n = base.segments.removeprefix("seg.")
        return cls(base, f"inc.{n}", f"dec.{n}", f"jgrp.{n}")

    def create(self, bootstrap: str) -> None:
        self.base.create(bootstrap)
        compact = {"cleanup.policy": "compact"}
        ensure_topics(
            KafkaConfig(partitions=PARTITIONS),
            [bootstrap],
            [self.incidents, self.decisions],
            {self.incidents: compact, self.decisions: compact},
        )


def loop_config(tmp_path: Path, bootstrap: str, t: LoopTopics, **sections: Any) -> Path:
    path = daemon_config(tmp_path, bootstrap, t.base)
    cfg = yaml.safe_load(path.read_text())
    cfg["kafka"]["topics"].update(incidents=t.incidents, encoder_decisions=t.decisions)
    cfg["judge_role"] = {"group_id": t.judge_group, "tick_interval_s": 0.5}
    # The ladder check is off: on this synthetic content both rungs saturate near MOS 4.8,
    # so "a rung no better than the one below" is true of the content, not a fault
    # (tests/unit/test_judge.py covers the check).
    cfg["judge"] = {
        "starvation": {"open_after": 2},
        "round_wait_s": 5.0,
        "ladder": {"enabled": False},
    }
    cfg["encoding"] = {
        "enabled": True,
        "dry_run": False,
        "cooldown_s": 600,
        # A target the clean rungs hold; lowering is the bench's business, not this test's
        # (the floor at the nominal bitrate: never lowered).
        "defaults": {"target_mos": 3.0},
        "policies": {f"*/{r}": {"bitrate": b, "min_bitrate": b} for r, b in BITRATES.items()},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_feed(bootstrap: str, t: LoopTopics, **fields: Any) -> Feed:
    cfg = FeedConfig(
        renditions=[LOW, HIGH],
        bitrates=BITRATES,
        segment_seconds=1.0,
        speed=1.0,
        black_every=0,
        closed_loop=True,
        **fields,
    )
    producer = KafkaProducer(bootstrap_servers=[bootstrap], acks="all", linger_ms=5)
    decisions = KafkaDecisionSource(KafkaConfig(), [bootstrap], t.decisions)
    return Feed(cfg, producer, t.base.segments, decisions=decisions, keep_log=True).start()


class AllRoles(DaemonProcess):
    """The daemon with `--role all`: screen and judge in one process."""

    def start(self) -> AllRoles:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "monitor",
                    "run",
                    "--role",
                    "all",
                    "--config",
                    str(self.config),
                ],
                cwd=ROOT,
                stdout=out,
                stderr=out,
            )
        return self


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Any]:
    started: list[AllRoles] = []

    def start(config: Path) -> AllRoles:
        port = int(yaml.safe_load(config.read_text())["http"]["port"])
        d = AllRoles(config, tmp_path / f"daemon-{len(started)}.log", port).start()
        started.append(d)
        return d

    yield start
    for d in started:
        d.kill()


@pytest.fixture
def feeds() -> Iterator[list[Feed]]:
    started: list[Feed] = []
    yield started
    for f in started:
        f.stop()


def events(reader: TopicReader) -> list[dict[str, Any]]:
    return [v for _, v, _ in reader.read(200)]


def test_closed_loop_starve_black_freeze_localised_and_repaired(
    broker: EmbeddedBroker, tmp_path: Path, start_daemon: Any, feeds: list[Feed]
) -> None:
    bs = broker.bootstrap_servers
    t = LoopTopics.unique("loop")
    t.create(bs)
    daemon = start_daemon(loop_config(tmp_path, bs, t))
    daemon.wait_ready()
    feed = start_feed(
        bs,
        t,
        stream_names=["starve", "src", "rung", "clean"],
        patterns=["scene", "texture", "scene", "texture"],
        schedule=[
            {
                "kind": "starve",
                "stream": "starve",
                "rendition": HIGH,
                "from_seq": 8,
                "bitrate": 30000,
            },
            {"kind": "black", "stream": "src", "from_seq": 8, "segments": 3},
            {"kind": "freeze", "stream": "rung", "rendition": HIGH, "from_seq": 8, "segments": 5},
        ],
    )
    feeds.append(feed)
    incidents = TopicReader(bs, t.incidents)
    decisions = TopicReader(bs, t.decisions)

    def starve_resolved(msgs: list[Any]) -> bool:
        return any(
            v["stream"] == "starve" and v["kind"] == "starvation" and v["state"] == "resolved"
            for _, v, _ in msgs
        )

    incidents.until(starve_resolved, 150, daemon)
    wait_for(lambda: feed.seq >= 24, 60, "24 rounds", daemon)  # time for stray decisions
    decided = [v for v in events(decisions)]
    got = [v for v in events(incidents)]
    by_id: dict[str, list[dict[str, Any]]] = {}
    for v in got:
        by_id.setdefault(v["id"], []).append(v)

    # The starved rung: one rendition incident opened within open_after (2) + 1 segments of
    # the onset, exactly one raise-bitrate decision (the cooldown holds), applied by the
    # feed, after which quality is back and the incident resolved.
    starve = [i for i in by_id if i.startswith("starve/320x180/starvation/")]
    assert len(starve) == 1, sorted(by_id)
    life = by_id[starve[0]]
    assert life[0]["state"] == "open" and life[0]["localisation"] == "rendition"
    assert 8 <= life[0]["opened_seq"] <= 8 + 3
    assert [v["state"] for v in life][-1] == "resolved"
    assert sum(v["state"] == "resolved" for v in life) == 1
    assert [d["id"].rsplit("/", 1)[0] for d in decided] == ["starve/320x180/raise_bitrate"]
    d = decided[0]
    assert d["incident_id"] == starve[0] and d["dry_run"] is False
    assert d["parameters"] == {"from_bitrate": 300000, "to_bitrate": 360000}
    assert d["seq"] <= 8 + 4
    assert [a[2].id for a in feed.applied] == [d["id"]]
    applied_seq = feed.applied[0][1]
    after = [
        p for p in feed.log if (p.stream, p.rendition) == ("starve", HIGH) and p.seq >= applied_seq
    ]
    assert after and all(p.settings.bitrate == 360000 for p in after)
    verdicts = TopicReader(bs, t.base.verdicts)
    verdicts.until(
        lambda msgs: (
            sum(
                1
                for k, _, _ in msgs
                if k.startswith("starve/320x180/") and int(k.rsplit("/", 1)[1]) > applied_seq
            )
            >= 3
        ),
        60,
        daemon,
    )
    recovered = [
        v
        for k, v, _ in verdicts.messages
        if k.startswith("starve/320x180/") and v["seq"] > applied_seq
    ]
    assert all(v["declared_bitrate"] == 360000 for v in recovered)
    assert min(v["mos"] for v in recovered) > 4.0
    starved = [
        v
        for k, v, _ in verdicts.messages
        if k.startswith("starve/320x180/") and 8 <= v["seq"] < applied_seq
    ]
    assert starved and max(v["mos"] for v in starved) < 3.0

    # A source fault (black on every rung) is one stream-wide incident localised to the
    # source; a freeze on one rung is that rung's.
    src = [i for i in by_id if i.startswith("src/")]
    assert [i.split("@")[0] for i in src] == ["src/*/black/8"], sorted(by_id)
    assert by_id[src[0]][0]["localisation"] == "source"
    assert by_id[src[0]][0]["renditions"] == [LOW, HIGH]
    rung = [i for i in by_id if i.startswith("rung/")]
    assert [i.rsplit("/", 1)[0] for i in rung] == ["rung/320x180/freeze"], sorted(by_id)
    assert by_id[rung[0]][0]["localisation"] == "rendition"
    # Clean streams open nothing.
    assert not [i for i in by_id if i.startswith("clean/")], sorted(by_id)
    assert (
        daemon.metric("vqmon_incidents_total", stream="src", kind="black", localisation="source")
        == 1
    )
    assert (
        daemon.metric(
            "vqmon_encoder_decisions_total",
            stream="starve",
            rendition=HIGH,
            action="raise_bitrate",
            mode="applied",
        )
        == 1
    )
    for r in (incidents, decisions, verdicts):
        r.close()
    assert daemon.terminate() == 0


def test_kill_9_mid_incident_keeps_it_open_and_resolves_it_once(
    broker: EmbeddedBroker, tmp_path: Path, start_daemon: Any, feeds: list[Feed]
) -> None:
    bs = broker.bootstrap_servers
    t = LoopTopics.unique("restart")
    t.create(bs)
    config = loop_config(tmp_path, bs, t)
    daemon = start_daemon(config)
    daemon.wait_ready()
    feed = start_feed(
        bs,
        t,
        stream_names=["news"],
        patterns=["scene"],
        schedule=[{"kind": "black", "stream": "news", "from_seq": 6, "segments": 14}],
    )
    feeds.append(feed)
    incidents = TopicReader(bs, t.incidents)
    incidents.until(lambda msgs: any(v["state"] == "open" for _, v, _ in msgs), 90, daemon)
    opened = [v for _, v, _ in incidents.messages if v["state"] == "open"]
    assert [v["id"].split("@")[0] for v in opened] == ["news/*/black/6"]
    assert feed.seq < 6 + 14, "the black run ended before the kill: the test machine is too slow"
    daemon.kill()  # SIGKILL, mid-incident

    again = start_daemon(config)

    def resolved(msgs: list[Any]) -> bool:
        return any(v["state"] == "resolved" for _, v, _ in msgs)

    incidents.until(resolved, 150, again)
    time.sleep(3)  # anything published twice would show up now
    incidents.read(500)
    life = [v for _, v, _ in incidents.messages]
    assert {v["id"] for v in life} == {opened[0]["id"]}  # the same id after the kill
    states = [v["state"] for v in life]
    assert states.count("open") == 1 and states.count("resolved") == 1, states
    assert states[-1] == "resolved"
    rebuilt = [
        json.loads(line)
        for line in again.log.read_text().splitlines()
        if '"judge state rebuilt"' in line
    ]
    # Restored from the incidents topic, baselines and runs from recent verdicts.
    assert rebuilt and rebuilt[0]["open"] == 1 and rebuilt[0]["replayed"] > 0, rebuilt
    incidents.close()
    assert again.terminate() == 0


# ---------------------------------------------------------------- Prometheus

PROMETHEUS = shutil.which("prometheus")


def _api(port: int, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{port}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())["data"]


def _ready(port: int) -> bool:
    """Prometheus answers 503 until its storage is open: wait for /-/ready."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.mark.skipif(
    PROMETHEUS is None,
    reason="Debian's `prometheus` binary is not installed (apt-get install prometheus)",
)
def test_prometheus_scrapes_the_daemon_and_evaluates_the_rules(
    broker: EmbeddedBroker, tmp_path: Path, start_daemon: Any, feeds: list[Feed]
) -> None:
    bs = broker.bootstrap_servers
    t = LoopTopics.unique("prom")
    t.create(bs)
    daemon = start_daemon(loop_config(tmp_path, bs, t))
    daemon.wait_ready()
    feeds.append(
        start_feed(
            bs,
            t,
            stream_names=["news"],
            patterns=["scene"],
            schedule=[{"kind": "black", "stream": "news", "from_seq": 3}],
        )
    )
    port = free_port()
    rules = ROOT / "configs" / "prometheus" / "vqmon-rules.yml"
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules)],
                "scrape_configs": [
                    {
                        "job_name": "vqmon",
                        "static_configs": [{"targets": [f"127.0.0.1:{daemon.port}"]}],
                    }
                ],
            }
        )
    )
    assert PROMETHEUS is not None
    with (tmp_path / "prometheus.log").open("wb") as out:
        prom = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=out,
            env={**os.environ, "HOME": str(tmp_path)},
        )
    try:
        wait_for(lambda: _ready(port), 60, "prometheus ready")

        def scraped() -> bool:
            res = _api(port, "query", query='up{job="vqmon"}')["result"]
            return bool(res) and res[0]["value"][1] == "1"

        wait_for(scraped, 30, "prometheus scraping the daemon", daemon)
        groups = _api(port, "rules")["groups"]
        names = {r["name"] for g in groups for r in g["rules"]}
        assert {"VqmonDown", "VqmonSourceIncident", "VqmonEncoderStarved"} <= names
        assert all(r["health"] == "ok" for g in groups for r in g["rules"]), groups

        def source_alert() -> bool:
            alerts = _api(port, "alerts")["alerts"]
            return any(
                a["labels"]["alertname"] == "VqmonSourceIncident"
                and a["labels"].get("stream") == "news"
                and a["state"] in ("pending", "firing")
                for a in alerts
            )

        wait_for(source_alert, 90, "VqmonSourceIncident pending", daemon)
        res = _api(port, "query", query='vqmon_incidents_open{localisation="source"}')["result"]
        assert any(s["metric"]["stream"] == "news" and s["value"][1] == "1" for s in res)
    finally:
        prom.terminate()
        prom.wait(10)
    assert daemon.terminate() == 0
