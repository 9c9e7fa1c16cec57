"""Reference adapter: encoder decisions -> FFmpeg command-line encoder arguments.

Shows an operator how to wire their own encoder to vqmon.encoder-decisions
(docs/encoder-adapter.md): keep each rung's `EncoderSettings`, fold every decision in
with `apply_decision`, and restart (or reconfigure) the rung's encoder with
`ffmpeg_args(settings)`. Pure: builds argument lists, runs nothing.

Mapping (libx264 / libx265; other encoders get bitrate and the filter chain only):

| settings | arguments |
|---|---|
| bitrate B | `-b:v B -maxrate B -bufsize 2B` (capped VBR, the usual live ladder rate control) |
| preset P | `-preset P` |
| denoise | `-vf hqdn3d=...` (before the encoder; any encoder) |
| deblock | `-deblock 2:2` (libx264 in-loop), `-x265-params deblock=2,2` (libx265) |
| enabled false | no arguments: the rung is not encoded (`rung_enabled` is False) |
"""

from __future__ import annotations

from monitor.encoder_settings import apply_decision
from monitor.types import EncoderDecision, EncoderSettings

DENOISE_FILTER = "hqdn3d=4:3:6:4.5"
DEBLOCK_STRENGTH = (2, 2)
PRESET_ENCODERS = ("libx264", "libx265")


def ffmpeg_args(settings: EncoderSettings, codec: str = "libx264") -> list[str]:
    """Output-side arguments for one rung (put them before the rung's output file)."""
    if not settings.enabled:
        raise ValueError("the rung was dropped (enabled is false): do not encode it")
    args = ["-c:v", codec]
    if settings.preset is not None and codec in PRESET_ENCODERS:
        args += ["-preset", settings.preset]
    if settings.bitrate is not None:
        b = str(settings.bitrate)
        args += ["-b:v", b, "-maxrate", b, "-bufsize", str(2 * settings.bitrate)]
    if "denoise" in settings.filters:
        args += ["-vf", DENOISE_FILTER]
    if "deblock" in settings.filters:
        alpha, beta = DEBLOCK_STRENGTH
        if codec == "libx264":
            args += ["-deblock", f"{alpha}:{beta}"]
        elif codec == "libx265":
            args += ["-x265-params", f"deblock={alpha},{beta}"]
    return args


def rung_enabled(settings: EncoderSettings) -> bool:
    return settings.enabled


class FfmpegLadder:
    """Per-rung settings folded from decisions, as FFmpeg arguments. What an operator runs."""

    def __init__(self, codec: str = "libx264") -> None:
        self.codec = codec
        self.rungs: dict[tuple[str, str], EncoderSettings] = {}

    def set(self, stream: str, rendition: str, settings: EncoderSettings) -> None:
        self.rungs[(stream, rendition)] = settings

    def apply(self, decision: EncoderDecision) -> list[str] | None:
        """Fold a decision in; the rung's new arguments, or None if nothing changed/dropped."""
        key = (decision.stream, decision.rendition)
        before = self.rungs.get(key, EncoderSettings())
        after = apply_decision(before, decision)
        self.rungs[key] = after
        if after == before or not after.enabled:
            return None
        return ffmpeg_args(after, self.codec)
