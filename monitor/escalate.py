"""The screen role's escalation: policy decision per verdict, escalation message out.

The worker already attached an `EscalationRequest` to the `Screened` result when a
trigger or the audit sample fired (monitor.workers); here, on the runtime's thread,
`EscalationPolicy.decide` applies the per-stream rate limit, the global budget and the
rendition's recent level, and an admitted request becomes one more output of the
segment's record (topic vqmon.escalations, key = segment id): published with the
verdict, committed with it, at least once. The screen path never waits for the VLM:
the diagnose role reads that topic in its own consumer group.

Every escalation is counted by its first trigger (`reason_label`), every refusal by
why: `budget`, `ranked` (the budget's last part kept for rarer evidence), `stream_rate`
(the policy's limits), `no_frames` (the limits had room, but the worker made no
request: the limits were full when the job left, or the rolling median moved since; no
budget is spent on it), `request_error` (the frames could not be encoded).

A restarted daemon is not a new one: `warm_start` reads the latest verdicts the screen
role published back into the policy's per-rendition state (rolling medians, measures,
habits), so the first minutes after a restart judge against what each rendition was
doing, and the verdicts of the last budget window (each says whether it was escalated)
refill that window. The per-stream rate limits start full.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from monitor.escalation import EscalationPolicy, Recent, Room, reason_label
from monitor.messages import escalation_message
from monitor.publisher import OutMessage
from monitor.types import finite_number, verdict_from_json
from monitor.workers import Screened
from scorers.types import Verdict

log = logging.getLogger(__name__)

NO_FRAMES = "no_frames"
REQUEST_ERROR = "request_error"


class Escalator:
    """Turns screened segments into escalation messages under the policy. One thread."""

    def __init__(
        self,
        policy: EscalationPolicy,
        topic: str,
        *,
        on_escalated: Callable[[str], None] | None = None,
        on_dropped: Callable[[str, str], None] | None = None,
    ) -> None:
        self.policy = policy
        self.topic = topic
        self.on_escalated = on_escalated or (lambda _label: None)
        self.on_dropped = on_dropped or (lambda _reason, _trigger: None)
        """Called with why an escalation was not sent and the trigger it was for (its first
        trigger's bounded label, as `on_escalated` gets)."""

    def recent(self, stream: str, rendition: str) -> Recent:
        """What the worker compares a verdict with (sent along with each job)."""
        return self.policy.recent(stream, rendition)

    def room(self, stream: str) -> Room:
        """Which requests the worker should make for this stream now."""
        return self.policy.room(stream)

    def outputs(self, screened: Screened) -> list[OutMessage]:
        """The escalation message for this segment, or nothing (counted either way)."""
        request = screened.escalation
        decision = self.policy.decide(screened.verdict, has_request=request is not None)
        if not decision.escalate:
            why = decision.dropped
            if why == NO_FRAMES and screened.escalation_error:
                why = REQUEST_ERROR
                log.warning(
                    "escalation without a request",
                    extra={
                        "segment": screened.verdict.segment_id,
                        "reason": why,
                        "error": screened.escalation_error,
                    },
                )
            if why is not None:
                self.on_dropped(why, reason_label(decision.reason))
            return []
        assert request is not None  # decide() admits nothing without one
        if request.reason != decision.reason:
            request = dataclasses.replace(request, reason=decision.reason)
        self.on_escalated(reason_label(decision.reason))
        return [escalation_message(self.topic, request)]


def warm_start(
    policy: EscalationPolicy, records: Iterable[Any], now: float | None = None
) -> tuple[int, int]:
    """Remember published verdict records in the policy's rolling state, in the order they
    were screened (`screened_at`; those of the last budget window also refill the window,
    with their `escalated`); returns (remembered, skipped as unreadable)."""
    now = time.time() if now is None else now
    found: list[tuple[float, int, Verdict, bool]] = []
    skipped = 0
    for i, r in enumerate(records):
        try:
            doc = json.loads(r.value)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            v = verdict_from_json(doc)
        except (ValueError, TypeError, KeyError, RecursionError):  # MessageError: ValueError
            skipped += 1  # RecursionError: JSON nested deeper than the parser goes
            continue
        at = finite_number(doc.get("screened_at"))
        at = -math.inf if at is None else at
        found.append((at, i, v, doc.get("escalated") is True))
    found.sort(key=lambda x: (x[0], x[1]))
    for at, _, v, escalated in found:
        age = now - at
        policy.remember(v, age if math.isfinite(age) else None, escalated)
    return len(found), skipped
