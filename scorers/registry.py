"""Name -> scorer backend. Each backend owns its config model (`type: Literal[name]`).

Backends are registered explicitly in scorers/backends.py, which also builds the
discriminated union the root config uses.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ingest.config import StrictModel
from scorers.types import Scorer, ScorerError


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    config: type[StrictModel]
    build: Callable[[Any], Scorer]
    description: str


_BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    if backend.name in _BACKENDS:
        raise ValueError(f"scorer backend {backend.name!r} is registered twice")
    _BACKENDS[backend.name] = backend
    return backend


def names() -> list[str]:
    return sorted(_BACKENDS)


def get(name: str) -> Backend:
    try:
        return _BACKENDS[name]
    except KeyError:
        close = difflib.get_close_matches(name, _BACKENDS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ScorerError(
            f"unknown scorer {name!r}; known scorers: {', '.join(names())}.{hint}"
        ) from None


def build(config: StrictModel) -> Scorer:
    """Build the scorer a validated config model describes."""
    name = getattr(config, "type", None)
    if not isinstance(name, str):
        raise ScorerError(f"scorer config {type(config).__name__} has no 'type' field")
    return get(name).build(config)
