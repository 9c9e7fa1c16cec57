"""Diagnoser: EscalationRequest(s) in, Diagnosis(es) out, through one configured backend.

The diagnose role's whole contract:

    diagnoser = Diagnoser.from_config(DiagnoseConfig(...))
    diagnoses = diagnoser.diagnose_batch([EscalationRequest.from_json(msg), ...])
    produce(d.segment_id, d.to_json()) for each

VLMError (server down, timeout) propagates: the caller drops and counts the request.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from scorers.vlm import parse, prompts
from scorers.vlm.config import DiagnoseConfig, build_backend
from scorers.vlm.images import mosaic, spread
from scorers.vlm.rules import RulesConfig, rules_diagnosis
from scorers.vlm.types import (
    Diagnosis,
    EscalationRequest,
    Generation,
    Prompt,
    Task,
    TaskResult,
    VLMBackend,
)


@dataclass(frozen=True, slots=True)
class _Job:
    request: int
    task: Task
    prompt: Prompt


class Diagnoser:
    def __init__(self, config: DiagnoseConfig, backend: VLMBackend | None = None) -> None:
        """`backend` overrides the one the config would build (e.g. one shared model)."""
        self.config = config
        self._rules = isinstance(config.backend, RulesConfig)
        if backend is None and not isinstance(config.backend, RulesConfig):
            backend = build_backend(config.backend)
        self.backend = backend

    @classmethod
    def from_config(cls, config: DiagnoseConfig) -> Diagnoser:
        return cls(config)

    @property
    def model_id(self) -> str:
        return "rules" if self.backend is None else self.backend.model_id

    def diagnose(self, request: EscalationRequest) -> Diagnosis:
        return self.diagnose_batch([request])[0]

    def diagnose_batch(self, requests: Sequence[EscalationRequest]) -> list[Diagnosis]:
        """One Diagnosis per request, in order; all their prompts go to the backend together."""
        tasks = tuple(self.config.tasks)
        if self.backend is None:
            assert isinstance(self.config.backend, RulesConfig)
            return [rules_diagnosis(r, tasks, self.config.backend) for r in requests]
        jobs: list[_Job] = []
        skipped: list[dict[str, str]] = [{} for _ in requests]
        for i, req in enumerate(requests):
            for task in tasks:
                prompt = self.prompt(req, task)
                if prompt is None:
                    skipped[i][task] = "the request carries no reference picture"
                else:
                    jobs.append(_Job(i, task, prompt))
        cfg = self.config
        t0 = time.perf_counter()
        gens = self.backend.generate([j.prompt for j in jobs], cfg.samples, cfg.temperature)
        wall = time.perf_counter() - t0
        per_request: list[list[tuple[_Job, Generation]]] = [[] for _ in requests]
        for job, gen in zip(jobs, gens, strict=True):
            per_request[job.request].append((job, gen))
        tokens = [g.new_tokens for g in gens]
        tps = sum(t for t in tokens if t) / wall if wall > 0 and all(tokens) else None
        return [
            Diagnosis(
                segment_id=req.segment_id,
                stream=req.stream,
                rendition=req.rendition,
                seq=req.seq,
                model=self.model_id,
                prompt_version=prompts.PROMPT_VERSION,
                asked_flags=req.flags,
                tasks=tuple(self.result(j.task, g) for j, g in per_request[i]),
                latency_s=wall,
                samples=cfg.samples,
                tokens_per_s=tps,
                skipped=skipped[i],
                escalation_reason=req.reason,
                diagnosed_at=time.time(),
            )
            for i, req in enumerate(requests)
        ]

    def prompt(self, req: EscalationRequest, task: Task) -> Prompt | None:
        """The prompt (text + images) of one task for one request; None when it cannot run."""
        cfg = self.config
        key = req.frames[req.key_frame]
        system = prompts.system_prompt(task, cfg.score_prompt)
        if task == "score":
            return Prompt(prompts.score_prompt(cfg.score_prompt, cfg.thinking), (key,), system)
        if task == "degradation":
            return Prompt(prompts.degradation_prompt(), (key,), system)
        if task == "compare":
            if req.reference is None:
                return None
            # Image A = this segment, Image B = the known-good reference
            return Prompt(prompts.comparison_prompt(), (key, req.reference), system)
        local = [req.frames[i] for i in spread(len(req.frames), cfg.local_frames)]
        picture = mosaic(req.frames, cfg.mosaic_side)
        return Prompt(prompts.video_prompt(cfg.thinking), (picture, *local), system)

    def result(self, task: Task, gen: Generation) -> TaskResult:
        """Parse each of the K texts and aggregate the ones that parsed."""
        parser = _PARSERS[task] if task != "score" else _SCORE_PARSERS[self.config.score_prompt]
        values = [parser(t) for t in gen.texts]
        errors = tuple(v.reason if isinstance(v, parse.ParseFailure) else None for v in values)
        ok = [v for v in values if not isinstance(v, parse.ParseFailure)]
        fields: dict[str, Any] = {}
        if ok and task == "score":
            fields["score_mean"], fields["score_spread"] = mean_spread(ok)
        elif ok and task == "degradation":
            cls = majority([a.distortion_class for a in ok])
            fields["degradation"] = cls
            fields["severity"] = majority([a.severity for a in ok if a.distortion_class == cls])
        elif ok and task == "compare":
            fields["comparison"] = majority(ok)
        elif ok and task == "video":
            fields["global_score"], fields["global_spread"] = mean_spread([g for g, _ in ok])
            fields["local_score"], fields["local_spread"] = mean_spread([loc for _, loc in ok])
        return TaskResult(
            task, gen.texts, errors, gen.latency_s, new_tokens=gen.new_tokens, **fields
        )

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()


def mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (0 for one value) of K parsed scores."""
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def majority(labels: Sequence[Any]) -> Any:
    """Most common label; ties go to the one seen first."""
    return Counter(labels).most_common(1)[0][0]


_PARSERS: dict[str, Callable[[str], Any]] = {
    "degradation": parse.parse_degradation,
    "compare": parse.parse_comparison,
    "video": parse.parse_video,
}
_SCORE_PARSERS: dict[str, Callable[[str], Any]] = {
    "visualquality-r1": parse.parse_score,
    "q-insight": parse.parse_rating,
}
