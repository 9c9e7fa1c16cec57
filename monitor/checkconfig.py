"""`vqmon check-config FILE`: validate a config (each error with its YAML line), print a summary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ingest.hls import HlsSourceConfig
from monitor.config import ConfigError, load_config


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check-config",
        help="validate a config file",
        description="Validate FILE as `vqmon run` would (environment overrides included); "
        "exit 0 when it is usable, 2 with one line per problem otherwise.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument(
        "--show", action="store_true", help="print the effective config (secrets masked) as JSON"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(f"{exc}", file=sys.stderr)
        return 2
    k = config.kafka
    broker = ", ".join(k.bootstrap_servers) or ("embedded Tansu" if k.embedded else "(none)")
    scorers = ", ".join(getattr(s, "type", "?") for s in config.scorers)
    source = config.source
    where = (
        f"HLS {', '.join(p.url for p in source.urls)}"
        if isinstance(source, HlsSourceConfig)
        else k.topics.segments
    )
    print(
        f"{args.file}: OK (brokers: {broker}; group {k.group_id}; input {where}; "
        f"{config.pipeline.decode_workers} decode workers; scorers: {scorers})"
    )
    if args.show:
        print(config.model_dump_json(indent=2))
    return 0
