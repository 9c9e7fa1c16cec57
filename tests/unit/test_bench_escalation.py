"""bench/escalation.py's library: an impairment that changes no pixel is not counted as one,
and old caches are mended by pairing their items with the builds that made them."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from bench import escalation as E
from scorers.artifacts import EDGES_KEY
from scorers.types import Flag, Verdict


def _frames(source: str, seed: int) -> list[Any]:
    """A checkerboard filmed by a still camera (every frame the same) or a moving one."""
    board = (np.indices((16, 16)).sum(axis=0) % 2 * 200).astype(np.uint8)
    step = 0 if source == "still" else 1
    return [np.repeat(np.roll(board, i * step, axis=1)[..., None], 3, axis=2) for i in range(E.N)]


@pytest.fixture
def library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(E, "SOURCES", ("moving", "still"))
    monkeypatch.setattr(E, "frames_of", _frames)


def _item(kind: str, source: str) -> E.Item:
    return E.Item(kind, source, None)  # type: ignore[arg-type]  # the verdict is not read


def test_a_freeze_of_a_still_camera_changes_nothing(library: None) -> None:
    still, moving = _frames("still", 0), _frames("moving", 0)
    for i in range(3):  # held from frame 1, 10 or 25
        assert E.unchanged("freeze", still, i)
        assert not E.unchanged("freeze", moving, i)
    assert not E.unchanged("black", still, 0)  # what changes pictures changes this one
    assert not E.unchanged("noise", still, 0)
    # the encoding's impairments are judged on bytes, never left out
    assert not E.unchanged("packet_loss", still, 0)
    assert not E.unchanged("compression", still, 0)


def test_old_caches_lose_exactly_the_unchanged_draws(library: None) -> None:
    # freeze is KINDS[1]: build i is of SOURCES[(1 + i) % 2], still for even i
    freezes = [_item("freeze", ("still", "moving")[i % 2]) for i in range(6)]
    blurs = [_item("blur", ("moving", "still")[i % 2]) for i in range(2)]
    del freezes[3]  # build 3 was undecodable: no item, the next is of the other source
    bad = [_item("black", "moving"), *freezes, *blurs]
    kept = [bad[0], freezes[1], freezes[4], *blurs]  # the moving freezes (builds 1 and 5)
    assert E.drop_unchanged(bad) == {"freeze": 3}
    assert bad == kept and all(a is b for a, b in zip(bad, kept, strict=True))


def test_an_item_of_no_source_is_an_error(library: None) -> None:
    with pytest.raises(ValueError, match="of no source here"):
        E.drop_unchanged([_item("black", "elsewhere")])


def _verdict(
    seq: int, mos_low: float, flags: tuple[Flag, ...] = (), edges: dict[str, Any] | None = None
) -> Verdict:
    extra = {EDGES_KEY: edges} if edges else {}
    return Verdict(
        f"lib/360p/{seq}", "lib", "360p", seq, mos_low, mos_low, (), flags, ("x@1",), extra
    )


THUMB_TEXT = base64.b64encode(bytes(range(64))).decode()
HELD = Flag("freeze", 1.0, 0, 2, {"early": 1.0, "stopped": 0.0})
"""A freeze held from the segment's first frames, which its own segment cannot call stopped."""


MOVED = {"first": THUMB_TEXT, "last": THUMB_TEXT, "moving": 1.0}
"""Edges of a segment that moved up to its end and begins on the picture it ended on: any
such segment held from its first frames after another would be called stopped."""


def _twinned(n: int, mos: float) -> E.Item:
    """An impaired freeze whose lead-in, fault and picture after have mos_low mos, mos + 0.01
    and mos + 0.02 (the cache's own verdict, stale, is never shown with twins)."""
    twins = E.Twins(
        _verdict(n, mos, (HELD,), MOVED),
        _verdict(n + 1, mos + 0.01, (HELD,), MOVED),
        _verdict(n + 2, mos + 0.02, (HELD,), MOVED),
    )
    return E.Item("freeze", "a", _verdict(n + 3, 0.5, (HELD,), MOVED), twins=twins)


