"""Messages of the diagnosis tier (EscalationRequest in, Diagnosis out) and the backend protocol."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Task = Literal["score", "degradation", "compare", "video"]
TASKS: tuple[Task, ...] = ("score", "degradation", "compare", "video")

REQUEST_SCHEMA = "vqmon.escalation/1"
DIAGNOSIS_SCHEMA = "vqmon.diagnosis/1"

MAX_FRAMES = 16
"""Most frames one request may carry (the video task's mosaic tiles them)."""
MAX_REQUEST_BYTES = 6 * 1024 * 1024
"""Hard bound on the JPEG bytes one request carries (frames + reference), before base64.

The builder (`scorers.vlm.request`) aims far lower (`FramesConfig.max_bytes`); this bound
is what `from_json` refuses, so a bad producer cannot make a diagnose worker decode
hundreds of megabytes. Kafka brokers need their message limit raised above ~1 MB for
requests this large.
"""
_JPEG_SOI = b"\xff\xd8"


class VLMError(Exception):
    """A backend that cannot answer (server down, timeout, model cannot load): says why."""

    reason = "vlm_error"


class VLMTimeout(VLMError):
    reason = "vlm_timeout"


class RequestError(ValueError):
    """An EscalationRequest that breaks the contract (too large, not JPEG, bad field)."""


@dataclass(frozen=True, slots=True)
class EscalationRequest:
    """What the diagnose role receives for one escalated segment (topic vqmon.escalations).

    `frames` are JPEG images of the segment's sampled frames in presentation order;
    `key_frame` indexes the one the single-picture tasks look at (the worst frame by the
    distilled scorer when it ran). `reference` is an optional JPEG of a known-good
    picture (the last good segment of the rendition, or a sibling rendition of this
    segment) for the comparison task, described by `reference_label`.
    """

    segment_id: str
    stream: str
    rendition: str
    seq: int
    verdict: dict[str, Any]
    """The verdict's JSON (scorers.types.Verdict.to_json)."""
    frames: tuple[bytes, ...]
    key_frame: int = 0
    frame_pts_s: tuple[float, ...] = ()
    reference: bytes | None = None
    reference_label: str | None = None
    reason: str = ""
    """Why the policy escalated it (monitor.escalation Decision.reason)."""
    created_at: float = 0.0
    """Unix seconds when the screen role made it."""

    def __post_init__(self) -> None:
        if not self.frames:
            raise RequestError(f"{self.segment_id}: an escalation request needs at least one frame")
        if len(self.frames) > MAX_FRAMES:
            raise RequestError(
                f"{self.segment_id}: {len(self.frames)} frames, at most {MAX_FRAMES} are accepted"
            )
        if not 0 <= self.key_frame < len(self.frames):
            raise RequestError(
                f"{self.segment_id}: key_frame {self.key_frame} is outside "
                f"0..{len(self.frames) - 1}"
            )
        if self.frame_pts_s and len(self.frame_pts_s) != len(self.frames):
            raise RequestError(f"{self.segment_id}: frame_pts_s must have one entry per frame")
        for i, img in enumerate((*self.frames, *([self.reference] if self.reference else []))):
            if not img.startswith(_JPEG_SOI):
                raise RequestError(f"{self.segment_id}: image {i} is not a JPEG")
        if self.image_bytes > MAX_REQUEST_BYTES:
            raise RequestError(
                f"{self.segment_id}: {self.image_bytes} bytes of images, over the "
                f"{MAX_REQUEST_BYTES}-byte bound; send fewer or smaller frames"
            )

    @property
    def image_bytes(self) -> int:
        return sum(map(len, self.frames)) + len(self.reference or b"")

    @property
    def flags(self) -> tuple[str, ...]:
        """Kinds of the detector flags in the verdict, in its order."""
        return tuple(str(f["kind"]) for f in self.verdict.get("flags", ()))

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": REQUEST_SCHEMA,
            "segment_id": self.segment_id,
            "stream": self.stream,
            "rendition": self.rendition,
            "seq": self.seq,
            "reason": self.reason,
            "verdict": self.verdict,
            "frames": [_b64(f) for f in self.frames],
            "key_frame": self.key_frame,
            "frame_pts_s": list(self.frame_pts_s),
            "reference": None if self.reference is None else _b64(self.reference),
            "reference_label": self.reference_label,
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EscalationRequest:
        """Inverse of to_json; raises RequestError on anything off-contract."""
        if data.get("schema") != REQUEST_SCHEMA:
            raise RequestError(f"schema {data.get('schema')!r} is not {REQUEST_SCHEMA!r}")
        try:
            frames = data["frames"]
            size = sum(len(f) for f in frames) * 3 // 4
            if size > MAX_REQUEST_BYTES * 1.01:
                raise RequestError(f"{size} bytes of images, over {MAX_REQUEST_BYTES}")
            ref = data.get("reference")
            ref_label = data.get("reference_label")
            return cls(
                segment_id=_text(data["segment_id"]),
                stream=_text(data["stream"]),
                rendition=_text(data["rendition"]),
                seq=int(data["seq"]),
                verdict=_checked_verdict(data["verdict"]),
                frames=tuple(base64.b64decode(f, validate=True) for f in frames),
                key_frame=int(data.get("key_frame", 0)),
                frame_pts_s=tuple(float(p) for p in data.get("frame_pts_s", ())),
                reference=None if ref is None else base64.b64decode(ref, validate=True),
                reference_label=None if ref_label is None else _text(ref_label),
                reason=_text(data.get("reason", "")),
                created_at=float(data.get("created_at", 0.0)),
            )
        except RequestError:
            raise
        except (KeyError, TypeError, ValueError, ArithmeticError) as e:
            raise RequestError(f"malformed escalation request: {type(e).__name__}: {e}") from e


def _checked_verdict(value: Any) -> dict[str, Any]:
    """The escalated verdict, with what the rules diagnosis and the prompts read from it in
    shape: flags with a text kind and a number severity, a head of numbers, mos_low."""
    verdict = dict(value)
    flags = verdict.get("flags", [])
    if not isinstance(flags, list) or not all(
        isinstance(f, dict) and isinstance(f.get("kind"), str) and _real(f.get("severity", 0.0))
        for f in flags
    ):
        raise ValueError("verdict flags must be objects with a kind and a number severity")
    for f in flags:
        _text(f["kind"])
    head = verdict.get("degradation") or {}
    if not isinstance(head, dict) or not all(_real(p) for p in head.values()):
        raise ValueError("verdict degradation must map classes to numbers")
    for key in ("mos", "mos_low"):
        if verdict.get(key) is not None and not _real(verdict[key], 100.0):
            raise ValueError(f"verdict {key} must be a number")
    frame_mos = verdict.get("frame_mos", [])
    if not isinstance(frame_mos, list) or not all(_real(m, 100.0) for m in frame_mos):
        raise ValueError("verdict frame_mos must be a list of numbers")
    extra = verdict.get("extra") or {}
    hybrid = extra.get("hybrid", {}) if isinstance(extra, dict) else None
    if not isinstance(hybrid, dict) or not all(_real(x) for x in hybrid.values()):
        raise ValueError("verdict extra.hybrid must map features to numbers")
    return verdict


def _real(value: Any, bound: float = 1e12) -> bool:
    """A number (bools count: hybrid's has_qp) within +-bound."""
    return isinstance(value, int | float) and abs(value) <= bound


def _text(value: Any) -> str:
    """Text a diagnosis carries back out: valid Unicode (JSON may escape lone surrogates)."""
    if not isinstance(value, str):
        raise TypeError(f"{value!r:.40} is not text")
    value.encode()  # UnicodeEncodeError is a ValueError
    return value


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


@dataclass(frozen=True, slots=True)
class TaskResult:
    """One task's K samples: the raw texts, each sample's parse outcome, and their aggregate.

    `parse_errors[i]` is None when sample i parsed, else the parser's reason. Aggregates
    are over the samples that parsed (None when none did); a parse failure never becomes a
    default score. Which aggregate fields are set depends on the task:
    score -> score_mean/score_spread; degradation -> degradation/severity;
    compare -> comparison; video -> global_*/local_*.
    """

    task: Task
    raw_texts: tuple[str, ...]
    parse_errors: tuple[str | None, ...]
    latency_s: float
    score_mean: float | None = None
    score_spread: float | None = None
    degradation: str | None = None
    severity: str | None = None
    comparison: str | None = None
    global_score: float | None = None
    global_spread: float | None = None
    local_score: float | None = None
    local_spread: float | None = None
    new_tokens: int | None = None

    @property
    def parsed(self) -> int:
        return sum(e is None for e in self.parse_errors)

    @property
    def parse_ok(self) -> bool:
        """Every sample parsed."""
        return self.parsed == len(self.parse_errors) > 0

    @property
    def parse_error(self) -> str | None:
        """The first failure's reason, or None."""
        return next((e for e in self.parse_errors if e is not None), None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task": self.task,
            "raw_texts": list(self.raw_texts),
            "parse_errors": list(self.parse_errors),
            "parse_ok": self.parse_ok,
            "latency_s": self.latency_s,
        }
        for name in _TASK_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskResult:
        task = data["task"]
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
        return cls(
            task=task,
            raw_texts=tuple(data["raw_texts"]),
            parse_errors=tuple(data["parse_errors"]),
            latency_s=float(data["latency_s"]),
            **{k: data[k] for k in _TASK_FIELDS if data.get(k) is not None},
        )


_TASK_FIELDS = (
    "score_mean",
    "score_spread",
    "degradation",
    "severity",
    "comparison",
    "global_score",
    "global_spread",
    "local_score",
    "local_spread",
    "new_tokens",
)


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """What the diagnosis tier concluded about one segment (topic vqmon.diagnoses).

    `model` is the model id ("rules" when no VLM ran) and `prompt_version` the prompt set
    (scorers.vlm.prompts.PROMPT_VERSION). One Diagnosis covers every configured task;
    `skipped` says why a configured task did not run (e.g. compare without a reference).
    """

    segment_id: str
    stream: str
    rendition: str
    seq: int
    model: str
    prompt_version: str
    asked_flags: tuple[str, ...]
    """Kinds of the detector flags in the escalated verdict."""
    tasks: tuple[TaskResult, ...]
    latency_s: float
    """Wall time of the diagnose call that produced it (shared by a batch's members)."""
    samples: int = 1
    tokens_per_s: float | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    escalation_reason: str = ""
    diagnosed_at: float = 0.0

    def task(self, name: Task) -> TaskResult | None:
        return next((t for t in self.tasks if t.task == name), None)

    @property
    def parse_ok(self) -> bool:
        return all(t.parse_ok for t in self.tasks)

    @property
    def score_mean(self) -> float | None:
        t = self.task("score")
        return None if t is None else t.score_mean

    @property
    def degradation(self) -> tuple[str | None, str | None]:
        """(class, severity) from the degradation task, or (None, None)."""
        t = self.task("degradation")
        return (None, None) if t is None else (t.degradation, t.severity)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": DIAGNOSIS_SCHEMA,
            "segment_id": self.segment_id,
            "stream": self.stream,
            "rendition": self.rendition,
            "seq": self.seq,
            "model": self.model,
            "prompt_version": self.prompt_version,
            "samples": self.samples,
            "asked_flags": list(self.asked_flags),
            "escalation_reason": self.escalation_reason,
            "parse_ok": self.parse_ok,
            "tasks": [t.to_json() for t in self.tasks],
            "skipped": dict(self.skipped),
            "latency_s": self.latency_s,
            "tokens_per_s": self.tokens_per_s,
            "diagnosed_at": self.diagnosed_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Diagnosis:
        if data.get("schema") != DIAGNOSIS_SCHEMA:
            raise ValueError(f"schema {data.get('schema')!r} is not {DIAGNOSIS_SCHEMA!r}")
        tps = data.get("tokens_per_s")
        return cls(
            segment_id=str(data["segment_id"]),
            stream=str(data["stream"]),
            rendition=str(data["rendition"]),
            seq=int(data["seq"]),
            model=str(data["model"]),
            prompt_version=str(data["prompt_version"]),
            asked_flags=tuple(data["asked_flags"]),
            tasks=tuple(TaskResult.from_json(t) for t in data["tasks"]),
            latency_s=float(data["latency_s"]),
            samples=int(data.get("samples", 1)),
            tokens_per_s=None if tps is None else float(tps),
            skipped=dict(data.get("skipped", {})),
            escalation_reason=str(data.get("escalation_reason", "")),
            diagnosed_at=float(data.get("diagnosed_at", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class Prompt:
    """One chat turn for a backend: JPEG images (shown before the text, in order) and text."""

    text: str
    images: tuple[bytes, ...] = ()
    system: str | None = None


@dataclass(frozen=True, slots=True)
class Generation:
    """A backend's K completions for one Prompt."""

    texts: tuple[str, ...]
    latency_s: float
    """Wall time of the generate call (or HTTP request) that produced them."""
    new_tokens: int | None = None
    """Tokens generated over all K texts, when the backend knows."""


class VLMBackend(Protocol):
    """A text-generating backend (transformers, openai). Thread-safe generate()."""

    @property
    def model_id(self) -> str: ...

    def generate(
        self, prompts: Sequence[Prompt], samples: int, temperature: float
    ) -> list[Generation]:
        """K = `samples` completions per prompt: greedy when samples == 1, else sampled at
        `temperature`. Raises VLMError when the backend cannot answer."""
        ...

    def close(self) -> None: ...
