"""Shared fixtures: real encodes made with PyAV, cached per session."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from ingest.synth import EncodeSettings, clip


@pytest.fixture(scope="session")
def ts_h264() -> bytes:
    """2 s of a moving natural-looking scene, H.264 in MPEG-TS, 320x180 at 25 fps."""
    return clip("scene", settings=EncodeSettings(codec="libx264", container="mpegts"))


@pytest.fixture(autouse=True)
def _no_kafka_client_left_open(request: pytest.FixtureRequest) -> Iterator[None]:
    """A Kafka client a test leaves open keeps its I/O thread (kafka-python 3: kafka-io-*,
    and a producer's sender)
    retrying a broker the test has stopped, logging into pytest's closed capture after the
    run: CI crashed in its terminal summary (SystemError) after every test had passed.
    Such a test fails here, naming the thread; close the client (a finally block)."""
    before = {t for t in threading.enumerate() if _kafka_thread(t)}
    yield
    deadline = time.monotonic() + 5.0
    while True:
        left = [
            t
            for t in threading.enumerate()
            if _kafka_thread(t) and t not in before and t.is_alive()
        ]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if left:
        pytest.fail(
            f"{request.node.nodeid} left Kafka clients open: {sorted(t.name for t in left)}",
            pytrace=False,
        )


def _kafka_thread(t: threading.Thread) -> bool:
    """A kafka-python client's own thread: a consumer's or admin client's I/O loop
    (kafka-io-<client_id>) or a producer's sender (<client_id>-network-thread)."""
    return t.name.startswith("kafka-io") or type(t).__name__ == "Sender"
