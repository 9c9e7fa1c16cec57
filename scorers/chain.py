"""Run several scorers over a batch of decoded segments and merge their verdicts per segment."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ingest.config import StrictModel
from ingest.types import DecodedSegment
from scorers import registry
from scorers.types import Scorer, Verdict


class Chain:
    def __init__(self, scorers: Sequence[Scorer]) -> None:
        if not scorers:
            raise ValueError("a scoring chain needs at least one scorer; list some under 'scorers'")
        self.scorers = list(scorers)

    @classmethod
    def from_configs(cls, configs: Iterable[StrictModel]) -> Chain:
        import scorers.backends  # noqa: F401  (registers the backends)

        return cls([registry.build(c) for c in configs])

    @property
    def names(self) -> list[str]:
        return [f"{s.name}@{s.version}" for s in self.scorers]

    def runtimes(self) -> list[tuple[str, str, str]]:
        """(name, version, provider) per scorer; scorers without a model runtime run in Python."""
        return [(s.name, s.version, str(getattr(s, "provider", "python"))) for s in self.scorers]

    def score(self, batch: Sequence[DecodedSegment]) -> list[Verdict]:
        merged: list[Verdict] | None = None
        for scorer in self.scorers:
            verdicts = scorer.score(batch)
            merged = (
                verdicts
                if merged is None
                else [a.merge(b) for a, b in zip(merged, verdicts, strict=True)]
            )
        assert merged is not None
        return merged

    def close(self) -> None:
        for scorer in self.scorers:
            scorer.close()
