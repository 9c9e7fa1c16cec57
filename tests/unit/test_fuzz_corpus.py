"""Replay every input that ever broke the ingest contract (tests/corpus/fuzz/, from bench/fuzz.py
and the hostile inputs of issue 15): each must now end in a verdict or an IngestError."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bench.fuzz import run_target

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "fuzz"
CASES = sorted(CORPUS.glob("*.bin"))


def test_corpus_is_there() -> None:
    assert len(CASES) >= 4


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_replay(path: Path) -> None:
    meta = json.loads(path.with_suffix(".json").read_text())
    init = path.with_suffix(".init")
    started = time.monotonic()
    outcome, detail = run_target(
        meta["target"], path.read_bytes(), init.read_bytes() if init.exists() else None
    )
    assert outcome in ("ok", "rejected"), (meta["found"], outcome, detail)
    assert time.monotonic() - started < 10, "an input the fuzzer once found slow is slow again"
