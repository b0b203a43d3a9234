"""Many-to-one partners between two runs of any widths: each latent of the smaller run's k nearest latents in the
larger run, beside its 1-to-1 matched partner, and how many smaller-run latents point at each larger-run latent.

A larger-run latent that is the nearest neighbour of several smaller-run latents hints at absorption; a
smaller-run latent whose top partners have similar cosines hints that the larger run split it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from saecore.errors import InputError
from saecore.matching import Match, Prepared, check_compatible, exact_scores, match_prepared, prepare
from saecore.selection import select
from saecore.similarity import DEFAULT_BLOCK_BYTES, check_sign, resolve_device

if TYPE_CHECKING:
    import pandas as pd

    from saecore.consistency import MatchCache
    from saecore.runs import Run

Progress = Callable[[int, int, str], None]
DEFAULT_TOP = 3
# Larger-run latents listed in the JSON summary, most pointed-at first.
JSON_TOP_FAN_IN = 20


def _num(x: float) -> float | None:
    """A JSON-safe float: None for NaN/inf."""
    return float(x) if np.isfinite(x) else None


def top_prepared(small: Prepared, large: Prepared, k: int = DEFAULT_TOP, sign: str = "signed",
                 budget_bytes: int = DEFAULT_BLOCK_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """Each small row's k nearest large rows: (indices (n, k) int64, float64 cosines), -1/NaN where there are none.

    Candidates are found blockwise in float32 (memory bounded by budget_bytes), then rescored exactly in
    float64 from the stored rows and re-sorted; rows left out as dead get no partners and are never partners.
    """
    check_sign(sign)
    if k < 1:
        raise InputError(f"the number of partners must be at least 1, got {k}")
    n = len(small.raw)
    index = np.full((n, k), -1, dtype=np.int64)
    cos = np.full((n, k), np.nan)
    if not len(small.unit) or not len(large.unit):
        return index, cos
    sel = select(small.unit, large.unit, sign, k, budget_bytes)
    found = large.keep[sel.row_idx.cpu().numpy()]
    kk = found.shape[1]
    rows = np.repeat(small.keep, kk)
    exact = exact_scores(small.raw, large.raw, rows, found.reshape(-1), sign).reshape(-1, kk)
    order = np.lexsort((found, -exact), axis=1) if kk > 1 else np.zeros_like(found)
    index[small.keep, :kk] = np.take_along_axis(found, order, axis=1)
    cos[small.keep, :kk] = np.take_along_axis(exact, order, axis=1)
    return index, cos


def top_partners(dec_small: torch.Tensor, dec_large: torch.Tensor, k: int = DEFAULT_TOP, sign: str = "signed",
                 device: str | torch.device = "auto",
                 budget_bytes: int = DEFAULT_BLOCK_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """Each row of dec_small's k nearest rows of dec_large by decoder cosine (see `top_prepared`); zero rows excluded."""
    if dec_small.shape[1] != dec_large.shape[1]:
        raise InputError(f"decoders have different d_in: {dec_small.shape[1]} vs {dec_large.shape[1]}")
    dev = resolve_device(device)
    return top_prepared(prepare(dec_small, "exclude", dev), prepare(dec_large, "exclude", dev), k, sign, budget_bytes)


def fan_in_counts(top1: np.ndarray, n_large: int) -> np.ndarray:
    """For each larger-run latent, how many smaller-run latents have it as their nearest neighbour (top1 = -1 skipped)."""
    top1 = np.asarray(top1, dtype=np.int64)
    return np.bincount(top1[top1 >= 0], minlength=n_large)


@dataclass
class Partners:
    """Top-k larger-run partners of every smaller-run latent, the 1-to-1 matching beside them, and fan-in."""

    small: str
    large: str
    swapped: bool  # True when the smaller run is the second one given
    sign: str
    index: np.ndarray  # (d_small, k) larger-run latents, nearest first; -1 when none
    cos: np.ndarray  # (d_small, k) float64 cosines; NaN when none
    matched: np.ndarray  # (d_small,) 1-to-1 partner in the larger run, -1 when unmatched or dead
    matched_score: np.ndarray  # (d_small,) its cosine, NaN then
    large_matched: np.ndarray  # (d_large,) 1-to-1 partner in the smaller run, -1 when unmatched or dead
    large_matched_score: np.ndarray
    dead_small: int = 0
    dead_large: int = 0
    info: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.index.shape[1])

    @property
    def d_small(self) -> int:
        return int(len(self.index))

    @property
    def d_large(self) -> int:
        return int(len(self.large_matched))

    def counts(self) -> np.ndarray:
        """Fan-in of every larger-run latent (how many smaller-run latents have it as top-1)."""
        return fan_in_counts(self.index[:, 0], self.d_large)

    def frame(self) -> pd.DataFrame:
        """One row per smaller-run latent: latent, partner_1..k, cos_1..k, matched_partner, matched_score."""
        import pandas as pd

        cols: dict[str, np.ndarray] = {"latent": np.arange(self.d_small)}
        for i in range(self.k):
            cols[f"partner_{i + 1}"] = self.index[:, i]
        for i in range(self.k):
            cols[f"cos_{i + 1}"] = self.cos[:, i]
        cols["matched_partner"] = self.matched
        cols["matched_score"] = self.matched_score
        return pd.DataFrame(cols)

    def fan_in(self) -> pd.DataFrame:
        """One row per larger-run latent: latent, fan_in (smaller-run latents with it as top-1), its 1-to-1 partner and score."""
        import pandas as pd

        return pd.DataFrame({"latent": np.arange(self.d_large), "fan_in": self.counts(),
                             "matched_partner": self.large_matched, "matched_score": self.large_matched_score})

    def pointers(self, latent: int) -> np.ndarray:
        """The smaller-run latents whose nearest larger-run latent is `latent`."""
        return np.nonzero(self.index[:, 0] == latent)[0]

    def to_json(self) -> dict:
        """Summary: shapes, mean top-1 and matched cosines, how often top-1 is the matched partner, fan-in histogram
        and the most pointed-at larger-run latents."""
        live = self.index[:, 0] >= 0
        counts = self.counts()
        values, freq = np.unique(counts, return_counts=True)
        top = np.argsort(-counts, kind="stable")[:JSON_TOP_FAN_IN]
        top = top[counts[top] > 1]
        mean = (lambda v: _num(float(np.mean(v))) if len(v) else None)
        return {"small": self.small, "large": self.large, "swapped": self.swapped, "sign": self.sign, "k": self.k,
                "d_small": self.d_small, "d_large": self.d_large, "dead_small": self.dead_small,
                "dead_large": self.dead_large, "mean_cos": [mean(self.cos[live, i][~np.isnan(self.cos[live, i])])
                                                            for i in range(self.k)],
                "mean_matched_score": mean(self.matched_score[~np.isnan(self.matched_score)]),
                "top1_is_matched": mean((self.index[live, 0] == self.matched[live]).astype(float)),
                "fan_in_histogram": {str(int(v)): int(c) for v, c in zip(values, freq)},
                "max_fan_in": int(counts.max()) if len(counts) else 0,
                "top_fan_in": [{"latent": int(j), "fan_in": int(counts[j]), "pointers": self.pointers(j).tolist(),
                                "matched_partner": int(self.large_matched[j])} for j in top],
                "info": self.info}


