"""Shared fixtures: real encodes made with PyAV, cached per session."""

from __future__ import annotations

import pytest

from ingest.synth import EncodeSettings, clip


@pytest.fixture(scope="session")
def ts_h264() -> bytes:
    """2 s of a moving natural-looking scene, H.264 in MPEG-TS, 320x180 at 25 fps."""
    return clip("scene", settings=EncodeSettings(codec="libx264", container="mpegts"))
