"""bench/escalation.py's library: an impairment that changes no pixel is not counted as one,
and old caches are mended by pairing their items with the builds that made them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bench import escalation as E


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
