"""Unit-test fixtures shared across files: the tiny Qwen2.5-VL and Qwen3-VL folders (each
built once), and each family's in turn."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.tiny_vlm import FAMILIES


def _tiny(tmp_path_factory: pytest.TempPathFactory, family: str) -> Path:
    """The tiny random-weight `family` model saved with its processor (tests/unit/tiny_vlm.py)."""
    pytest.importorskip("transformers")
    import torch

    from tests.unit import tiny_vlm

    torch.set_num_threads(1)
    return tiny_vlm.build(tmp_path_factory.mktemp(f"tiny-{family}"), family=family)


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Qwen2.5-VL."""
    return _tiny(tmp_path_factory, "qwen2.5-vl")


@pytest.fixture(scope="session")
def tiny_qwen3_vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Qwen3-VL."""
    return _tiny(tmp_path_factory, "qwen3-vl")


@pytest.fixture(scope="module", params=FAMILIES)
def tiny_family(request: pytest.FixtureRequest) -> str:
    """Each tiny model family in turn: a test using it runs once per family."""
    family: str = request.param
    return family


@pytest.fixture(scope="module")
def tiny_family_dir(tiny_family: str, request: pytest.FixtureRequest) -> Path:
    """The folder of `tiny_family`'s tiny model."""
    path: Path = request.getfixturevalue(
        "tiny_qwen3_vlm_dir" if tiny_family == "qwen3-vl" else "tiny_vlm_dir"
    )
    return path
