"""The explicit list of scorer backends and the config union built from it."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from scorers import artifacts, distilled, registry

registry.register(
    registry.Backend(
        "artifacts",
        artifacts.ArtifactsConfig,
        artifacts.ArtifactScorer.from_config,
        "deterministic detectors: black, freeze, blockiness, blur, noise, banding, corruption",
    )
)

registry.register(
    registry.Backend(
        "distilled",
        distilled.DistilledConfig,
        distilled.DistilledScorer.from_config,
        "learned no-reference student (ONNX Runtime): per-frame MOS 1-5 and degradation type",
    )
)

ScorerConfig = Annotated[
    artifacts.ArtifactsConfig | distilled.DistilledConfig, Field(discriminator="type")
]
