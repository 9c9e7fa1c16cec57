"""The root config: one YAML file, validated strictly; every section owned by its package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from ingest.config import DecodeConfig, StrictModel
from scorers.artifacts import ArtifactsConfig
from scorers.backends import ScorerConfig


class ConfigError(Exception):
    """A config file that cannot be used; the message lists each problem and how to fix it."""


class ScoreConfig(StrictModel):
    segment_duration_s: float = Field(
        2.0, gt=0, le=60, description="Long files are cut into segments of about this length."
    )


def _default_scorers() -> list[ScorerConfig]:
    return [ArtifactsConfig()]


class Config(StrictModel):
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    scorers: list[ScorerConfig] = Field(
        default_factory=_default_scorers,
        description="Screen-path scorers run on every segment, in order; verdicts are merged.",
    )
    score: ScoreConfig = Field(default_factory=ScoreConfig)


def load_config(path: Path | None) -> Config:
    """Read and validate a YAML config; no path means the built-in defaults."""
    if path is None:
        return Config()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    try:
        raw: Any = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{path}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from exc