def partners_prepared(small: Prepared, large: Prepared, k: int = DEFAULT_TOP, sign: str = "signed",
                      matcher: Callable[[], Match] | None = None, method: str = "auto",
                      names: tuple[str, str] = ("A", "B"),
                      swapped: bool = False, budget_bytes: int = DEFAULT_BLOCK_BYTES,
                      progress: Progress | None = None) -> Partners:
    """Partners of two prepared decoders (smaller first); `matcher` gives the 1-to-1 match of small to large
    (e.g. from a cache), else it is computed here."""
    if len(small.raw) > len(large.raw):
        raise InputError(f"the first decoder must be the smaller one: {len(small.raw)} > {len(large.raw)} latents")
    t0 = time.perf_counter()
    if progress:
        progress(0, 2, f"top-{k} partners of {names[0]} in {names[1]}")
    index, cos = top_prepared(small, large, k, sign, budget_bytes)
    t1 = time.perf_counter()
    if progress:
        progress(1, 2, f"1-to-1 matching {names[0]} ↔ {names[1]}")
    match = matcher() if matcher is not None else match_prepared(small, large, sign, method, names)
    t2 = time.perf_counter()
    if progress:
        progress(2, 2, "done")
    info = {"seconds": {"top_k": t1 - t0, "matching": t2 - t1, "total": t2 - t0},
            "device": str(small.unit.device), "match_method": match.info.get("method")}
    return Partners(names[0], names[1], swapped, sign, index, cos, match.partner_a, match.score_a,
                    match.partner_b, match.score_b, small.n_dead, large.n_dead, info)


def decoder_partners(dec_a: torch.Tensor, dec_b: torch.Tensor, k: int = DEFAULT_TOP, sign: str = "signed",
                     device: str | torch.device = "auto", method: str = "auto", names: tuple[str, str] = ("A", "B"),
                     budget_bytes: int = DEFAULT_BLOCK_BYTES, progress: Progress | None = None) -> Partners:
    """Partners of two (d_sae, d_in) decoders of any widths; the smaller one (A when equal) is the side listed."""
    check_sign(sign)
    if dec_a.shape[1] != dec_b.shape[1]:
        raise InputError(f"decoders have different d_in: {dec_a.shape[1]} vs {dec_b.shape[1]}")
    swapped = dec_b.shape[0] < dec_a.shape[0]
    if swapped:
        dec_a, dec_b, names = dec_b, dec_a, (names[1], names[0])
    dev = resolve_device(device)
    return partners_prepared(prepare(dec_a, "exclude", dev), prepare(dec_b, "exclude", dev), k, sign, None, method,
                             names, swapped, budget_bytes, progress)


def find_partners(a: Run, b: Run, k: int = DEFAULT_TOP, sign: str = "signed", device: str | torch.device = "auto",
                  method: str = "auto", cache: MatchCache | None = None, budget_bytes: int = DEFAULT_BLOCK_BYTES,
                  progress: Progress | None = None) -> Partners:
    """Partners of two runs of any widths (the smaller run's latents listed); the 1-to-1 matching comes from the
    cache when stored. Refuses runs whose decoders have different d_in."""
    from saecore.consistency import cached_match

    check_sign(sign)
    check_compatible(a, b)
    swapped = b.d_sae < a.d_sae
    small, large = (b, a) if swapped else (a, b)
    dev = resolve_device(device)
    ps, pl = prepare(small.decoder, "exclude", dev), prepare(large.decoder, "exclude", dev)
    names = (small.name, large.name)

    def matcher() -> Match:
        return cached_match(small, large, sign, "exclude", dev, method, cache,
                            lambda: match_prepared(ps, pl, sign, method, names))[0]

    return partners_prepared(ps, pl, k, sign, matcher, method, names, swapped, budget_bytes, progress)
