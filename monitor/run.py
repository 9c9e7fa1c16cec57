"""`vqmon run --config FILE [--role screen|judge|diagnose|all] [--duration S]`: the daemon."""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from prometheus_client import CollectorRegistry

from ingest import kafka as kafka_io
from ingest.broker import BrokerError, EmbeddedBroker
from monitor import logs
from monitor.config import Config, ConfigError, load_config
from monitor.feed import DecisionSource, Feed, KafkaDecisionSource
from monitor.health import HealthGroup, HealthServer, HealthState
from monitor.judge_role import JudgeDaemon
from monitor.metrics import Metrics
from monitor.pipeline import Daemon, Summary
from monitor.sdnotify import Notifier
from monitor.workers import WorkerPoolFailed
from scorers.types import ScorerError

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
        help="screen: score every segment; judge: incidents and encoder decisions from the "
        "verdicts; diagnose: VLM diagnosis (not available yet); all: every role available",
    )
    p.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="stop after this many seconds and print a summary (for trying it out)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.role == "diagnose":
        print(
            "vqmon run: the diagnose role (VLM diagnosis of escalated segments) is not "
            "available yet; run --role screen or judge (or all, which runs both)",
            file=sys.stderr,
        )
        return 2
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"vqmon run: invalid config:\n{exc}", file=sys.stderr)
        return 2
    logs.setup(config.logging.level, config.logging.format)
    try:
        summary = serve(config, duration_s=args.duration, role=args.role)
    except (BrokerError, ScorerError, WorkerPoolFailed, OSError) as exc:
        log.error("cannot run", extra={"error": str(exc)})
        print(f"vqmon run: {exc}", file=sys.stderr)
        return 1
    if args.duration is not None and args.role != "judge":  # the judge screens nothing
        print(render_summary(summary, config), flush=True)
    return 0


def serve(
    config: Config,
    *,
    duration_s: float | None = None,
    registry: CollectorRegistry | None = None,
    notifier: Notifier | None = None,
    role: str = "screen",
) -> Summary:
    """Start what the config asks for (embedded broker, feed, HTTP), run the role(s), stop.

    `all` runs the screen role on this thread and the judge role on a second one, each
    on its own runtime and consumer group; /healthz and /readyz need both.
    """
    registry = registry or CollectorRegistry()
    notifier = notifier or Notifier()
    metrics = Metrics(registry)
    roles = ("screen", "judge") if role == "all" else (role,)
    parts = {r: HealthState(config.http.stall_after_s) for r in roles}
    health = parts[roles[0]] if len(parts) == 1 else HealthGroup(parts)
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
                server = HealthServer(config.http.host, config.http.port, registry, health)
            except OSError as exc:
                raise BrokerError(
                    f"cannot serve metrics on {config.http.host}:{config.http.port} "
                    f"({exc.strerror}); set http.port to a free port (0 picks one) or "
                    "http.enabled: false"
                ) from exc
            server.start()
            stack.callback(server.stop)
            log.info("http listening", extra={"address": "{}:{}".format(*server.address)})
        screen = judge = None
        if "screen" in parts:
            screen = Daemon(
                config,
                bootstrap,
                metrics,
                parts["screen"],
                notify=notifier.status,
                watchdog=notifier.watchdog,
            )
        if "judge" in parts:
            judge = JudgeDaemon(
                config,
                bootstrap,
                metrics,
                parts["judge"],
                watchdog=None if screen is not None else notifier.watchdog,
            )
        roles_run = Roles(screen, judge)
        _install_signals(roles_run)
        if config.feed.enabled is True or (config.feed.enabled == "auto" and embedded):
            if config.kafka.create_topics:
                kafka_io.ensure_topics(config.kafka, bootstrap, [config.kafka.topics.segments])
            producer = kafka_io.make_producer(config.kafka, bootstrap)
            feed = Feed(
                config.feed,
                producer,
                config.kafka.topics.segments,
                decisions=feed_decisions(config, bootstrap),
            ).start()
            stack.callback(_stop_feed, feed, roles_run.summary)
            log.info("synthetic feed publishing", extra={"topic": config.kafka.topics.segments})
        notifier.ready(", ".join(roles))
        try:
            return roles_run.run(duration_s)
        finally:
            notifier.stopping()


class Roles:
    """The roles one process runs: the first on this thread, the judge beside the screen."""

    def __init__(self, screen: Daemon | None, judge: JudgeDaemon | None) -> None:
        self.screen = screen
        self.judge = judge
        self.summary = screen.summary if screen is not None else Summary(0.0)
        self.failed: BaseException | None = None

    def stop(self) -> None:
        for d in (self.screen, self.judge):
            if d is not None:
                d.stop()

    def run(self, duration_s: float | None) -> Summary:
        if self.screen is None:
            assert self.judge is not None
            self.judge.run(duration_s)
            return self.summary
        if self.judge is None:
            return self.screen.run(duration_s)
        thread = threading.Thread(
            target=self._judge, args=(duration_s,), name="vqmon-judge", daemon=True
        )
        thread.start()
        try:
            return self.screen.run(duration_s)
        finally:
            self.judge.stop()
            thread.join(self.screen.config.pipeline.shutdown_timeout_s + 10)
            if self.failed is not None:
                raise self.failed

    def _judge(self, duration_s: float | None) -> None:
        assert self.judge is not None and self.screen is not None
        try:
            self.judge.run(duration_s)
        except BaseException as exc:  # the process stops: systemd restarts both roles
            log.exception("the judge role failed; stopping")
            self.failed = exc
            self.screen.stop()


def feed_decisions(config: Config, bootstrap: Sequence[str]) -> DecisionSource | None:
    """The closed-loop feed's reader of vqmon.encoder-decisions (None when not closed_loop)."""
    if not config.feed.closed_loop:
        return None
    topic = config.kafka.topics.encoder_decisions
    if config.kafka.create_topics:
        compact = {"cleanup.policy": "compact"} if config.judge_role.compact_outputs else {}
        kafka_io.ensure_topics(config.kafka, bootstrap, [topic], {topic: compact})
    return KafkaDecisionSource(config.kafka, list(bootstrap), topic)


def _stop_feed(feed: Feed, summary: Summary) -> None:
    feed.stop()
    summary.published = feed.published


def _install_signals(daemon: Roles) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("signal received: stopping", extra={"signal": signal.Signals(signum).name})
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
    if "published" in s:
        lines.insert(1, f"  synthetic feed published {s['published']} segments")
    if s["handed_back"]:
        lines.append(f"  {s['handed_back']} in-flight segments handed back uncommitted")
    lines.append("  summary: " + json.dumps(s))
    return "\n".join(lines)
