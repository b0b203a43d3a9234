"""Per-feature statistics and top-activating contexts of a run, stored beside it as Parquet."""

from __future__ import annotations

from dataclasses import dataclass, field

# Files written into a run's folder (or beside a single-file run as <file>.<name>).
STATS_FILE = "feature_stats.parquet"
CONTEXTS_FILE = "contexts.parquet"


@dataclass(frozen=True)
class Context:
    """A window of text around one activation of a feature: tokens and the feature's activation on each."""

    feature: int
    tokens: list[str]
    activations: list[float]
    kind: str = "top"  # "top" for the strongest examples, "quantile" for samples from lower activation levels
    rank: int = 0
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def max_activation(self) -> float:
        return max(self.activations) if self.activations else 0.0
