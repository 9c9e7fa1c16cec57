"""`vqmon demo`: the whole system on one machine, with faults injected and found.

Starts the embedded Kafka-compatible broker (Tansu) on a free port, the closed-loop
synthetic feed (live ladders of real H.264 from PyAV, 2-s segments, a schedule of
impairments: bitrate starvation on one rung, black and freeze on every rung (source
faults), blur, noise, transport loss), and the daemon in every role (screen, judge,
diagnose) with /metrics served. A terminal view (rich) shows quality, flags, incidents,
encoder decisions and diagnoses as they happen; without a TTY it logs plain lines. At
the end it prints each injected impairment against what found it and how long it took,
counts any incident or alert on clean segments, and writes an HTML report.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from ingest import kafka as kafka_io
from ingest.broker import BrokerError, EmbeddedBroker, free_port
from monitor import logs
from monitor.config import Config
from monitor.sections import Impairment

log = logging.getLogger("vqmon.demo")

RENDITIONS = ["320x180", "640x360"]
BITRATES = {"320x180": 300_000, "640x360": 900_000}
STREAMS = ["news", "sport", "nature"]
# What finds each kind: a verdict flag of these kinds, an incident of these kinds, or a
# verdict whose degradation head names one of these classes (most likely, p >= 0.5).
FINDS = {
    "starve": ({"starvation"}, {"starvation"}, {"compression"}),
    "black": ({"black"}, {"black"}, set()),
    "freeze": ({"freeze"}, {"freeze"}, set()),
    "blur": ({"blur"}, {"blur"}, {"blur"}),
    "noise": ({"noise"}, {"noise"}, {"noise"}),
    "loss": ({"corruption"}, {"corruption"}, {"packet_loss"}),
}
# Impairments that more bits can mend: a starved rung, and a noisy picture whose noise
# takes the bits its detail needed. A bitrate raise for anything else is misdirected.
BITS_MEND = {"starve", "noise"}
# What each encoder filter mends: denoising a noisy source, deblocking a starved rung. A
# filter switched on for anything else is misdirected (deblocking the blocks a noisy
# source's grain made of a bitrate-capped encode hides them and leaves their cause).
FILTER_MENDS = {"denoise": {"noise"}, "deblock": {"starve"}}
# Segments after an impairment's last one where its effects (gates, hysteresis, a
# starved rung until the encoder applies the decision) may still show.
GRACE = 4


def schedule(rounds: int) -> list[Impairment]:
    """Faults spread over the run: a clean warm-up for the baselines, then one of each."""
    a, b = max(5, rounds // 5), max(12, rounds // 2)
    return [
        Impairment(kind="starve", stream="news", rendition="640x360", from_seq=a, bitrate=50_000),
        Impairment(kind="black", stream="sport", from_seq=a, segments=2),
        Impairment(kind="noise", stream="nature", from_seq=a, segments=3, strength=25),
        Impairment(kind="freeze", stream="news", from_seq=b, segments=3),
        Impairment(
            kind="blur", stream="sport", rendition="640x360", from_seq=b, segments=3, strength=3.0
        ),
        Impairment(
            kind="loss", stream="nature", rendition="640x360", from_seq=b, segments=2, strength=8.0
        ),
    ]


def min_rounds() -> int:
    """The fewest 2-s rounds whose schedule plays every fault to its last segment."""
    rounds = 1
    while any(i.from_seq + (i.segments or 1) > rounds for i in schedule(rounds)):
        rounds += 1
    return rounds


def demo_config(bootstrap: str, port: int, rounds: int) -> Config:
    cfg = Config.model_validate(
        {
            "kafka": {"bootstrap_servers": [bootstrap], "embedded": False},
            "http": {"port": port},
            "logging": {"level": "WARNING"},
            "feed": {
                "enabled": True,
                "stream_names": STREAMS,
                "patterns": ["scene", "texture", "scene"],
                "renditions": RENDITIONS,
                "bitrates": BITRATES,
                "speed": 1.0,
                "black_every": 0,
                "closed_loop": True,
                "schedule": [i.model_dump() for i in schedule(rounds)],
                "rounds": rounds,
            },
            "judge": {"starvation": {"open_after": 2}, "ladder": {"enabled": False}},
            # The escalation budget is 5% of the segments seen in 5 minutes, at least
            # budget_floor: a fleet's hundreds of renditions pass the floor in seconds; the
            # demo's six see 180 segments in all, whose 5% (at most 9, two in its first
            # faults' seconds) left half of its faults undiagnosed. With a floor of 24
            # every injected fault reaches the diagnose role (19 escalations in a run).
            "escalation": {"budget_floor": 24},
            "encoding": {
                "enabled": True,
                "dry_run": False,
                "cooldown_s": 600,
                "defaults": {"target_mos": 3.0},
                "policies": {
                    f"*/{r}": {"bitrate": b, "min_bitrate": b} for r, b in BITRATES.items()
                },
            },
            "judge_role": {"tick_interval_s": 0.5},
        }
    )
    return cfg


@dataclass
class Seen:
    """Everything read back from the output topics, for the view and the final table."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    latest: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    diagnoses: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, topic: str, v: dict[str, Any], t: float) -> None:
        schema = str(v.get("schema", ""))
        with self.lock:
            self.messages.append({"topic": topic, "value": v})
            if schema.startswith("vqmon.verdict/"):
                self.latest[(v["stream"], v["rendition"])] = {**v, "_t": t}
            elif schema.startswith("vqmon.incident/"):
                new = v["id"] not in self.incidents
                self.incidents[v["id"]] = {**self.incidents.get(v["id"], {}), **v, "_t": t}
                if new or v["state"] == "resolved":
                    verb = "opened" if new else "resolved"
                    self.events.append(
                        f"incident {verb}: {v['stream']} {v['kind']} at {v['localisation']}"
                        f" (scope {v['scope']})"
                    )
            elif schema.startswith("vqmon.encoder-decision/"):
                self.decisions.append({**v, "_t": t})
                self.events.append(
                    f"encoder decision: {v['stream']}/{v['rendition']} {v['action']} "
                    f"{json.dumps(v['parameters'])}"
                )
            elif schema.startswith("vqmon.diagnosis/"):
                self.diagnoses.append({**v, "_t": t})
                self.events.append(
                    f"diagnosis ({v.get('model')}): {v.get('segment_id')} {_diagnosis_text(v)}"
                )
            elif schema.startswith("vqmon.alert/"):
                self.alerts.append({**v, "_t": t})


