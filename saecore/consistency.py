"""Comparing a set of runs: every pairwise match (cached on disk by content) and its PW-MCC summary."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from saecore.cache import atomic_write_npz, content_key, default_cache_dir, read_npz
from saecore.errors import InputError
from saecore.matching import (Match, Prepared, check_compatible, match_from_arrays, match_prepared, match_runs,
                              match_to_arrays, prepare, SolveSummary, summarize_solves)
from saecore.metrics import PWMCC, feature_consistency, pw_mcc
from saecore.runs import Run
from saecore.similarity import check_sign, resolve_device

Progress = Callable[[int, int, str], None]


@dataclass
class Comparison:
    """All pairwise matches of R runs and their PW-MCC."""

    runs: list[Run]
    matches: dict[tuple[int, int], Match]
    pw: PWMCC
    cached: int = 0

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.runs]

    def solves(self) -> SolveSummary:
        """How the pairs were matched and whether every matching is proven optimal."""
        return summarize_solves([m.info for m in self.matches.values()])

    def feature_consistency(self, run: int):
        """Per-feature mean/min match score of one run against all the others."""
        return feature_consistency(run, len(self.runs), self.matches, self.runs[run].d_sae)


class MatchCache:
    """Matches stored as .npz files under a folder, keyed by both runs' decoder fingerprints and the options."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir() / "matches"

    @staticmethod
    def key(a: Run, b: Run, sign: str, dead: str) -> str:
        return content_key("match", a.fingerprint, b.fingerprint, sign, dead)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def get(self, a: Run, b: Run, sign: str, dead: str) -> Match | None:
        m = self.load(self.key(a, b, sign, dead))
        if m is not None:
            m.run_a, m.run_b = a.name, b.name
        return m

    def put(self, a: Run, b: Run, match: Match) -> None:
        self.store(self.key(a, b, match.sign, match.dead), match)

    def load(self, key: str) -> Match | None:
        """The match stored under a key, or None when absent or unreadable."""
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            return match_from_arrays(*read_npz(p))
        except (OSError, ValueError, KeyError):
            return None  # unreadable entry: recompute and overwrite

    def store(self, key: str, match: Match) -> None:
        """Write a match under a key (uncertified answers are never stored)."""
        if not match.info.get("certified", True):
            return
        atomic_write_npz(self.path(key), *match_to_arrays(match))


def cached_match(a: Run, b: Run, sign: str = "signed", dead: str = "include", device: str | torch.device = "auto",
                 method: str = "auto", cache: MatchCache | None = None,
                 compute: Callable[[], Match] | None = None) -> tuple[Match, bool]:
    """A match from the cache when its inputs are unchanged, else computed (by `compute` when given,
    e.g. from decoders already prepared) and stored. Returns (match, was_cached)."""
    if cache is not None and (hit := cache.get(a, b, sign, dead)) is not None:
        return hit, True
    m = compute() if compute is not None else match_runs(a, b, sign, dead, device, method)
    if cache is not None:
        cache.put(a, b, m)
    return m, False


def compare_runs(runs: list[Run], sign: str = "signed", dead: str = "include", device: str | torch.device = "auto",
                 method: str = "auto", cache: MatchCache | None = None, progress: Progress | None = None) -> Comparison:
    """Match every unordered pair of runs (R(R−1)/2 matchings) and summarise PW-MCC. Each decoder is
    normalised and moved to the device once, the first time a pair missing from the cache needs it."""
    check_sign(sign)
    if len(runs) < 2:
        raise InputError(f"need at least two runs to compare, got {len(runs)}")
    for r in runs[1:]:
        check_compatible(runs[0], r)
    dev = resolve_device(device)
    prepared: dict[int, Prepared] = {}

    def ready(i: int) -> Prepared:
        if i not in prepared:
            prepared[i] = prepare(runs[i].decoder, dead, dev)
        return prepared[i]

    pairs = list(itertools.combinations(range(len(runs)), 2))
    matches: dict[tuple[int, int], Match] = {}
    n_cached = 0
    for done, (i, j) in enumerate(pairs):
        if progress:
            progress(done, len(pairs), f"matching {runs[i].name} ↔ {runs[j].name}")
        matches[i, j], hit = cached_match(
            runs[i], runs[j], sign, dead, dev, method, cache,
            lambda i=i, j=j: match_prepared(ready(i), ready(j), sign, method, (runs[i].name, runs[j].name)))
        n_cached += hit
    if progress:
        progress(len(pairs), len(pairs), "done")
    return Comparison(list(runs), matches, pw_mcc([r.name for r in runs], matches), n_cached)
