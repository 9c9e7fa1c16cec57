"""Output messages (verdicts, alerts, dead letters, escalations, diagnoses): pure builders
and models that parse back.

The JSON shapes are documented in docs/topics.md. Builders are pure functions of what
the screen role knows about a segment; the pydantic models (`VerdictRecord`,
`AlertRecord`, `DeadLetterRecord`) read the messages back for the judge, the report and
tests. Sending them is monitor.publisher's job.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any, Self

from pydantic import BaseModel, ConfigDict

from ingest.types import StreamInfo
from monitor.publisher import OutMessage
from monitor.sections import AlertsConfig
from monitor.types import EncoderDecision, Incident
from scorers.types import Verdict
from scorers.vlm.types import Diagnosis, EscalationRequest

VERDICT_SCHEMA = "vqmon.verdict/1"
ALERT_SCHEMA = "vqmon.alert/1"
DEAD_LETTER_SCHEMA = "vqmon.dead-letter/1"
JSON_HEADERS = (("content-type", b"application/json"),)

# What a dead letter copies of the original record is capped well below the 1 MB
# message limit most clusters keep: headers together at most this, each header value
# at most HEADER_VALUE_BYTES.
DEAD_LETTER_HEADER_BYTES = 16 * 1024
HEADER_VALUE_BYTES = 1024


@dataclass(frozen=True, slots=True)
class Source:
    """Where a consumed record came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(finite(obj), separators=(",", ":"), allow_nan=False).encode()


def finite(obj: Any) -> Any:
    """JSON has no NaN/Infinity: map them to null."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


@dataclass(frozen=True, slots=True)
class SegmentFacts:
    """What the outputs say about a screened segment besides the verdict."""

    info: StreamInfo
    declared_bitrate: int | None
    decode_errors: int
    corrupt_frames: int
    decode_seconds: float
    decode_messages: tuple[str, ...] = ()
    suspicion: tuple[str, ...] = ()


def verdict_value(
    verdict: Verdict, facts: SegmentFacts, source: Source, escalated: bool | None = None
) -> dict[str, Any]:
    """The vqmon.verdict/1 value; `escalated` (the screen role's escalation policy sent
    this segment to the diagnose role) is left out when no policy runs."""
    return {
        "schema": VERDICT_SCHEMA,
        **verdict.to_json(),
        "stream_info": dataclasses.asdict(facts.info),
        "declared_bitrate": facts.declared_bitrate,
        "decode": {
            "errors": facts.decode_errors,
            "corrupt_frames": facts.corrupt_frames,
            "seconds": round(facts.decode_seconds, 4),
            "messages": list(facts.decode_messages),
        },
        **({"suspicion": list(facts.suspicion)} if facts.suspicion else {}),
        "source": source.to_json(),
        "screened_at": round(time.time(), 3),
        **({} if escalated is None else {"escalated": escalated}),
    }


def verdict_message(
    topic: str,
    verdict: Verdict,
    facts: SegmentFacts,
    source: Source,
    escalated: bool | None = None,
) -> OutMessage:
    headers = (
        *JSON_HEADERS,
        ("stream", verdict.stream.encode()),
        ("rendition", verdict.rendition.encode()),
    )
    return OutMessage(
        topic,
        verdict.segment_id.encode(),
        dumps(verdict_value(verdict, facts, source, escalated)),
        headers,
        partition_key=verdict.stream.encode(),
    )


def alert_messages(topic: str, verdict: Verdict, cfg: AlertsConfig) -> list[OutMessage]:
    """One alert per flag at or above the severity threshold (and for a low MOS if set)."""
    if not cfg.enabled:
        return []
    base = {
        "schema": ALERT_SCHEMA,
        "segment_id": verdict.segment_id,
        "stream": verdict.stream,
        "rendition": verdict.rendition,
        "seq": verdict.seq,
        "mos": None if verdict.mos is None else round(verdict.mos, 4),
        "scorers": list(verdict.scorers),
    }
    out = []
    for flag in verdict.flags:
        if flag.severity >= cfg.min_severity:
            body = {**base, "kind": flag.kind, **flag.to_json()}
            out.append(_alert(topic, verdict, flag.kind, body))
    if cfg.mos_below is not None and verdict.mos is not None and verdict.mos < cfg.mos_below:
        severity = min(1.0, (cfg.mos_below - verdict.mos) / max(cfg.mos_below - 1.0, 1e-6))
        body = {
            **base,
            "kind": "low_mos",
            "severity": round(severity, 4),
            "start_s": 0.0,
            "duration_s": None,
            "evidence": {"mos_below": cfg.mos_below},
        }
        out.append(_alert(topic, verdict, "low_mos", body))
    return out


def escalation_message(topic: str, request: EscalationRequest) -> OutMessage:
    """vqmon.escalations, keyed by segment id (scorers.vlm.types.EscalationRequest.to_json)."""
    headers = (
        *JSON_HEADERS,
        ("stream", request.stream.encode()),
        ("rendition", request.rendition.encode()),
    )
    return OutMessage(topic, request.segment_id.encode(), dumps(request.to_json()), headers)


def diagnosis_message(topic: str, diagnosis: Diagnosis) -> OutMessage:
    """vqmon.diagnoses, keyed by segment id (scorers.vlm.types.Diagnosis.to_json)."""
    headers = (
        *JSON_HEADERS,
        ("stream", diagnosis.stream.encode()),
        ("rendition", diagnosis.rendition.encode()),
    )
    return OutMessage(topic, diagnosis.segment_id.encode(), dumps(diagnosis.to_json()), headers)


def _alert(topic: str, verdict: Verdict, kind: str, body: dict[str, Any]) -> OutMessage:
    return OutMessage(topic, f"{verdict.segment_id}/{kind}".encode(), dumps(body), JSON_HEADERS)


def incident_message(topic: str, incident: Incident) -> OutMessage:
    """One incident event (vqmon.incident/1); key = incident id, so compaction keeps the
    latest event of each incident (what a restarted judge restores)."""
    headers = (*JSON_HEADERS, ("stream", incident.stream.encode()))
    return OutMessage(topic, incident.id.encode(), dumps(incident.to_json()), headers)


def decision_message(topic: str, decision: EncoderDecision) -> OutMessage:
    """One encoder decision (vqmon.encoder-decision/1); key = stream/rendition, so the
    compacted topic holds each rung's latest desired settings."""
    headers = (
        *JSON_HEADERS,
        ("stream", decision.stream.encode()),
        ("rendition", decision.rendition.encode()),
    )
    return OutMessage(topic, decision.key.encode(), dumps(decision.to_json()), headers)