def _diagnosis_class(v: dict[str, Any]) -> str:
    """The degradation class a diagnosis names ("none" when it names none)."""
    for t in v.get("tasks") or []:
        if t.get("degradation"):
            return str(t["degradation"])
    return "none"


def _diagnosis_text(v: dict[str, Any]) -> str:
    parts = []
    for t in v.get("tasks") or []:
        if t.get("degradation"):
            parts.append(f"{t['degradation']} ({t.get('severity') or '?'})")
        if t.get("score_mean") is not None:
            parts.append(f"score {t['score_mean']:.2f}")
    asked = ", ".join(v.get("asked_flags") or [])
    return "; ".join(parts) + (f" [asked about: {asked}]" if asked else "")


def tail(
    bootstrap: str, topics: list[str], partitions: int, seen: Seen, stop: threading.Event
) -> None:
    consumer = KafkaConsumer(
        bootstrap_servers=[bootstrap],
        enable_auto_commit=False,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    try:
        while not stop.is_set():
            for batch in consumer.poll(timeout_ms=300).values():
                for r in batch:
                    try:
                        seen.add(r.topic, json.loads(r.value), time.monotonic())
                    except (ValueError, KeyError, TypeError):
                        continue
    finally:
        consumer.close()


@dataclass
class Finding:
    impairment: Impairment
    found_by: str | None
    after_s: float | None
    diagnosed_as: str | None = None
    """The degradation class of the first diagnosis of a segment in its window."""


def evaluate(seen: Seen, impairments: Iterable[Impairment], seg_s: float) -> dict[str, Any]:
    """Each impairment against the first verdict flag or incident that names it in its window,
    and incidents or alerts on segments outside every window (false alarms)."""
    verdicts = [
        m["value"]
        for m in seen.messages
        if m["value"].get("schema", "").startswith("vqmon.verdict/")
    ]
    findings = []
    imps = list(impairments)
    for imp in imps:
        flags, kinds, classes = FINDS[imp.kind]
        last = imp.from_seq + (imp.segments or 10**6) - 1 + GRACE
        rungs = [imp.rendition] if imp.rendition else RENDITIONS
        hits: list[tuple[int, str]] = []
        for v in verdicts:
            if (
                v["stream"] == imp.stream
                and v["rendition"] in rungs
                and imp.from_seq <= v["seq"] <= last
            ):
                got = {f["kind"] for f in v["flags"]} & flags
                if got:
                    hits.append((v["seq"], f"flag {sorted(got)[0]}"))
                cls = v.get("degradation_class")
                if cls in classes and (v.get("degradation") or {}).get(cls, 0) >= 0.5:
                    hits.append((v["seq"], f"degradation {cls}"))
        for inc in seen.incidents.values():
            if (
                inc["stream"] == imp.stream
                and inc["kind"] in kinds
                and imp.from_seq <= inc["opened_seq"] <= last
            ):
                hits.append((inc["opened_seq"], f"incident {inc['kind']} ({inc['localisation']})"))
        diagnosed = sorted(
            (int(d.get("seq") or 0), _diagnosis_class(d))
            for d in seen.diagnoses
            if d.get("stream") == imp.stream
            and d.get("rendition") in rungs
            # a starve lasts until a decision: its own diagnosis comes in its first segments
            and imp.from_seq <= int(d.get("seq") or 0) <= min(last, imp.from_seq + 2 * GRACE)
        )
        cls = diagnosed[0][1] if diagnosed else None
        if hits:
            seq, by = min(hits)
            findings.append(Finding(imp, by, (seq - imp.from_seq + 1) * seg_s, cls))
        else:
            findings.append(Finding(imp, None, None, cls))

    def impaired(
        stream: str, rendition: str | None, seq: int, kinds: Iterable[str] = FINDS
    ) -> bool:
        for imp in imps:
            if imp.stream != stream or imp.kind not in kinds:
                continue
            end = imp.from_seq + (imp.segments or 10**6) - 1 + GRACE
            if imp.from_seq <= seq <= end and (
                rendition is None or imp.rendition in (None, rendition)
            ):
                return True
        return False

    false_incidents = [
        i for i in seen.incidents.values() if not impaired(i["stream"], None, i["opened_seq"])
    ]
    false_alerts = [a for a in seen.alerts if not impaired(a["stream"], a["rendition"], a["seq"])]

    def mends(d: dict[str, Any]) -> set[str] | None:
        """The fault kinds a decision mends (None: an action this check does not judge)."""
        if d.get("action") == "raise_bitrate":
            return BITS_MEND
        if d.get("action") == "enable_filter":
            return FILTER_MENDS.get(str((d.get("parameters") or {}).get("filter")), set())
        return None

    misdirected = [
        d
        for d in seen.decisions
        if (mended := mends(d)) is not None
        and not impaired(d["stream"], d["rendition"], int(d.get("seq") or 0), mended)
    ]
    return {
        "findings": [
            {
                "kind": f.impairment.kind,
                "stream": f.impairment.stream,
                "rendition": f.impairment.rendition or "all",
                "from_seq": f.impairment.from_seq,
                "detected": f.found_by is not None,
                "found_by": f.found_by,
                "after_s": f.after_s,
                "diagnosed_as": f.diagnosed_as,
            }
            for f in findings
        ],
        "false_incidents": [
            f"{i['stream']} {i['kind']} seq {i['opened_seq']}" for i in false_incidents
        ],
        "false_alerts": [f"{a['segment_id']} {a['kind']}" for a in false_alerts],
        "misdirected_decisions": [
            f"{d['stream']}/{d['rendition']} {d['action']} seq {d.get('seq')}: {d.get('reason')}"
            for d in misdirected
        ],
        "verdicts": len(verdicts),
        "incidents": len(seen.incidents),
        "decisions": len(seen.decisions),
        "diagnoses": len(seen.diagnoses),
        "absent": [],
    }


def render_view(seen: Seen, started: float, duration: float) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"vqmon demo: {time.monotonic() - started:4.0f} / {duration:.0f} s")
    for col in ("stream", "rendition", "seq", "MOS", "mos_low", "flags", "mode", "open incidents"):
        table.add_column(col)
    with seen.lock:
        open_by: dict[str, list[str]] = {}
        for inc in seen.incidents.values():
            if inc["state"] != "resolved":
                open_by.setdefault(inc["stream"], []).append(f"{inc['kind']}@{inc['localisation']}")
        for (stream, rendition), v in sorted(seen.latest.items()):
            mos = v.get("mos")
            style = "red" if mos is not None and mos < 3 else ("yellow" if v["flags"] else "green")
            table.add_row(
                stream,
                rendition,
                str(v["seq"]),
                Text("-" if mos is None else f"{mos:.2f}", style=style),
                "-" if v.get("mos_low") is None else f"{v['mos_low']:.2f}",
                ", ".join(f["kind"] for f in v["flags"]) or "",
                v.get("mode", ""),
                ", ".join(open_by.get(stream, [])),
            )
        events = Text("\n".join(seen.events[-8:]) or "(no incidents, decisions or diagnoses yet)")
    return Group(table, events)


