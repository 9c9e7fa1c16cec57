"""`vqmon run --config FILE [--role screen|judge|diagnose|all] [--duration S]`: the daemon."""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from kafka.errors import KafkaError, KafkaTimeoutError
from prometheus_client import CollectorRegistry, Counter

from ingest import kafka as kafka_io
from ingest.broker import BrokerError, EmbeddedBroker
from monitor import logs
from monitor.config import Config, ConfigError, load_config
from monitor.feed import DecisionSource, Feed, KafkaDecisionSource
from monitor.health import HealthGroup, HealthServer, HealthState, HealthView
from monitor.judge_role import JudgeDaemon
from monitor.metrics import Metrics
from monitor.pipeline import Daemon, DiagnoseDaemon, Summary
from monitor.sdnotify import Notifier
from monitor.workers import WorkerPoolFailed
from scorers.types import ScorerError
from scorers.vlm.types import VLMError

log = logging.getLogger("vqmon.run")

ROLES = ("screen", "judge", "diagnose", "all")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run the monitoring daemon",
        description="Consume segments from Kafka, screen every one, publish verdicts, alerts "
        "and dead letters; serve /metrics, /healthz and /readyz. Stops cleanly on SIGTERM.",
    )
    p.add_argument("--config", type=Path, help="YAML config (default: built-in defaults)")
    p.add_argument(
        "--role",
        choices=ROLES,
        default="screen",
        help="screen: score every segment, escalate anomalies; judge: incidents and encoder "
        "decisions from the verdicts; diagnose: VLM diagnosis of the escalations; all: the "
        "three in one process (one runtime and consumer group each, on their own threads)",
    )
    p.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="stop after this many seconds and print a summary (for trying it out)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"vqmon run: invalid config:\n{exc}", file=sys.stderr)
        return 2
    logs.setup(config.logging.level, config.logging.format)
    try:
        summary = serve(config, role=args.role, duration_s=args.duration)
    except (BrokerError, ScorerError, WorkerPoolFailed, VLMError, OSError) as exc:
        log.error("cannot run", extra={"error": str(exc)})
        print(f"vqmon run: {exc}", file=sys.stderr)
        return 1
    except KafkaError as exc:  # a running role rides out a broker that goes away
        log.error("kafka refused", extra={"error": str(exc)})
        print(f"vqmon run: {kafka_failure(exc, config)}", file=sys.stderr)
        return 1
    if args.duration is not None or (config.source.type == "hls" and args.role != "judge"):
        print(render_summary(summary, config), flush=True)
    return 0


