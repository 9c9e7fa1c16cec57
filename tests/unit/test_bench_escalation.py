"""bench/escalation.py's library: an impairment that changes no pixel is not counted as one,
and old caches are mended by pairing their items with the builds that made them."""

from __future__ import annotations

import base64
import dataclasses
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


@pytest.mark.parametrize("twins", [False, True])
def test_twins_put_a_fault_in_the_picture_it_hit(
    monkeypatch: pytest.MonkeyPatch, twins: bool
) -> None:
    monkeypatch.setattr(E, "SOURCES", ("a",))
    clean = [E.Item("clean", "a", _verdict(i, 3.0 + i / 10)) for i in range(5)]
    before = _verdict(9, 4.2, edges={"first": THUMB_TEXT, "last": THUMB_TEXT, "moving": 1.0})
    fault = _verdict(10, 4.1, (HELD,), edges={"first": THUMB_TEXT, "last": THUMB_TEXT})
    after = _verdict(11, 4.3)
    stale = _verdict(8, 4.1, (dataclasses.replace(HELD, evidence={}),))  # the cache's own
    bad = [E.Item("freeze", "a", stale, twins=E.Twins(before, fault, after))]
    shown: list[Verdict] = []
    held = E.held_across
    monkeypatch.setattr(E, "held_across", lambda v, e: shown.append(held(v, e)) or shown[-1])
    where = set()
    for seed in range(40):
        shown.clear()
        r = E.run_feed(
            clean,
            bad,
            streams=1,
            segments=40,
            impaired_share=0.025,  # one impaired segment in 40
            seed=seed,
            config=E.EscalationConfig(),
            shot_segments=10,
            twins=twins,
        )
        assert r["impaired"] == 1 and r["per_kind"]["freeze"]["n"] == 1
        at = next(k for k, x in enumerate(shown) if x.mos_low == 4.1)
        where.add(at % 10)
        # the shot a fault falls in shows the picture before it, then the picture after it
        expected = [(c.verdict.mos_low,) for c in clean]
        for start in range(0, 40, 10):
            got = [x.mos_low for x in shown[start : start + 10]]
            if twins and start <= at < start + 10:
                m = at - start
                assert got == [4.2] * m + [4.1] + [4.3] * (9 - m)
            else:
                rest = {x for k, x in enumerate(got, start) if k != at}
                assert len(rest) == 1 and (*rest,) in expected
        # the fault is judged against the edge the segment before it ended on, as the
        # screen role hands it: held from the boundary after a moving picture, it stopped
        stopped = shown[at].flags[0].evidence.get("held_across") == 1.0
        assert stopped == (twins and at % 10 > 0)
    assert {0, 9} <= where  # faults at a shot's first and last segment were among them