def print_table(result: dict[str, Any], out: Any) -> None:
    print("\ninjected impairment -> found by (media seconds from onset to the end of the first "
          "segment that showed it)", file=out)  # fmt: skip
    for f in result["findings"]:
        where = f"{f['stream']}/{f['rendition']}"
        found = f"{f['found_by']} after {f['after_s']:.0f} s" if f["detected"] else "NOT DETECTED"
        why = f"; diagnosed: {f['diagnosed_as']}" if f["diagnosed_as"] else "; not diagnosed"
        print(f"  {f['kind']:7s} {where:20s} from segment {f['from_seq']:3d}: {found}{why}",
              file=out)  # fmt: skip
    print(
        f"false alarms on clean segments: {len(result['false_incidents'])} incidents, "
        f"{len(result['false_alerts'])} alerts",
        file=out,
    )
    wrong = result["misdirected_decisions"]
    print(
        f"decisions that mend no fault on their stream (a bitrate raise for blur, black, "
        f"freeze, loss or clean segments; a filter for another fault): "
        f"{len(wrong)}" + "".join(f"\n  {w}" for w in wrong),
        file=out,
    )
    print(
        f"verdicts {result['verdicts']}, incidents {result['incidents']}, encoder decisions "
        f"{result['decisions']}, diagnoses {result['diagnoses']} (model 'rules': no VLM "
        "weights configured; point diagnose.backend at a local Qwen2.5-VL or Qwen3-VL "
        "folder or an OpenAI-compatible server for a reasoning model)",
        file=out,
    )


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="see the whole system work on one machine, with faults injected",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument(
        "--duration",
        type=float,
        default=90.0,
        metavar="SECONDS",
        help=f"seconds of media to play (default 90; at least {2 * min_rounds()}, so every "
        "injected fault is played)",
    )
    p.add_argument("--port", type=int, default=9464, help="/metrics port (0: any free port)")
    p.add_argument(
        "--report",
        type=Path,
        default=Path("vqmon-demo-report.html"),
        help="the HTML report of the run (default vqmon-demo-report.html)",
    )
    p.add_argument("--json", type=Path, help="write the findings as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from monitor.report import write_report
    from monitor.run import serve

    logs.setup("WARNING", "text")
    logging.getLogger("kafka").setLevel(logging.ERROR)  # the client's event-loop timing notes
    rounds = int(args.duration // 2)
    shortest = min_rounds()
    if rounds < shortest:
        print(
            f"vqmon demo: --duration {args.duration:g} is too short to play every fault it "
            f"injects; give at least {2 * shortest} s",
            file=sys.stderr,
        )
        return 2
    port = args.port or free_port()
    try:
        with socket.create_server(("127.0.0.1", port)):
            pass
    except OSError as exc:
        print(
            f"vqmon demo: cannot serve /metrics on 127.0.0.1:{port} "
            f"({os.strerror(exc.errno) if exc.errno else exc}); pass "
            "--port with a free port (0 picks one)",
            file=sys.stderr,
        )
        return 1
    tty = sys.stdout.isatty()
    try:
        broker = EmbeddedBroker().__enter__()
    except BrokerError as exc:
        print(f"vqmon demo: {exc}", file=sys.stderr)
        return 1
    try:
        config = demo_config(broker.bootstrap_servers, port, rounds)
        t = config.kafka.topics
        outputs = [t.verdicts, t.alerts, t.incidents, t.encoder_decisions, t.diagnoses]
        kafka_io.ensure_topics(config.kafka, [broker.bootstrap_servers], [t.segments, *outputs])
        seen, stop = Seen(), threading.Event()
        tailer = threading.Thread(
            target=tail,
            args=(broker.bootstrap_servers, outputs, config.kafka.partitions, seen, stop),
            daemon=True,
        )
        tailer.start()
        print(
            f"vqmon demo: broker {broker.bootstrap_servers}, metrics http://127.0.0.1:{port}/metrics,"
            f" {len(STREAMS)} streams x {len(RENDITIONS)} renditions, {args.duration:.0f} s",
            flush=True,
        )
        started = time.monotonic()
        view = _View(seen, started, args.duration, tty)
        view.start()
        # The demo is its rounds of media, however long a slow machine takes to encode and
        # screen them: it ends when every rendition's last segment has a verdict, or at a
        # bound (then what was not screened shows as not detected).
        done = threading.Event()
        bound_s = max(4 * args.duration, args.duration + 120)
        waiter = threading.Thread(
            target=_wait_for_round, args=(seen, rounds - 1, done), daemon=True
        )
        waiter.start()
        try:
            serve(config, role="all", duration_s=bound_s, stop=done)
        finally:
            view.stop()
        took = time.monotonic() - started
        if took > args.duration * 1.2:
            print(
                f"{rounds} rounds ({rounds * config.feed.segment_seconds:.0f} s of media) took "
                f"{took:.0f} s: this machine encodes and screens slower than real time",
                flush=True,
            )
        time.sleep(2.0)  # the last outputs reach the tailer
        stop.set()
        tailer.join(10)
        result = evaluate(seen, schedule(rounds), config.feed.segment_seconds)
        print_table(result, sys.stdout)
        out = write_report(seen.messages, args.report, title="vqmon demo")
        print(f"report: {out}")
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return 0
    finally:
        broker.__exit__(None, None, None)


def _wait_for_round(seen: Seen, last: int, done: threading.Event) -> None:
    """Set `done` once every stream x rendition has a verdict of segment `last`."""
    want = {(s, r) for s in STREAMS for r in RENDITIONS}
    while not done.wait(0.5):
        with seen.lock:
            latest = {k: int(v.get("seq", -1)) for k, v in seen.latest.items()}
        if all(latest.get(k, -1) >= last for k in want):
            done.set()


class _View:
    """The live terminal view (TTY), or plain log lines of the events (no TTY, CI)."""

    def __init__(self, seen: Seen, started: float, duration: float, tty: bool) -> None:
        self.seen, self.started, self.duration, self.tty = seen, started, duration, tty
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        if self.tty:
            from rich.live import Live

            with Live(
                render_view(self.seen, self.started, self.duration), refresh_per_second=2
            ) as live:
                while not self._stop.wait(0.5):
                    live.update(render_view(self.seen, self.started, self.duration))
            return
        printed = 0
        while not self._stop.wait(1.0):
            with self.seen.lock:
                new = self.seen.events[printed:]
                printed = len(self.seen.events)
            for line in new:
                print(f"[{time.monotonic() - self.started:5.1f} s] {line}", flush=True)
