"""The explicit list of scorer backends and the config union built from it."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from scorers import artifacts, registry

registry.register(
    registry.Backend(
        "artifacts",
        artifacts.ArtifactsConfig,
        artifacts.ArtifactScorer.from_config,
        "deterministic detectors: black, freeze, blockiness, blur, noise, banding, corruption",
    )
)

ScorerConfig = Annotated[artifacts.ArtifactsConfig, Field(discriminator="type")]
