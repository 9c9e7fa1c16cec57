"""`vqmon run --config FILE [--role screen|diagnose|all] [--duration S]`: the daemon."""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import signal
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from prometheus_client import CollectorRegistry

from ingest import kafka as kafka_io
from ingest.broker import BrokerError, EmbeddedBroker
from monitor import logs
from monitor.config import Config, ConfigError, load_config
from monitor.feed import Feed
from monitor.health import HealthGroup, HealthServer, HealthState, HealthView
from monitor.metrics import Metrics
from monitor.pipeline import Daemon, DiagnoseDaemon, Summary
from monitor.sdnotify import Notifier
from monitor.workers import WorkerPoolFailed
from scorers.types import ScorerError
from scorers.vlm.types import VLMError

log = logging.getLogger("vqmon.run")

ROLES = ("screen", "diagnose", "all")


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
        help="screen: score every segment, escalate anomalies; diagnose: VLM diagnosis of "
        "the escalations (its own consumer group); all: both in one process (two runtimes "
        "on two threads)",
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
    if args.duration is not None or config.source.type == "hls":
        print(render_summary(summary, config), flush=True)
    return 0


def serve(
    config: Config,
    *,
    role: str = "screen",
    duration_s: float | None = None,
    registry: CollectorRegistry | None = None,
    notifier: Notifier | None = None,
) -> Summary:
    """Start what the config asks for (embedded broker, feed, HTTP), run the role(s), stop.

    `all` runs the screen role on the main thread and the diagnose role on a second one:
    two runtimes, two consumer groups, one process, one /metrics and a /healthz that is
    green only while both loops are. Threads rather than processes keep the embedded
    broker, the HTTP port and the signal handling single; the diagnose thread blocks in
    I/O or in native model code (which releases the GIL), so screening keeps its cores.
    """
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    registry = registry or CollectorRegistry()
    notifier = notifier or Notifier()
    metrics = Metrics(registry)
    screens, diagnoses = role in ("screen", "all"), role in ("diagnose", "all")
    health = HealthState(config.http.stall_after_s)
    diagnose_health = HealthState(config.http.stall_after_s)
    view: HealthView = (
        {"screen": health, "diagnose": diagnose_health}[role]
        if role != "all"
        else (HealthGroup([("screen", health), ("diagnose", diagnose_health)]))
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
        summary = Summary(time.time())

        def watchdog() -> None:
            if view.healthy()[0]:
                notifier.watchdog()

        daemons: list[Daemon | DiagnoseDaemon] = []
        if screens:
            daemons.append(
                Daemon(
                    config,
                    bootstrap,
                    metrics,
                    health,
                    notify=notifier.status,
                    watchdog=watchdog,
                    summary=summary,
                )
            )
        if diagnoses:
            daemons.append(
                DiagnoseDaemon(
                    config, bootstrap, metrics, diagnose_health, watchdog=watchdog, summary=summary
                )
            )
        _install_signals(daemons)
        kafka_source = config.source.type == "kafka"
        feed_on = config.feed.enabled is True or (
            config.feed.enabled == "auto" and embedded and kafka_source
        )
        if screens and feed_on:
            if config.kafka.create_topics:
                kafka_io.ensure_topics(config.kafka, bootstrap, [config.kafka.topics.segments])
            producer = kafka_io.make_producer(config.kafka, bootstrap)
            feed = Feed(config.feed, producer, config.kafka.topics.segments).start()
            stack.callback(_stop_feed, feed, summary)
            log.info("synthetic feed publishing", extra={"topic": config.kafka.topics.segments})
        notifier.ready(
            {"screen": "screening", "diagnose": "diagnosing"}.get(role, "screening and diagnosing")
        )
        try:
            if len(daemons) == 1:
                return daemons[0].run(duration_s)
            return _run_both(daemons[0], daemons[1], duration_s)
        finally:
            notifier.stopping()


def _run_both(
    screen: Daemon | DiagnoseDaemon, diagnose: Daemon | DiagnoseDaemon, duration_s: float | None
) -> Summary:
    """Screen on this thread, diagnose on another; whichever ends first stops the other."""
    failure: list[BaseException] = []

    def diagnose_main() -> None:
        try:
            diagnose.run(duration_s)
        except BaseException as exc:  # re-raised on the main thread
            failure.append(exc)
            log.error("the diagnose role failed; stopping", extra={"error": str(exc)[:500]})
            screen.stop()

    thread = threading.Thread(target=diagnose_main, name="vqmon-diagnose-role")
    thread.start()
    try:
        summary = screen.run(duration_s)
    finally:
        diagnose.stop()
        thread.join()
    if failure:
        raise failure[0]
    return summary


def _stop_feed(feed: Feed, summary: Summary) -> None:
    feed.stop()
    summary.published = feed.published


def _install_signals(daemons: list[Daemon | DiagnoseDaemon]) -> None:
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
    lines = [
        f"vqmon: screened {s['screened']} segments of {s['streams']} streams "
        f"({s['renditions']} renditions) in {s['seconds']:.0f} s"
        + (f", mean MOS {s['mean_mos']:.2f} (1-5)" if s["mean_mos"] is not None else ""),
        "  flags: " + (", ".join(f"{k} x{v}" for k, v in sorted(s["flags"].items())) or "none"),
        "  dead letters: " + (", ".join(f"{k} x{v}" for k, v in dead.items()) or "none"),
        f"  verdicts on {topics.verdicts}, alerts on {topics.alerts}, "
        f"dead letters on {topics.dead_letter}",
    ]
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
    if "published" in s:
        lines.insert(1, f"  synthetic feed published {s['published']} segments")
    if s["handed_back"]:
        lines.append(f"  {s['handed_back']} in-flight segments handed back uncommitted")
    lines.append("  summary: " + json.dumps(s))
    return "\n".join(lines)
