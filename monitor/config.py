"""The root config: one YAML file, validated strictly; every section owned by its package."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError

from ingest.config import DecodeConfig, StrictModel
from ingest.hls import HlsSourceConfig
from ingest.kafka import KafkaConfig, KafkaSourceConfig
from monitor import yamlconf
from monitor.alertmanager import AlertmanagerConfig
from monitor.encoding import EncodingConfig
from monitor.escalation import EscalationConfig
from monitor.judge import JudgeConfig
from monitor.judge_role import JudgeRoleConfig
from monitor.sections import (
    DiagnoseRoleConfig,
    FeedConfig,
    HttpConfig,
    IngestConfig,
    LoggingConfig,
    OutputsConfig,
    PipelineConfig,
)
from scorers.artifacts import ArtifactsConfig
from scorers.backends import ScorerConfig
from scorers.distilled import DistilledConfig


class ConfigError(Exception):
    """A config file that cannot be used; the message lists each problem and how to fix it."""


class ScoreConfig(StrictModel):
    segment_duration_s: float = Field(
        2.0, gt=0, le=60, description="Long files are cut into segments of about this length."
    )


SourceConfig = Annotated[KafkaSourceConfig | HlsSourceConfig, Field(discriminator="type")]


def _default_scorers() -> list[ScorerConfig]:
    return [ArtifactsConfig(), DistilledConfig()]


class Config(StrictModel):
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    scorers: list[ScorerConfig] = Field(
        default_factory=_default_scorers,
        description="Screen-path scorers run on every segment, in order; verdicts are merged.",
    )
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    source: SourceConfig = Field(
        default_factory=KafkaSourceConfig,
        description="Where segments come from: 'kafka' (the segments topic) or 'hls' (poll "
        "HLS playlists over HTTP). Outputs go to the Kafka topics either way.",
    )
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    feed: FeedConfig = Field(default_factory=FeedConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    encoding: EncodingConfig = Field(default_factory=EncodingConfig)
    alertmanager: AlertmanagerConfig = Field(default_factory=AlertmanagerConfig)
    escalation: EscalationConfig = Field(
        default_factory=EscalationConfig,
        description="Screen role: which verdicts go to the diagnose role (triggers, audit "
        "sample, per-stream rate, global budget) and the frames they carry.",
    )
    diagnose: DiagnoseRoleConfig = Field(
        default_factory=DiagnoseRoleConfig,
        description="Diagnose role: the VLM backend ('rules' without weights) and its bounds.",
    )
    judge_role: JudgeRoleConfig = Field(default_factory=JudgeRoleConfig)


def load_config(path: Path | None, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a YAML config; no path means the built-in defaults.

    Environment variables VQMON_SECTION__KEY (e.g. VQMON_KAFKA__SASL_PASSWORD) override
    the file, so secrets need not be written in it. Errors name the YAML line.
    """
    text, name = "", "<defaults>"
    if path is not None:
        name = str(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    try:
        doc = yamlconf.load(text, name)
        doc.apply_env(os.environ if env is None else env, Config)
    except yamlconf.YamlError as exc:
        raise ConfigError(str(exc)) from exc
    try:
        return Config.model_validate(doc.data)
    except ValidationError as exc:
        raise ConfigError(doc.explain(exc, Config)) from exc
