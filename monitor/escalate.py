"""The screen role's escalation: policy decision per verdict, escalation message out.

The worker already attached an `EscalationRequest` to the `Screened` result when a
trigger or the audit sample fired (monitor.workers); here, on the runtime's thread,
`EscalationPolicy.decide` applies the per-stream rate limit, the global budget and the
rendition's recent level, and an admitted request becomes one more output of the
segment's record (topic vqmon.escalations, key = segment id): published with the
verdict, committed with it, at least once. The screen path never waits for the VLM:
the diagnose role reads that topic in its own consumer group.

Every escalation is counted by its first trigger (`reason_label`), every refusal by
why: `budget`, `stream_rate` (the policy's limits), `no_frames` (the limits had room,
but the worker made no request: the limits were full when the job left, or the
rolling median moved since; no budget is spent on it), `request_error` (the frames
could not be encoded).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from monitor.escalation import EscalationPolicy, Recent, Room, reason_label
from monitor.messages import escalation_message
from monitor.publisher import OutMessage
from monitor.workers import Screened

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
        on_dropped: Callable[[str], None] | None = None,
    ) -> None:
        self.policy = policy
        self.topic = topic
        self.on_escalated = on_escalated or (lambda _label: None)
        self.on_dropped = on_dropped or (lambda _reason: None)

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
                self.on_dropped(why)
            return []
        assert request is not None  # decide() admits nothing without one
        if request.reason != decision.reason:
            request = dataclasses.replace(request, reason=decision.reason)
        self.on_escalated(reason_label(decision.reason))
        return [escalation_message(self.topic, request)]
