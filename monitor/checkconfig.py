"""`vqmon check-config FILE`: validate a config (each error with its YAML line), print a summary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ingest import kafka as kafka_io
from ingest.hls import HlsSourceConfig
from monitor.config import Config, ConfigError, load_config
from scorers.chain import Chain
from scorers.types import ScorerError
from scorers.vlm.transformers_backend import TransformersConfig


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check-config",
        help="validate a config file",
        description="Validate FILE as `vqmon run` would (environment overrides included), "
        "and load what it names on this host (the scorers' models, the TLS files, the VLM "
        "folder); exit 0 when it is usable, 2 with one line per problem otherwise.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument(
        "--role",
        choices=("screen", "judge", "diagnose", "all"),
        default="all",
        help="check the files this role reads (screen: the scorers' models; diagnose: the "
        "VLM folder; every role: the TLS files); default all",
    )
    p.add_argument(
        "--no-files",
        action="store_true",
        help="check the config alone, not the files it names (on another host than the one "
        "that runs it)",
    )
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
    problems = [] if args.no_files else preflight(config, args.role)
    for line in problems:
        print(f"{args.file}: {line}", file=sys.stderr)
    if problems:
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
        f"{config.pipeline.decode_workers} decode workers; scorers: {scorers})",
        file=sys.stderr if args.show else sys.stdout,  # --show: stdout is the JSON alone
    )
    if args.show:
        print(config.model_dump_json(indent=2))
    return 0


def preflight(config: Config, role: str = "all") -> list[str]:
    """What `vqmon run --role ROLE` would stop on at start that the config's shape does
    not say: TLS files this host lacks, scorers whose models are missing or not models
    (each is built, as a screen worker builds it; screen role), a transformers VLM folder
    without its config (diagnose role). One config serves hosts of every role."""
    problems = kafka_io.missing_files(config.kafka)
    screens, diagnoses = role in ("screen", "all"), role in ("diagnose", "all")
    for i, scorer in enumerate(config.scorers if screens else ()):
        try:
            Chain.from_configs([scorer]).close()
        except (ScorerError, OSError, ValueError) as exc:
            problems.append(f"scorers.{i}: {exc}")
    backend = config.diagnose.backend
    folder = backend.model_path if isinstance(backend, TransformersConfig) and diagnoses else None
    if folder is not None and not (folder / "config.json").is_file():
        problems.append(
            f"diagnose.backend.model_path: {folder} has no config.json; point it at "
            "a local model folder (the weights, config, tokenizer and processor), or use the "
            "rules or openai backend"
        )
    return problems
