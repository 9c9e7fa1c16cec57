"""The demo's final table: which encoder decisions mend no fault on their stream."""

from __future__ import annotations

from monitor.demo import Seen, evaluate, schedule


def _decision(stream: str, rendition: str, seq: int, action: str, **params: object) -> dict:
    return {
        "stream": stream,
        "rendition": rendition,
        "seq": seq,
        "action": action,
        "parameters": params,
        "reason": "test",
    }


def test_a_filter_for_another_fault_than_its_own_is_misdirected() -> None:
    imps = schedule(30)  # noise on nature and starve on news/640x360 from segment 5
    seen = Seen()
    seen.decisions = [
        _decision("nature", "320x180", 6, "enable_filter", filter="denoise"),
        _decision("nature", "640x360", 6, "enable_filter", filter="deblock"),
        _decision("news", "640x360", 6, "enable_filter", filter="deblock"),
        _decision("news", "640x360", 6, "enable_filter", filter="denoise"),
        _decision("news", "640x360", 6, "raise_bitrate", from_bitrate=1, to_bitrate=2),
        _decision("sport", "640x360", 6, "raise_bitrate", from_bitrate=1, to_bitrate=2),
        _decision("sport", "640x360", 6, "enable_filter", filter="sharpen"),
    ]
    wrong = evaluate(seen, imps, 2.0)["misdirected_decisions"]
    assert [w.split(": ")[0] for w in wrong] == [
        "nature/640x360 enable_filter seq 6",  # deblocking a noisy source's grain
        "news/640x360 enable_filter seq 6",  # denoising a starved rung
        "sport/640x360 raise_bitrate seq 6",  # bits for a black picture
        "sport/640x360 enable_filter seq 6",  # a filter nothing is known to mend
    ]
