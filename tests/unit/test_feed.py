"""The closed-loop feed without a broker: schedule, decisions applied, default unchanged."""

from __future__ import annotations

from typing import Any

import pytest

from ingest.contract import header_map
from monitor.feed import Feed
from monitor.sections import FeedConfig
from monitor.types import DecisionParams, EncoderDecision, EncoderSettings


class Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes, dict[str, bytes]]] = []

    def send(self, topic: str, *, key: bytes, value: bytes, headers: Any) -> None:
        self.sent.append((key, value, header_map(headers)))


class Decisions:
    def __init__(self) -> None:
        self.queue: list[EncoderDecision] = []

    def poll(self) -> list[EncoderDecision]:
        out, self.queue = self.queue, []
        return out

    def close(self) -> None:
        pass


def raise_to(bitrate: int, *, dry_run: bool = False) -> EncoderDecision:
    return EncoderDecision(
        id=f"a/128x72/raise_bitrate/{bitrate}",
        stream="a",
        rendition="128x72",
        action="raise_bitrate",
        params=DecisionParams(from_bitrate=100_000, to_bitrate=bitrate),
        settings=EncoderSettings(bitrate=bitrate),
        dry_run=dry_run,
        made_at=0.0,
        seq=0,
        reason="test",
    )


def feed(**kw: Any) -> tuple[Feed, Sink, Decisions]:
    cfg = FeedConfig.model_validate(
        {
            "stream_names": ["a", "b"],
            "renditions": ["64x36", "128x72"],
            "segment_seconds": 0.2,
            "black_every": 0,
            **kw,
        }
    )
    sink, decisions = Sink(), Decisions()
    return Feed(cfg, sink, "seg", decisions=decisions, keep_log=True), sink, decisions


def bitrates(sink: Sink, key: bytes) -> list[int | None]:
    return [int(h["bitrate"]) if "bitrate" in h else None for k, _, h in sink.sent if k == key]


def test_starve_then_a_decision_restores_the_rung() -> None:
    f, sink, decisions = feed(
        bitrates={"128x72": 100_000},
        schedule=[
            {
                "kind": "starve",
                "stream": "a",
                "rendition": "128x72",
                "from_seq": 1,
                "bitrate": 10_000,
            }
        ],
    )
    for _ in range(3):
        f.step()
    decisions.queue = [raise_to(120_000, dry_run=True), raise_to(120_000)]
    f.step()
    assert bitrates(sink, b"a/128x72") == [100_000, 10_000, 10_000, 120_000]
    assert bitrates(sink, b"b/128x72") == [100_000] * 4
    assert bitrates(sink, b"a/64x36") == [None] * 4  # no nominal: CRF as before
    assert [d.id for _, _, d in f.applied] == ["a/128x72/raise_bitrate/120000"]


def test_a_source_fault_hits_every_rung_and_a_rung_fault_one() -> None:
    f, _, _ = feed(
        schedule=[
            {"kind": "black", "stream": "a", "from_seq": 1, "segments": 1},
            {"kind": "freeze", "stream": "b", "rendition": "64x36", "from_seq": 1, "segments": 1},
        ]
    )
    f.step()
    f.step()
    f.step()
    marks = {(p.stream, p.rendition, p.seq): p.impairments for p in f.log}
    assert marks[("a", "64x36", 1)] == marks[("a", "128x72", 1)] == ("black",)
    assert marks[("b", "64x36", 1)] == ("freeze",) and marks[("b", "128x72", 1)] == ()
    assert marks[("a", "64x36", 2)] == ()


def test_schedule_names_are_checked() -> None:
    with pytest.raises(ValueError, match="schedule"):
        feed(schedule=[{"kind": "black", "stream": "nope", "from_seq": 0}])
    with pytest.raises(ValueError, match="bitrate"):
        feed(schedule=[{"kind": "starve", "stream": "a", "from_seq": 0}])


def test_default_feed_is_unchanged() -> None:
    f, sink, _ = feed(black_every=2, stream_names=[], streams=1)
    f.decisions = None
    for _ in range(2):
        f.step()
    assert [k for k, _, _ in sink.sent] == [b"demo-1/64x36", b"demo-1/128x72"] * 2
    assert [p.impairments for p in f.log] == [(), (), ("black",), ("black",)]


def test_a_feed_of_so_many_rounds_stops_after_them() -> None:
    f, sink, _ = feed(rounds=3, speed=1000)
    f.start().thread.join(30)
    assert not f.thread.is_alive() and f.done and f.seq == 3
    assert len(sink.sent) == 3 * 2 * 2  # rounds x streams x renditions
    endless, _, _ = feed()
    endless.step()
    assert not endless.done


def test_every_rung_says_it_is_shown_at_the_top_rungs_size() -> None:
    # Without the header, a screen worker that had not seen the top rung yet judged a low
    # rung at its coded size, then at the display once it had: a drop of 0.5-0.7 MOS that
    # the judge read as starvation on that rung.
    f, sink, _ = feed()
    f.step()
    assert {h["display"] for _, _, h in sink.sent} == {b"128x72"} and len(sink.sent) == 4
