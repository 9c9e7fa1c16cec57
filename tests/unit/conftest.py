"""Unit-test fixtures shared across files: the tiny Qwen2.5-VL and Qwen3-VL folders (each
built once)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Qwen2.5-VL saved with its processor (tests/unit/tiny_vlm.py)."""
    pytest.importorskip("transformers")
    import torch

    from tests.unit import tiny_vlm

    torch.set_num_threads(1)
    return tiny_vlm.build(tmp_path_factory.mktemp("tiny-qwen2.5-vl"))


@pytest.fixture(scope="session")
def tiny_qwen3_vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Qwen3-VL saved with its processor (tests/unit/tiny_vlm.py)."""
    pytest.importorskip("transformers")
    import torch

    from tests.unit import tiny_vlm

    torch.set_num_threads(1)
    return tiny_vlm.build(tmp_path_factory.mktemp("tiny-qwen3-vl"), family="qwen3-vl")
