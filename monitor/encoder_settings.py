"""Applying encoder decisions to encoder settings: the closed-loop half an encoder runs.

`apply_decision` is the pure rule every consumer of vqmon.encoder-decisions follows
(docs/encoder-adapter.md). `LadderSettings` keeps the settings of every rung of the
synthetic feed (monitor/feed.py) and turns them into PyAV encode settings, so the feed
can re-encode a rung when a decision changes it. monitor/ffmpeg_adapter.py does the
same for an FFmpeg command line.
"""

from __future__ import annotations

from dataclasses import replace

from ingest.synth import EncodeSettings
from monitor.types import EncoderDecision, EncoderSettings

# libx264 AVOptions (FFmpeg's private options of the encoder) for the two filters:
# noise_reduction: x264's DCT-domain noise reduction (nr); deblock: stronger in-loop
# deblocking (alpha:beta). PyAV ignores an option the encoder does not know: test it.
X264_FILTER_OPTIONS: dict[str, tuple[str, str]] = {
    "denoise": ("noise_reduction", "400"),
    "deblock": ("deblock", "2:2"),
}


def apply_decision(settings: EncoderSettings, decision: EncoderDecision) -> EncoderSettings:
    """The settings after `decision`. Dry-run decisions change nothing."""
    if decision.dry_run:
        return settings
    p = decision.params
    match decision.action:
        case "raise_bitrate" | "lower_bitrate":
            if p.to_bitrate is None:
                raise ValueError(f"decision {decision.id}: {decision.action} without to_bitrate")
            return replace(settings, bitrate=p.to_bitrate)
        case "set_preset":
            if p.to_preset is None:
                raise ValueError(f"decision {decision.id}: set_preset without to_preset")
            return replace(settings, preset=p.to_preset)
        case "enable_filter":
            if p.filter is None:
                raise ValueError(f"decision {decision.id}: enable_filter without filter")
            if p.filter in settings.filters:
                return settings
            return replace(settings, filters=(*settings.filters, p.filter))
        case "drop_rung":
            return replace(settings, enabled=False)
    raise ValueError(f"decision {decision.id}: unknown action {decision.action!r}")


def to_encode_settings(settings: EncoderSettings, base: EncodeSettings) -> EncodeSettings:
    """PyAV encode settings (ingest.synth) for a rung: bitrate replaces CRF when set."""
    out = base
    if settings.bitrate is not None:
        out = replace(out, bitrate=settings.bitrate, crf=None)
    if settings.preset is not None:
        out = replace(out, preset=settings.preset)
    if base.codec == "libx264" and settings.filters:
        extra = tuple(X264_FILTER_OPTIONS[f] for f in settings.filters)
        out = replace(out, options=(*base.options, *extra))
    return out


class LadderSettings:
    """Current settings of every rung an encoder runs, changed only by decisions."""

    def __init__(self, initial: dict[tuple[str, str], EncoderSettings] | None = None) -> None:
        self._rungs: dict[tuple[str, str], EncoderSettings] = dict(initial or {})
        self.version = 0
        """Grows on every change: an encoder re-encodes when it moved."""

    def get(self, stream: str, rendition: str) -> EncoderSettings:
        return self._rungs.get((stream, rendition), EncoderSettings())

    def apply(self, decision: EncoderDecision) -> bool:
        """Apply one decision; True when the rung's settings changed."""
        key = (decision.stream, decision.rendition)
        before = self.get(*key)
        after = apply_decision(before, decision)
        if after == before:
            return False
        self._rungs[key] = after
        self.version += 1
        return True

    def set(self, stream: str, rendition: str, settings: EncoderSettings) -> None:
        """Change a rung from outside the decisions (an operator, a test's impairment)."""
        if self.get(stream, rendition) != settings:
            self._rungs[(stream, rendition)] = settings
            self.version += 1

    def encode_settings(self, stream: str, rendition: str, base: EncodeSettings) -> EncodeSettings:
        return to_encode_settings(self.get(stream, rendition), base)