def serve(
    config: Config,
    *,
    role: str = "screen",
    duration_s: float | None = None,
    registry: CollectorRegistry | None = None,
    notifier: Notifier | None = None,
    stop: threading.Event | None = None,
) -> Summary:
    """Start what the config asks for (embedded broker, feed, HTTP), run the role(s), stop
    after `duration_s`, on SIGTERM/SIGINT, or when `stop` is set (from another thread).

    `all` runs the screen role on the main thread and the judge and diagnose roles on
    threads of their own: one runtime and consumer group each, one process, one /metrics
    and a /healthz that is green only while every loop is. Threads rather than processes
    keep the embedded broker, the HTTP port and the signal handling single; the judge is
    light and the diagnose thread blocks in I/O or in native model code (which releases
    the GIL), so screening keeps its cores.
    """
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    registry = registry or CollectorRegistry()
    notifier = notifier or Notifier()
    metrics = Metrics(registry)
    names = ["screen", "judge", "diagnose"] if role == "all" else [role]
    states = {n: HealthState(config.http.stall_after_s) for n in names}
    view: HealthView = (
        states[names[0]] if len(names) == 1 else HealthGroup([(n, states[n]) for n in names])
    )
    with ExitStack() as stack:
        bootstrap = list(config.kafka.bootstrap_servers)
        embedded = config.kafka.use_embedded
        if embedded:
            broker = stack.enter_context(EmbeddedBroker())
            bootstrap = [broker.bootstrap_servers]
            log.info("embedded broker started", extra={"bootstrap": broker.bootstrap_servers})
        elif not bootstrap:
            raise BrokerError(
                "kafka.bootstrap_servers is empty and kafka.embedded is false; set one of them"
            )
        elif missing := kafka_io.missing_files(config.kafka):
            raise BrokerError("; ".join(missing))
        if config.http.enabled:
            try:
                server = HealthServer(config.http.host, config.http.port, registry, view)
            except OSError as exc:
                raise BrokerError(
                    f"cannot serve metrics on {config.http.host}:{config.http.port} "
                    f"({exc.strerror}); set http.port to a free port (0 picks one) or "
                    "http.enabled: false"
                ) from exc
            server.start()
            stack.callback(server.stop)
            log.info("http listening", extra={"address": "{}:{}".format(*server.address)})
        summary = Summary(time.time(), roles=tuple(names))

        def watchdog() -> None:
            if view.healthy()[0]:
                notifier.watchdog()

        daemons: list[Daemon | JudgeDaemon | DiagnoseDaemon] = []
        if "screen" in states:
            daemons.append(
                Daemon(
                    config,
                    bootstrap,
                    metrics,
                    states["screen"],
                    notify=notifier.status,
                    watchdog=watchdog,
                    summary=summary,
                )
            )
        if "judge" in states:
            daemons.append(
                JudgeDaemon(config, bootstrap, metrics, states["judge"], watchdog=watchdog)
            )
        if "diagnose" in states:
            daemons.append(
                DiagnoseDaemon(
                    config,
                    bootstrap,
                    metrics,
                    states["diagnose"],
                    watchdog=watchdog,
                    summary=summary,
                )
            )
        _install_signals(daemons)
        if stop is not None:
            threading.Thread(
                target=_stop_when_set, args=(stop, daemons), name="vqmon-stop", daemon=True
            ).start()
            stack.callback(stop.set)  # the thread ends with the roles
        kafka_source = config.source.type == "kafka"
        feed_on = config.feed.enabled is True or (
            config.feed.enabled == "auto" and embedded and kafka_source
        )
        if "screen" in states and feed_on:
            if config.kafka.create_topics:
                kafka_io.ensure_topics(config.kafka, bootstrap, [config.kafka.topics.segments])
            producer = kafka_io.make_producer(config.kafka, bootstrap)
            feed = Feed(
                config.feed,
                producer,
                config.kafka.topics.segments,
                decisions=feed_decisions(config, bootstrap),
            ).start()
            stack.callback(_stop_feed, feed, summary)
            log.info("synthetic feed publishing", extra={"topic": config.kafka.topics.segments})
        notifier.ready(", ".join(names))
        try:
            _run_roles(daemons, duration_s, summary)
        finally:
            notifier.stopping()
            summary.finished = summary.finished or time.time()
        if "judge" in states:
            summary.judge = {
                "incidents_opened": _total(metrics.incidents),
                "encoder_decisions": _total(metrics.decisions),
            }
        return summary


def _total(counter: Counter) -> int:
    """A labelled counter's total over its label sets."""
    return int(
        sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))
    )


def _run_roles(
    daemons: Sequence[Daemon | JudgeDaemon | DiagnoseDaemon],
    duration_s: float | None,
    summary: Summary,
) -> Summary:
    """The first role on this thread, the others on their own; whichever ends first (or
    fails) stops the others, and a failure is raised here."""
    failure: list[BaseException] = []
    first, others = daemons[0], daemons[1:]

    def role_main(daemon: Daemon | JudgeDaemon | DiagnoseDaemon) -> None:
        try:
            daemon.run(duration_s)
        except BaseException as exc:  # re-raised on the main thread
            failure.append(exc)
            log.error("a role failed; stopping", extra={"error": str(exc)[:500]})
            first.stop()

    threads = [
        threading.Thread(target=role_main, args=(d,), name=f"vqmon-{type(d).__name__}")
        for d in others
    ]
    for t in threads:
        t.start()
    try:
        first.run(duration_s)
    finally:
        for d in others:
            d.stop()
        for t in threads:
            t.join()
    if failure:
        raise failure[0]
    return summary


def feed_decisions(config: Config, bootstrap: Sequence[str]) -> DecisionSource | None:
    """The closed-loop feed's reader of vqmon.encoder-decisions (None when not closed_loop)."""
    if not config.feed.closed_loop:
        return None
    topic = config.kafka.topics.encoder_decisions
    if config.kafka.create_topics:
        compact = {"cleanup.policy": "compact"} if config.judge_role.compact_outputs else {}
        kafka_io.ensure_topics(config.kafka, bootstrap, [topic], {topic: compact})
    return KafkaDecisionSource(config.kafka, list(bootstrap), topic)


