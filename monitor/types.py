"""The messages monitor makes: Incident and EncoderDecision, and the Observation it reads.

- `Observation`: what the judge needs from one verdict message (vqmon.verdict/1 JSON,
  docs/topics.md), or from a dead letter (an undecodable segment is evidence too).
- `Incident`: an open / update / resolved event on vqmon.incidents (key: incident id).
- `EncoderDecision`: a versioned instruction on vqmon.encoder-decisions (key:
  `<stream>/<rendition>`), carrying the settings it leads to, its evidence and incident.

Everything here is plain data with `to_json` / `from_json` that round-trip; no Kafka.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast, get_args

from ingest.contract import MAX_BITRATE
from scorers.types import Flag, Verdict, finite_number

INCIDENT_SCHEMA = "vqmon.incident/1"
DECISION_SCHEMA = "vqmon.encoder-decision/1"
VERDICT_SCHEMA = "vqmon.verdict/1"
DEAD_LETTER_SCHEMA = "vqmon.dead-letter/1"

IncidentState = Literal["open", "update", "resolved"]
Localisation = Literal["source", "rendition", "packaging"]
IncidentKind = Literal[
    "starvation",
    "black",
    "freeze",
    "corruption",
    "blur",
    "noise",
    "blocking",
    "banding",
    "ladder_inversion",
]
INCIDENT_KINDS: tuple[str, ...] = get_args(IncidentKind)
LOCALISATIONS: tuple[str, ...] = get_args(Localisation)
STREAM_SCOPE = "*"
"""The scope of an incident that concerns every rendition of a stream (source, packaging)."""

# scorers' flag kind -> incident kind ("blockiness" is a measure; the incident is "blocking").
FLAG_TO_KIND: dict[str, str] = {
    "black": "black",
    "freeze": "freeze",
    "blockiness": "blocking",
    "blur": "blur",
    "noise": "noise",
    "banding": "banding",
    "corruption": "corruption",
}

Action = Literal["raise_bitrate", "lower_bitrate", "set_preset", "enable_filter", "drop_rung"]
ACTIONS: tuple[str, ...] = get_args(Action)
ACTION_NEEDS = {
    "raise_bitrate": "to_bitrate",
    "lower_bitrate": "to_bitrate",
    "set_preset": "to_preset",
    "enable_filter": "filter",
}
"""The parameter each action cannot do without."""
FilterName = Literal["denoise", "deblock"]
FILTERS: tuple[str, ...] = get_args(FilterName)


class MessageError(ValueError):
    """A message that does not have the documented shape; says which field is wrong."""


def _get(doc: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    if key not in doc:
        raise MessageError(f"{what}: missing field {key!r}")
    value = doc[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
        raise MessageError(f"{what}: field {key!r} has the wrong type ({type(value).__name__})")
    if isinstance(value, str):
        _check_text(value, key, what)
    return value


def _check_text(value: str, key: str, what: str) -> None:
    """JSON may escape lone surrogates ("\\ud800"), which no UTF-8 output can carry."""
    try:
        value.encode()
    except UnicodeEncodeError:
        raise MessageError(f"{what}: field {key!r} is not valid Unicode text") from None


def _opt_text(doc: Mapping[str, Any], key: str, what: str) -> str | None:
    return None if doc.get(key) is None else _get(doc, key, str, what)


def _texts(doc: Mapping[str, Any], key: str, what: str) -> tuple[str, ...]:
    """An optional list of text (renditions, segment ids)."""
    value = doc.get(key) or []
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise MessageError(f"{what}: field {key!r} must be a list of text")
    for x in value:
        _check_text(x, key, what)
    return tuple(value)


MAX_TIME_S = 1e11
"""Unix seconds beyond this (the year 5138) are not a time a message can carry."""
MAX_NESTING = 32
"""Evidence and diagnoses nested deeper than this are refused (they are re-published)."""


def _opt_time(doc: Mapping[str, Any], key: str, what: str) -> float | None:
    """A Unix time in seconds within 0-MAX_TIME_S."""
    value = _opt_float(doc, key, what)
    if value is not None and not 0 <= value <= MAX_TIME_S:
        raise MessageError(f"{what}: field {key!r} ({value:g}) is not a Unix time")
    return value


def _required(
    read: Callable[[Mapping[str, Any], str, str], float | None],
    doc: Mapping[str, Any],
    key: str,
    what: str,
) -> float:
    """A field that must be there, read by an optional reader (_opt_float, _opt_time)."""
    _get(doc, key, (int, float), what)
    value = read(doc, key, what)
    assert value is not None
    return value


def _opt_bitrate(doc: Mapping[str, Any], key: str, what: str) -> int | None:
    """Bit/s, 0 to MAX_BITRATE (a decision's)."""
    value = _opt_int(doc, key, what)
    if value is not None and not 0 <= value <= MAX_BITRATE:
        raise MessageError(f"{what}: field {key!r} ({value}) is not a bitrate in bit/s")
    return value


def _header_bitrate(doc: Mapping[str, Any], key: str, what: str) -> int | None:
    """A verdict's bitrate: what a producer's header said or the segment measured. Out of
    1 to MAX_BITRATE (a producer's -1 for "unknown", a header in the wrong unit) it is
    not known, and the verdict is judged without it rather than refused."""
    value = _opt_float(doc, key, what)  # not a finite number at all: refused
    return int(value) if value is not None and 1 <= value <= MAX_BITRATE else None


def _json_object(doc: Mapping[str, Any], key: str, what: str) -> dict[str, Any]:
    """An optional object field (evidence, a diagnosis) of bounded nesting: re-published."""
    value = doc.get(key) or {}
    if not isinstance(value, Mapping):
        raise MessageError(f"{what}: field {key!r} must be an object")
    level: list[Any] = [value]
    depth = 0
    while level:
        depth += 1
        if depth > MAX_NESTING:
            raise MessageError(f"{what}: field {key!r} is nested over {MAX_NESTING} deep")
        inner = [v for x in level for v in (x.values() if isinstance(x, Mapping) else x)]
        level = [v for v in inner if isinstance(v, Mapping | list | tuple)]
    return dict(value)


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _opt_float(doc: Mapping[str, Any], key: str, what: str) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    problem = MessageError(f"{what}: field {key!r} must be a finite number or null")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise problem
    try:
        number = float(value)  # an integer of hundreds of digits overflows
    except OverflowError:
        raise problem from None
    if not math.isfinite(number):
        # JSON parsers accept NaN and Infinity; vqmon never writes them (allow_nan=False)
        raise problem
    return number


def _opt_int(doc: Mapping[str, Any], key: str, what: str) -> int | None:
    value = _opt_float(doc, key, what)
    return None if value is None else int(value)


def _check_schema(doc: Mapping[str, Any], expected: str, what: str) -> None:
    if not isinstance(doc, Mapping):
        raise MessageError(f"{what}: the value is not a JSON object")
    schema = doc.get("schema", expected)
    if schema != expected:
        raise MessageError(f"{what}: schema {schema!r} is not {expected!r}")


def _verdict_head(doc: Mapping[str, Any], what: str) -> dict[str, Any]:
    """The fields every reader of a verdict takes: ids and scores."""
    return {
        "segment_id": _get(doc, "segment_id", str, what),
        "stream": _get(doc, "stream", str, what),
        "rendition": _get(doc, "rendition", str, what),
        "seq": _get(doc, "seq", int, what),
        "mos": _opt_float(doc, "mos", what),
        "mos_low": _opt_float(doc, "mos_low", what),
    }


def _flag_docs(doc: Mapping[str, Any], what: str) -> list[Mapping[str, Any]]:
    raw = doc.get("flags") or ()
    if not all(isinstance(f, Mapping) for f in raw):
        raise MessageError(f"{what}: every flag must be an object")
    return list(raw)


def verdict_from_json(doc: Mapping[str, Any]) -> Verdict:
    """The scorers' Verdict back from a vqmon.verdict/1 value (what the screen role
    published); raises MessageError if malformed. Evidence that is not a number is left out."""
    what = "verdict"
    _check_schema(doc, VERDICT_SCHEMA, what)
    flags = []
    for raw in _flag_docs(doc, what):
        evidence = raw.get("evidence") or {}
        if not isinstance(evidence, Mapping):
            raise MessageError(f"{what}: flag evidence must be an object")
        flags.append(
            Flag(
                _get(raw, "kind", str, "verdict flag"),
                _opt_float(raw, "severity", what) or 0.0,
                _opt_float(raw, "start_s", what) or 0.0,
                _opt_float(raw, "duration_s", what) or 0.0,
                {k: float(x) for k, x in evidence.items() if _number(x)},
            )
        )
    degradation = doc.get("degradation") or {}
    extra = doc.get("extra") or {}
    frame_mos = doc.get("frame_mos") or []
    scorers = doc.get("scorers") or []
    if not isinstance(degradation, Mapping) or not all(_number(x) for x in degradation.values()):
        raise MessageError(f"{what}: degradation must map classes to numbers")
    if not isinstance(extra, Mapping):
        raise MessageError(f"{what}: extra must be an object")
    if not isinstance(frame_mos, list) or not all(_number(x) for x in frame_mos):
        raise MessageError(f"{what}: frame_mos must be a list of numbers")
    if not isinstance(scorers, list):
        raise MessageError(f"{what}: scorers must be a list")
    return Verdict(
        **_verdict_head(doc, what),
        frame_mos=tuple(float(x) for x in frame_mos),
        flags=tuple(flags),
        scorers=tuple(str(x) for x in scorers),
        extra=dict(extra),
        degradation={str(k): float(x) for k, x in degradation.items()},
        mode=str(doc.get("mode") or "full"),
    )


def _number(x: object) -> bool:
    return finite_number(x) is not None


@dataclass(frozen=True, slots=True)
class FlagObs:
    """A flag as the judge sees it (scorers.types.Flag without its evidence)."""

    kind: str
    severity: float
    duration_s: float


@dataclass(frozen=True, slots=True)
class Observation:
    """What the judge reads from one verdict (or dead letter) of one segment."""

    stream: str
    rendition: str
    seq: int
    segment_id: str
    mos: float | None
    mos_low: float | None
    flags: tuple[FlagObs, ...] = ()
    bitrate: int | None = None
    """Declared bitrate header (bit/s), else the bitrate measured from the segment."""
    declared_bitrate: int | None = None
    """The declared bitrate header alone (bit/s): what the encoder says it runs at. A
    measured bitrate falls with a frozen or black picture; a declared one does not."""
    measured_bitrate: int | None = None
    """The video bitrate measured from the segment's packets (bit/s): what the encoder
    actually spent, which an encoder under its rate target (simple content) keeps low."""
    decode_errors: int = 0
    corrupt_frames: int = 0
    duration_s: float | None = None
    """Media duration of the segment, when the verdict carries stream_info."""
    time: float = 0.0
    """When the verdict was made (Unix seconds)."""
    dead_letter: str | None = None
    """The dead-letter reason when the segment could not be screened at all."""
    judged_at: str | None = None
    """The display size ("WxH") the screen score judged the picture at (extra.judged_at)."""
    segment_time: float | None = None
    """When the segment's record was produced (source.timestamp_ms, in seconds)."""
    degradation: str | None = None
    """The degradation head's most likely class (clean, compression, blur, noise, ...), or
    None when the verdict has no head: what the picture looks degraded by, which tells a
    blurred or noisy picture from a starved encode (compression)."""

    @property
    def stamp(self) -> float:
        """When the segment was produced, else when its verdict was made: a time that is
        the same for every verdict of one segment (a segment screened twice has two
        screened_at) and tells a seq of one numbering from the same seq of the next."""
        return self.time if self.segment_time is None else self.segment_time

    @property
    def transport_errors(self) -> bool:
        """The segment arrived damaged: rejected packets, corrupt frames or undecodable."""
        return bool(self.decode_errors or self.corrupt_frames or self.dead_letter)

    @classmethod
    def from_verdict_json(cls, doc: Mapping[str, Any]) -> Observation:
        """Read a vqmon.verdict/1 value (docs/topics.md); raises MessageError if malformed."""
        what = "verdict"
        _check_schema(doc, VERDICT_SCHEMA, what)
        flags = []
        for raw in _flag_docs(doc, what):
            flags.append(
                FlagObs(
                    str(_get(raw, "kind", str, "verdict flag")),
                    _opt_float(raw, "severity", what) or 0.0,
                    _opt_float(raw, "duration_s", what) or 0.0,
                )
            )
        info = doc.get("stream_info") or {}
        decode = doc.get("decode") or {}
        if not isinstance(info, Mapping) or not isinstance(decode, Mapping):
            raise MessageError(f"{what}: stream_info and decode must be objects")
        declared = _header_bitrate(doc, "declared_bitrate", what)
        measured = _header_bitrate(info, "bitrate", what)
        extra = doc.get("extra")
        judged_at = extra.get("judged_at") if isinstance(extra, Mapping) else None
        if isinstance(judged_at, str):
            _check_text(judged_at, "extra.judged_at", what)
        return cls(
            **_verdict_head(doc, what),
            flags=tuple(flags),
            bitrate=declared if declared is not None else measured,
            declared_bitrate=declared,
            measured_bitrate=measured,
            decode_errors=_opt_int(decode, "errors", what) or 0,
            corrupt_frames=_opt_int(decode, "corrupt_frames", what) or 0,
            duration_s=_opt_float(info, "duration_s", what),
            time=_opt_time(doc, "screened_at", what) or 0.0,
            judged_at=judged_at[:32] if isinstance(judged_at, str) else None,
            segment_time=_record_time(doc, what),
            degradation=_likeliest(doc.get("degradation")),
        )

    @classmethod
    def from_dead_letter_json(cls, doc: Mapping[str, Any]) -> Observation | None:
        """A dead letter of a segment as a failed observation; None when it names no segment.

        Only reasons that say the bytes were damaged (decode_error, missing_init, empty)
        count; limits and bad headers say nothing about the rendition's quality.
        """
        what = "dead letter"
        _check_schema(doc, DEAD_LETTER_SCHEMA, what)
        reason = str(doc.get("reason", ""))
        if reason not in ("decode_error", "missing_init", "empty", "no_video"):
            return None
        headers: dict[str, str] = {}
        for item in doc.get("headers") or ():
            try:
                name, value = item
                headers[str(name)] = base64.b64decode(value).decode()
            except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
                continue
        if not headers.get("stream") or not headers.get("rendition"):
            return None
        try:
            seq = int(headers.get("seq", ""))
        except ValueError:
            return None
        stream, rendition = headers["stream"], headers["rendition"]
        return cls(
            stream=stream,
            rendition=rendition,
            seq=seq,
            segment_id=f"{stream}/{rendition}/{seq}",
            mos=None,
            mos_low=None,
            time=_opt_time(doc, "failed_at", what) or 0.0,
            dead_letter=reason,
            segment_time=_record_time(doc, what),
        )


def _likeliest(degradation: object) -> str | None:
    """The most likely class of a verdict's degradation map; None without one. Entries that
    are not a class name and a finite number are passed over (another release's or a
    hostile producer's), not a reason to refuse the verdict."""
    if not isinstance(degradation, Mapping):
        return None
    best: tuple[float, str] | None = None
    for name, p in degradation.items():
        value = finite_number(p)
        if not isinstance(name, str) or not 0 < len(name) <= 32 or value is None:
            continue
        if name.isprintable() and name.isascii() and (best is None or value > best[0]):
            best = (value, name)
    return None if best is None else best[1]


def _record_time(doc: Mapping[str, Any], what: str) -> float | None:
    """The segment record's timestamp (source.timestamp_ms) in seconds, if it has a
    plausible one: the producer's, not ours to refuse a verdict over (Kafka gives -1 for
    none; a producer's clock may be off or count microseconds)."""
    source = doc.get("source")
    ms = finite_number(source.get("timestamp_ms")) if isinstance(source, Mapping) else None
    return ms / 1000.0 if ms is not None and 0 < ms / 1000.0 <= MAX_TIME_S else None


def incident_id(stream: str, scope: str, kind: str, opening_seq: int, stamp: float) -> str:
    """Deterministic: a replayed verdict sequence reopens the same incident under the same key.

    `stamp` is the opening segment's `Observation.stamp` (when its record was produced): it
    tells apart two incidents opening at the same seq of different numberings (a packager
    that restarted its media sequence, a stream that went away and came back), which a
    replay of the same verdicts, or a segment screened twice, never does."""
    return f"{stream}/{scope}/{kind}/{opening_seq}@{round(stamp * 1000)}"


@dataclass(frozen=True, slots=True)
class Incident:
    """One event in the life of an incident. The latest event per id is its current state."""

    id: str
    stream: str
    scope: str
    """The rendition it concerns, or STREAM_SCOPE ("*") for every rendition of the stream."""
    kind: str
    state: IncidentState
    severity: float
    """0-1, the worst seen so far."""
    localisation: Localisation
    opened_seq: int
    opened_at: float
    updated_at: float
    resolved_at: float | None = None
    renditions: tuple[str, ...] = ()
    """Renditions that showed the fault (all rungs for source/packaging)."""
    segments: tuple[str, ...] = ()
    """Segment ids of the evidence (the opening run, bounded)."""
    evidence: dict[str, Any] = field(default_factory=dict)
    """Numbers behind it: scores, baselines, which rungs were compared, run durations."""
    diagnosis: dict[str, Any] | None = None
    """Attached when a diagnosis (VLM) arrives for one of its segments."""
    superseded_by: str | None = None
    """On a resolve: the stream-wide incident this rendition incident was merged into."""
    opened_stamp: float | None = None
    """The opening segment's stamp (when its record was produced), the id's suffix."""

    @property
    def is_open(self) -> bool:
        return self.state != "resolved"

    @property
    def level(self) -> Literal["critical", "warning"]:
        """Alerting severity: the `severity` label of Prometheus and Alertmanager alerts."""
        wide = self.localisation != "rendition" or self.kind in ("black", "freeze")
        return "critical" if wide or self.severity >= 0.7 else "warning"

    def evolve(self, **changes: Any) -> Incident:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": INCIDENT_SCHEMA,
            "id": self.id,
            "stream": self.stream,
            "scope": self.scope,
            "kind": self.kind,
            "state": self.state,
            "severity": round(self.severity, 4),
            "level": self.level,
            "localisation": self.localisation,
            "opened_seq": self.opened_seq,
            "opened_at": self.opened_at,
            "updated_at": self.updated_at,
            "resolved_at": self.resolved_at,
            "renditions": list(self.renditions),
            "segments": list(self.segments),
            "evidence": self.evidence,
            "diagnosis": self.diagnosis,
            "superseded_by": self.superseded_by,
            "opened_stamp": self.opened_stamp,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Incident:
        what = "incident"
        _check_schema(doc, INCIDENT_SCHEMA, what)
        state = _get(doc, "state", str, what)
        if state not in ("open", "update", "resolved"):
            raise MessageError(f"{what}: state {state!r} is not open, update or resolved")
        loc = _get(doc, "localisation", str, what)
        if loc not in LOCALISATIONS:
            raise MessageError(f"{what}: localisation {loc!r} is not one of {LOCALISATIONS}")
        diagnosis = _json_object(doc, "diagnosis", what) if doc.get("diagnosis") else None
        return cls(
            id=_get(doc, "id", str, what),
            stream=_get(doc, "stream", str, what),
            scope=_get(doc, "scope", str, what),
            kind=_get(doc, "kind", str, what),
            state=cast(IncidentState, state),
            severity=_required(_opt_float, doc, "severity", what),
            localisation=cast(Localisation, loc),
            opened_seq=_get(doc, "opened_seq", int, what),
            opened_at=_required(_opt_time, doc, "opened_at", what),
            updated_at=_required(_opt_time, doc, "updated_at", what),
            resolved_at=_opt_time(doc, "resolved_at", what),
            renditions=_texts(doc, "renditions", what),
            segments=_texts(doc, "segments", what),
            evidence=_json_object(doc, "evidence", what),
            diagnosis=dict(diagnosis) if isinstance(diagnosis, Mapping) else None,
            superseded_by=_opt_text(doc, "superseded_by", what),
            opened_stamp=_opt_time(doc, "opened_stamp", what),
        )


@dataclass(frozen=True, slots=True)
class EncoderSettings:
    """What one rendition's encoder is told to use. None: leave the encoder's own value."""

    bitrate: int | None = None
    """Target bitrate, bit/s."""
    preset: str | None = None
    """Encoder speed/quality preset (x264/x265 names: ultrafast ... veryslow)."""
    filters: tuple[str, ...] = ()
    """Pre-/in-loop filters switched on: "denoise", "deblock"."""
    enabled: bool = True
    """False once the rung has been dropped from the ladder."""

    def to_json(self) -> dict[str, Any]:
        return {
            "bitrate": self.bitrate,
            "preset": self.preset,
            "filters": list(self.filters),
            "enabled": self.enabled,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> EncoderSettings:
        what = "encoder settings"
        filters = tuple(str(f) for f in doc.get("filters") or ())
        for f in filters:
            if f not in FILTERS:
                raise MessageError(f"{what}: unknown filter {f!r}; known: {', '.join(FILTERS)}")
        return cls(
            bitrate=_opt_bitrate(doc, "bitrate", what),
            preset=_opt_preset(doc, "preset", what),
            filters=filters,
            enabled=bool(doc.get("enabled", True)),
        )


@dataclass(frozen=True, slots=True)
class DecisionParams:
    """What changes: only the fields of the decision's action are set."""

    from_bitrate: int | None = None
    to_bitrate: int | None = None
    from_preset: str | None = None
    to_preset: str | None = None
    filter: FilterName | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in _params_items(self) if v is not None}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DecisionParams:
        what = "decision parameters"
        flt = doc.get("filter")
        if flt is not None and flt not in FILTERS:
            raise MessageError(f"{what}: unknown filter {flt!r}; known: {', '.join(FILTERS)}")
        return cls(
            from_bitrate=_opt_bitrate(doc, "from_bitrate", what),
            to_bitrate=_opt_bitrate(doc, "to_bitrate", what),
            from_preset=_opt_preset(doc, "from_preset", what),
            to_preset=_opt_preset(doc, "to_preset", what),
            filter=cast(FilterName | None, flt),
        )


PRESET_NAME = re.compile(r"-?[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
"""An encoder preset's name (x264/x265's veryfast, NVENC's p4, SVT-AV1's 8 or -1)."""


def _opt_preset(doc: Mapping[str, Any], key: str, what: str) -> str | None:
    value = _opt_text(doc, key, what)
    if value is not None and not PRESET_NAME.fullmatch(value):
        raise MessageError(f"{what}: field {key!r} ({value[:40]!r}) is not a preset name")
    return value


def _params_items(p: DecisionParams) -> list[tuple[str, Any]]:
    return [
        ("from_bitrate", p.from_bitrate),
        ("to_bitrate", p.to_bitrate),
        ("from_preset", p.from_preset),
        ("to_preset", p.to_preset),
        ("filter", p.filter),
    ]


@dataclass(frozen=True, slots=True)
class EncoderDecision:
    """One instruction to one rendition's encoder (vqmon.encoder-decision/1)."""

    id: str
    stream: str
    rendition: str
    action: Action
    params: DecisionParams
    settings: EncoderSettings
    """The rendition's full settings once this decision is applied (desired state)."""
    dry_run: bool
    made_at: float
    seq: int
    """The segment whose observation triggered the decision."""
    reason: str
    incident_id: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    schema_version: str = DECISION_SCHEMA

    @property
    def key(self) -> str:
        """Kafka key: per rendition, so the compacted topic holds each rung's desired state."""
        return f"{self.stream}/{self.rendition}"

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema_version,
            "id": self.id,
            "stream": self.stream,
            "rendition": self.rendition,
            "action": self.action,
            "parameters": self.params.to_json(),
            "settings": self.settings.to_json(),
            "dry_run": self.dry_run,
            "made_at": self.made_at,
            "seq": self.seq,
            "reason": self.reason,
            "incident_id": self.incident_id,
            "evidence": self.evidence,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> EncoderDecision:
        what = "encoder decision"
        _check_schema(doc, DECISION_SCHEMA, what)
        action = _get(doc, "action", str, what)
        if action not in ACTIONS:
            raise MessageError(f"{what}: unknown action {action!r}; known: {', '.join(ACTIONS)}")
        params = DecisionParams.from_json(_get(doc, "parameters", Mapping, what))
        needed = ACTION_NEEDS.get(action)
        if needed is not None and getattr(params, needed) is None:
            raise MessageError(f"{what}: {action} without parameters.{needed}")
        return cls(
            id=_get(doc, "id", str, what),
            stream=_get(doc, "stream", str, what),
            rendition=_get(doc, "rendition", str, what),
            action=cast(Action, action),
            params=params,
            settings=EncoderSettings.from_json(_get(doc, "settings", Mapping, what)),
            dry_run=_get(doc, "dry_run", bool, what),
            made_at=_required(_opt_time, doc, "made_at", what),
            seq=_get(doc, "seq", int, what),
            reason=_opt_text(doc, "reason", what) or "",
            incident_id=_opt_text(doc, "incident_id", what),
            evidence=_json_object(doc, "evidence", what),
            schema_version=str(doc.get("schema", DECISION_SCHEMA)),
        )