def dead_letter_message(
    topic: str,
    *,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes | None]] | tuple[tuple[str, bytes | None], ...] | None,
    source: Source,
    reason: str,
    error: str,
    max_value_bytes: int,
) -> OutMessage:
    """The original record (value base64 up to `max_value_bytes`, capped headers) with the
    reason code and the error text; its fallback, sent if the broker refuses it for good,
    keeps only the reason, the error and where the record was."""
    raw = value or b""
    kept = raw[:max_value_bytes]
    body: dict[str, Any] = {
        "schema": DEAD_LETTER_SCHEMA,
        "reason": reason,
        "error": error[:2000],
        "source": source.to_json(),
        "key": None if key is None else base64.b64encode(key[:HEADER_VALUE_BYTES]).decode(),
        "value_bytes": len(raw),
        "failed_at": round(time.time(), 3),
    }
    out_headers = (*JSON_HEADERS, ("vqmon-reason", reason.encode()))
    by_stream = stream_key(key, headers)
    reduced = OutMessage(
        topic,
        (key or b"")[:HEADER_VALUE_BYTES],
        dumps({**body, "reduced": True}),
        out_headers,
        partition_key=by_stream,
    )
    full = {
        **body,
        "headers": _capped_headers(headers),
        "value": base64.b64encode(kept).decode(),
        "value_truncated": len(kept) < len(raw),
    }
    return OutMessage(
        topic,
        (key or b"")[:HEADER_VALUE_BYTES],
        dumps(full),
        out_headers,
        fallback=reduced,
        partition_key=by_stream,
    )


def stream_key(
    key: bytes | None,
    headers: list[tuple[str, bytes | None]] | tuple[tuple[str, bytes | None], ...] | None,
) -> bytes | None:
    """The stream a segment record belongs to (its `stream` header, else the key's first
    half): outputs about a segment are partitioned by it, so one judge sees a whole stream."""
    for name, value in headers or ():
        if name.lower() == "stream" and value:
            return value[:HEADER_VALUE_BYTES]
    if key and b"/" in key:
        return key.split(b"/", 1)[0][:HEADER_VALUE_BYTES]
    return None


def _capped_headers(
    headers: list[tuple[str, bytes | None]] | tuple[tuple[str, bytes | None], ...] | None,
) -> list[list[str | None]]:
    out: list[list[str | None]] = []
    budget = DEAD_LETTER_HEADER_BYTES
    for k, v in headers or []:
        name = str(k)[:200]
        data = None if v is None else v[:HEADER_VALUE_BYTES]
        cost = len(name) + (len(data) if data else 0)
        if cost > budget:
            break
        budget -= cost
        out.append([name, None if data is None else base64.b64encode(data).decode()])
    return out


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")

    @classmethod
    def parse(cls, value: bytes) -> Self:
        """Read a message value back; its "schema" field lands in `schema_`."""
        obj = json.loads(value)
        obj["schema_"] = obj.pop("schema", None)
        return cls.model_validate(obj)


class FlagRecord(_Record):
    kind: str
    severity: float
    start_s: float
    duration_s: float | None
    evidence: dict[str, float | None] = {}


class DecodeRecord(_Record):
    errors: int
    corrupt_frames: int
    seconds: float
    messages: list[str] = []


class SourceRecord(_Record):
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None


class VerdictRecord(_Record):
    """A verdict message as read back from vqmon.verdicts."""

    schema_: str
    segment_id: str
    stream: str
    rendition: str
    seq: int
    mos: float | None
    mos_low: float | None
    frame_mos: list[float | None]
    flags: list[FlagRecord]
    scorers: list[str]
    mode: str = "full"
    degradation_class: str | None = None
    degradation: dict[str, float] = {}
    stream_info: dict[str, Any]
    declared_bitrate: int | None
    decode: DecodeRecord
    source: SourceRecord
    screened_at: float


class AlertRecord(_Record):
    schema_: str
    segment_id: str
    stream: str
    rendition: str
    seq: int
    kind: str
    severity: float
    mos: float | None
    duration_s: float | None


class DeadLetterRecord(_Record):
    schema_: str
    reason: str
    error: str
    source: SourceRecord
    key: str | None
    value_bytes: int
    reduced: bool = False
    headers: list[list[str | None]] = []
    value: str = ""
    value_truncated: bool = False

    def original_value(self) -> bytes:
        return base64.b64decode(self.value)
