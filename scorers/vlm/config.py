"""The diagnose config: which backend (a union discriminated on `type`) and which tasks."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field, model_validator

from ingest.config import StrictModel
from scorers.vlm.openai_backend import OpenAIBackend, OpenAIConfig
from scorers.vlm.prompts import ScorePrompt
from scorers.vlm.rules import RulesConfig
from scorers.vlm.transformers_backend import TransformersBackend, TransformersConfig
from scorers.vlm.types import Task, VLMBackend, VLMError

BackendConfig = Annotated[
    TransformersConfig | OpenAIConfig | RulesConfig, Field(discriminator="type")
]

BUILDERS: dict[str, Callable[[Any], VLMBackend]] = {
    "transformers": TransformersBackend.from_config,
    "openai": OpenAIBackend.from_config,
}
"""Text-generating backends by `type`; `rules` needs no backend object."""


def build_backend(config: TransformersConfig | OpenAIConfig) -> VLMBackend:
    try:
        return BUILDERS[config.type](config)
    except KeyError:
        close = difflib.get_close_matches(config.type, BUILDERS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise VLMError(f"unknown VLM backend {config.type!r}.{hint}") from None


def _default_tasks() -> list[Task]:
    return ["score", "degradation"]


class DiagnoseConfig(StrictModel):
    backend: BackendConfig = Field(
        default_factory=RulesConfig,
        description="Who diagnoses: 'transformers' (local weights), 'openai' (a server), or "
        "'rules' (no weights: detector flags and the distilled head; the default).",
    )
    tasks: list[Task] = Field(
        default_factory=_default_tasks,
        description="Tasks run per escalation: score (1-5), degradation (class + severity), "
        "compare (against the request's reference picture, skipped without one), video "
        "(PreResQ-R1 global mosaic + local frames).",
    )
    samples: int = Field(
        1,
        ge=1,
        le=16,
        description="K completions per task: 1 is greedy (deterministic); K > 1 samples at "
        "`temperature` and reports the mean and spread (VisualQuality-R1 trains with K=6).",
    )
    temperature: float = Field(
        1.0, gt=0, le=2, description="Sampling temperature, used only when samples > 1."
    )
    thinking: bool = Field(
        False,
        description="Ask for <think> reasoning before the answer (slower, more tokens). "
        "Non-thinking is VisualQuality-R1's recommendation for an evaluator.",
    )
    score_prompt: ScorePrompt = Field(
        "visualquality-r1",
        description="Score task wording: 'visualquality-r1' (<answer>x</answer>) or 'q-insight' "
        '(<answer>{"rating": x}</answer>); match the weights.',
    )
    local_frames: int = Field(
        3, ge=1, le=8, description="Local frames shown after the mosaic in the video task."
    )
    mosaic_side: int = Field(
        896, ge=128, le=4096, description="Longer side of the video task's mosaic, in pixels."
    )

    @model_validator(mode="after")
    def _tasks_unique(self) -> DiagnoseConfig:
        if not self.tasks:
            raise ValueError("tasks is empty: name at least one of score, degradation, ...")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks {self.tasks} lists a task twice")
        return self
