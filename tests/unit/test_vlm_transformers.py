"""Every task end to end through the real transformers generate path, on a tiny random
Qwen2.5-VL and a tiny random Qwen3-VL: random weights write garbage, so these check the
pipeline's behaviour."""

from __future__ import annotations

from pathlib import Path

import pytest

from scorers.vlm.config import DiagnoseConfig
from scorers.vlm.diagnoser import Diagnoser
from scorers.vlm.prompts import PROMPT_VERSION
from scorers.vlm.transformers_backend import TransformersBackend, TransformersConfig
from scorers.vlm.types import TASKS, Diagnosis, Prompt, VLMError
from tests.unit.vlm_samples import request

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def backend(tiny_family: str, tiny_family_dir: Path) -> TransformersBackend:
    """The backend on each family's tiny model, loaded through the same Auto classes."""
    backend = TransformersBackend(
        TransformersConfig(
            model_path=tiny_family_dir,
            model_id="tiny-qwen",
            max_new_tokens=12,
            batch_size=8,
            threads=1,
        )
    )
    # the family's own classes, not weights loaded into another family's (and filled at random)
    family = "Qwen3VL" if tiny_family == "qwen3-vl" else "Qwen2_5_VL"
    assert type(backend.model).__name__ == f"{family}ForConditionalGeneration"
    assert type(backend.model.config).__name__ == f"{family}Config"
    return backend


def test_every_task_batched_gives_one_diagnosis_per_request(backend: TransformersBackend) -> None:
    cfg = DiagnoseConfig(backend=backend.config, tasks=list(TASKS), local_frames=2, mosaic_side=224)
    reqs = [request(1), request(2, frames=4), request(3, frames=1, reference=False)]
    out = Diagnoser(cfg, backend).diagnose_batch(reqs)
    assert [d.segment_id for d in out] == [r.segment_id for r in reqs]
    for d, r in zip(out, reqs, strict=True):
        assert d.model == "tiny-qwen" and d.prompt_version == PROMPT_VERSION
        assert d.asked_flags == ("blockiness",) and d.escalation_reason == r.reason
        assert d.latency_s > 0
        ran = [t.task for t in d.tasks]
        assert ran == (list(TASKS) if r.reference else ["score", "degradation", "video"])
        for t in d.tasks:
            assert len(t.raw_texts) == 1 and t.latency_s > 0 and t.new_tokens
            # garbage text: either a strict parse or a failure with a reason, never a default
            if not t.parse_ok:
                assert t.parse_error and t.score_mean is None and t.degradation is None
        assert Diagnosis.from_json(d.to_json()) == d
    assert "compare" in out[2].skipped
    assert out[0].tokens_per_s is not None and out[0].tokens_per_s > 0


def test_k_samples_give_k_raw_texts(backend: TransformersBackend) -> None:
    cfg = DiagnoseConfig(backend=backend.config, tasks=["score", "degradation"], samples=3)
    d = Diagnoser(cfg, backend).diagnose(request(4))
    assert d.samples == 3
    for t in d.tasks:
        assert len(t.raw_texts) == 3 and len(t.parse_errors) == 3


def test_greedy_is_deterministic_and_batching_does_not_change_it(
    backend: TransformersBackend,
) -> None:
    r = request(5)
    p = Diagnoser(DiagnoseConfig(backend=backend.config), backend).prompt(r, "score")
    assert p is not None
    alone = backend.generate([p], 1, 1.0)[0].texts
    other = Prompt("another, longer prompt to force left padding " * 3, p.images)
    batched = backend.generate([other, p, p], 1, 1.0)
    assert batched[1].texts == batched[2].texts == alone


def test_text_only_prompt_in_a_batch_with_images(backend: TransformersBackend) -> None:
    p = Diagnoser(DiagnoseConfig(backend=backend.config), backend).prompt(request(6), "score")
    assert p is not None
    gens = backend.generate([Prompt("no picture"), p], 2, 1.0)
    assert [len(g.texts) for g in gens] == [2, 2]


def test_missing_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VLMError, match=r"no config\.json"):
        TransformersBackend(TransformersConfig(model_path=tmp_path))