def kafka_failure(exc: KafkaError, config: Config) -> str:
    """What a Kafka error that stopped the start means, and what to check."""
    servers = ", ".join(config.kafka.bootstrap_servers) or "the embedded broker"
    # (NoBrokersAvailable: kafka-python 2.x; 3.x times out bootstrapping)
    if type(exc).__name__ == "NoBrokersAvailable" or (
        isinstance(exc, KafkaTimeoutError) and "bootstrap" in str(exc).lower()
    ):
        return (
            f"cannot reach the Kafka brokers ({servers}): {exc}; check "
            "kafka.bootstrap_servers, that the brokers are up and reachable from this host, "
            "and kafka.security_protocol with its sasl_* / ssl_* settings"
        )
    return (
        f"a request to the Kafka brokers ({servers}) failed: {type(exc).__name__}: {exc}; "
        "if it is creating topics that this client may not create (ACLs, "
        "kafka.replication_factor above the brokers), create them beforehand and set "
        "kafka.create_topics: false"
    )


def _stop_feed(feed: Feed, summary: Summary) -> None:
    try:
        feed.stop()
    except KafkaError as exc:  # its last records could not be flushed: the run is over
        log.warning("synthetic feed: unflushed at stop", extra={"error": str(exc)})
    summary.published = feed.published


def _stop_when_set(
    stop: threading.Event, daemons: Sequence[Daemon | JudgeDaemon | DiagnoseDaemon]
) -> None:
    stop.wait()
    for daemon in daemons:
        daemon.stop()


def _install_signals(daemons: Sequence[Daemon | JudgeDaemon | DiagnoseDaemon]) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("signal received: stopping", extra={"signal": signal.Signals(signum).name})
        for daemon in daemons:
            daemon.stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    # `kill -USR1 PID` writes every thread's stack to stderr: for a daemon that seems stuck.
    faulthandler.register(signal.SIGUSR1, all_threads=True)


def render_summary(summary: Summary, config: Config) -> str:
    s = summary.to_json()
    topics = config.kafka.topics
    dead = {k: v for k, v in s["results"].items() if k not in ("ok", "init")}
    if "screen" in summary.roles:
        lines = [
            f"vqmon: screened {s['screened']} segments of {s['streams']} streams "
            f"({s['renditions']} renditions) in {s['seconds']:.0f} s"
            + (f", mean MOS {s['mean_mos']:.2f} (1-5)" if s["mean_mos"] is not None else ""),
            "  flags: " + (", ".join(f"{k} x{v}" for k, v in sorted(s["flags"].items())) or "none"),
            "  dead letters: " + (", ".join(f"{k} x{v}" for k, v in dead.items()) or "none"),
            f"  verdicts on {topics.verdicts}, alerts on {topics.alerts}, "
            f"dead letters on {topics.dead_letter}",
        ]
    else:
        lines = [f"vqmon: ran the {', '.join(summary.roles)} role for {s['seconds']:.0f} s"]
    if s["escalations"] or s["escalations_dropped"]:
        lines.append(
            f"  escalated {sum(s['escalations'].values())} to {topics.escalations} "
            f"({', '.join(f'{k} x{v}' for k, v in sorted(s['escalations'].items())) or 'none'})"
            + (
                "; not sent: "
                + ", ".join(f"{k} x{v}" for k, v in sorted(s["escalations_dropped"].items()))
                if s["escalations_dropped"]
                else ""
            )
        )
    if "diagnose" in s:
        d = s["diagnose"]
        other = ", ".join(f"{k} x{v}" for k, v in sorted(d.items()) if k != "ok") or "none"
        lines.append(
            f"  diagnosed {d.get('ok', 0)} escalations to {topics.diagnoses}; "
            f"dropped or dead-lettered: {other}"
        )
    if "judge" in s:
        j = s["judge"]
        lines.append(
            f"  judged {topics.verdicts}: {j['incidents_opened']} incidents opened on "
            f"{topics.incidents}, {j['encoder_decisions']} encoder decisions on "
            f"{topics.encoder_decisions}"
        )
    if "published" in s:
        lines.insert(1, f"  synthetic feed published {s['published']} segments")
    if s["handed_back"]:
        lines.append(f"  {s['handed_back']} in-flight segments handed back uncommitted")
    lines.append("  summary: " + json.dumps(s))
    return "\n".join(lines)