def _feeds(
    monkeypatch: pytest.MonkeyPatch, bad: list[E.Item], seeds: range, **kw: Any
) -> Iterator[tuple[int, list[Verdict]]]:
    """Each seed's feed on one stream of shots of 10 (clean draws with edges and early holds
    too), as shown to the policy after the boundary was judged."""
    monkeypatch.setattr(E, "SOURCES", ("a",))
    clean = [E.Item("clean", "a", _verdict(i, 3.0 + i / 10, (HELD,), MOVED)) for i in range(5)]
    shown: list[Verdict] = []
    held = E.held_across
    monkeypatch.setattr(E, "held_across", lambda v, e: shown.append(held(v, e)) or shown[-1])
    for seed in seeds:
        shown.clear()
        r = E.run_feed(clean, bad, streams=1, seed=seed, config=E.EscalationConfig(), **kw)
        assert r["impaired"] == len(bad)
        yield seed, list(shown)


def _stopped(v: Verdict) -> bool:
    return v.flags[0].evidence.get("held_across") == 1.0


@pytest.mark.parametrize("twins", [False, True])
def test_twins_put_a_fault_in_the_picture_it_hit(
    monkeypatch: pytest.MonkeyPatch, twins: bool
) -> None:
    bad = [_twinned(10, 4.2)]
    where = set()
    kw = {"segments": 40, "impaired_share": 0.025, "shot_segments": 10, "twins": twins}
    for _seed, shown in _feeds(monkeypatch, bad, range(40), **kw):
        fault = 4.21 if twins else 0.5
        at = next(k for k, x in enumerate(shown) if x.mos_low == fault)
        where.add(at % 10)
        # the shot a fault falls in shows the picture before it, then the picture after it
        for start in range(0, 40, 10):
            got = [x.mos_low for x in shown[start : start + 10]]
            if twins and start <= at < start + 10:
                m = at - start
                assert got == [4.2] * m + [4.21] + [4.22] * (9 - m)
            else:
                rest = {x for k, x in enumerate(got, start) if k != at}
                assert len(rest) == 1 and 3.0 <= rest.pop() < 3.5
        # the fault is judged against the edge its lead-in ended on, as the screen role
        # hands it: held from the boundary after a moving picture, it stopped; nothing else
        # is a picture going on (a shot repeats its clip, a draw cuts to another)
        assert [k for k, x in enumerate(shown) if _stopped(x)] == (
            [at] if twins and at % 10 else []
        )
    assert {0, 9} <= where  # faults at a shot's first and last segment were among them


def test_two_faults_in_a_shot_each_hit_their_own_picture(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = [_twinned(10, 4.2), _twinned(20, 4.5)]
    kw = {"segments": 40, "impaired_share": 0.05, "shot_segments": 10, "twins": True}
    seen = 0
    for _seed, shown in _feeds(monkeypatch, bad, range(200), **kw):
        got = [round(x.mos_low, 2) for x in shown]
        at = sorted(k for k, x in enumerate(got) if x in (4.21, 4.51))
        if at[0] // 10 != at[1] // 10:
            continue
        seen += 1
        start, (a, b) = at[0] // 10 * 10, at
        first, second = (4.2, 4.5) if got[a] == 4.21 else (4.5, 4.2)
        lead, later = round(first + 0.01, 2), round(second + 0.01, 2)
        assert got[start:a] == [first] * (a - start) and got[a] == lead
        assert got[a + 1 : b] == [second] * (b - a - 1) and got[b] == later
        assert got[b + 1 : start + 10] == [round(second + 0.02, 2)] * (start + 9 - b)
        # each fault stopped after its own lead-in; straight after the other, none shown
        assert [k for k, x in enumerate(shown) if _stopped(x)] == [
            k for k in at if k % 10 and (k == a or b > a + 1)
        ]
    assert seen >= 5


def test_a_restart_hands_no_edge_from_before_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # 18 s of warm-up: 9 segments, so the measured feed's first segment ends a shot whose
    # lead-in the daemon before the restart screened; the new one has no edge for it
    kw = {"segments": 40, "impaired_share": 0.025, "shot_segments": 10, "twins": True}
    firsts = 0
    for restart in (False, True):
        for _seed, shown in _feeds(
            monkeypatch, [_twinned(10, 4.2)], range(400), warmup_s=18.0, restart=restart, **kw
        ):
            if round(shown[9].mos_low, 2) == 4.21:  # the fault is the first one measured
                firsts += 1
                assert _stopped(shown[9]) is not restart
    assert firsts >= 4
