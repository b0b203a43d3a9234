"""Consistency metrics over matches: MCC, PW-MCC, per-feature consistency, shared fraction, chance, bins."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from saecore.matching import Match, match_decoders
from saecore.similarity import normalize_rows

if TYPE_CHECKING:
    import pandas as pd

SHARED_THRESHOLD = 0.7
FREQUENCY_BINS = 5


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x), dtype=torch.float32)


def mcc(a, b, sign: str = "signed", dead: str = "include", device: str = "auto", method: str = "auto") -> float:
    """Mean matched cosine of two (n, d_in) dictionaries under the optimal one-to-one matching."""
    return match_decoders(_as_tensor(a), _as_tensor(b), sign, dead, device, method).mcc


def gt_mcc(truth, learned, sign: str = "signed", device: str = "auto") -> float:
    """MCC between a known ground-truth dictionary and a learned one (synthetic data)."""
    return mcc(truth, learned, sign=sign, device=device)


@dataclass(frozen=True)
class PairScore:
    """PW-MCC of runs a and b (indices into the run list)."""

    a: int
    b: int
    pw_mcc: float
    n_matched: int


@dataclass
class PWMCC:
    """PW-MCC over all unordered pairs of R runs: mean, population std (ddof=0), values, matrix."""

    runs: list[str]
    sign: str
    dead: str
    pairs: list[PairScore]

    @property
    def values(self) -> np.ndarray:
        return np.array([p.pw_mcc for p in self.pairs], dtype=np.float64)

    @property
    def mean(self) -> float:
        return float(self.values.mean()) if self.pairs else float("nan")

    @property
    def std(self) -> float:
        return float(self.values.std(ddof=0)) if self.pairs else float("nan")

    def matrix(self) -> np.ndarray:
        """R × R symmetric matrix of PW-MCC with ones on the diagonal."""
        r = len(self.runs)
        out = np.eye(r)
        for p in self.pairs:
            out[p.a, p.b] = out[p.b, p.a] = p.pw_mcc
        return out

    def to_json(self) -> dict:
        return {"runs": list(self.runs), "sign": self.sign,
                "pairs": [{"a": p.a, "b": p.b, "pw_mcc": p.pw_mcc, "n_matched": p.n_matched} for p in self.pairs],
                "mean": self.mean, "std": self.std}


def pw_mcc(names: list[str], matches: dict[tuple[int, int], Match]) -> PWMCC:
    """Collect pairwise matches (keyed (i, j), i < j) into a PWMCC summary."""
    first = next(iter(matches.values()))
    pairs = [PairScore(i, j, matches[i, j].mcc, matches[i, j].n_matched) for i, j in sorted(matches)]
    return PWMCC(list(names), first.sign, first.dead, pairs)


def match_for(matches: dict[tuple[int, int], Match], i: int, j: int) -> Match:
    """The match of run i to run j, seen from i's side, whichever order it was computed in."""
    return matches[i, j] if (i, j) in matches else matches[j, i].swapped()


def feature_consistency(run: int, n_runs: int, matches: dict[tuple[int, int], Match], d_sae: int) -> pd.DataFrame:
    """For each feature of one run: mean and min matched score against the other R−1 runs."""
    import pandas as pd

    others = [j for j in range(n_runs) if j != run]
    scores = np.column_stack([match_for(matches, run, j).score_a for j in others]) if others else np.zeros((d_sae, 0))
    with np.errstate(all="ignore"):
        valid = ~np.isnan(scores)
        n = valid.sum(axis=1)
        mean = np.where(n > 0, np.nansum(scores, axis=1) / np.maximum(n, 1), np.nan)
        mins = np.where(n > 0, np.nanmin(np.where(valid, scores, np.inf), axis=1), np.nan)
    return pd.DataFrame({"feature": np.arange(d_sae), "mean_score": mean, "min_score": mins, "n_partners": n})


def pair_cosines(x: torch.Tensor, y: torch.Tensor, rows: np.ndarray, cols: np.ndarray, sign: str) -> np.ndarray:
    """Cosine of x[rows[k]] with y[cols[k]] for every matched pair (e.g. encoders of decoder matches)."""
    xn, _ = normalize_rows(x.to(torch.float64))
    yn, _ = normalize_rows(y.to(torch.float64))
    c = (xn[torch.as_tensor(rows)] * yn[torch.as_tensor(cols)]).sum(dim=1).numpy()
    return np.abs(c) if sign == "abs" else c


def shared_mask(match: Match, threshold: float = SHARED_THRESHOLD, encoder_scores: np.ndarray | None = None) -> np.ndarray:
    """Per matched pair: shared if the decoder cosine (and the encoder cosine, when given) exceeds threshold."""
    ok = match.scores > threshold
    if encoder_scores is not None:
        ok &= encoder_scores > threshold
    return ok


def shared_fraction(match: Match, threshold: float = SHARED_THRESHOLD, encoder_scores: np.ndarray | None = None,
                    of: str = "a") -> float:
    """Fraction of a run's features that are shared with the other run (Paulo & Belrose's view)."""
    n = len(match.partner_a) if of == "a" else len(match.partner_b)
    return float(shared_mask(match, threshold, encoder_scores).sum()) / n if n else float("nan")


def shared_fraction_curve(match: Match, thresholds: np.ndarray | None = None,
                          encoder_scores: np.ndarray | None = None) -> pd.DataFrame:
    """Shared fraction as a function of the threshold."""
    import pandas as pd

    thresholds = np.linspace(0, 1, 101) if thresholds is None else np.asarray(thresholds)
    return pd.DataFrame({"threshold": thresholds,
                         "shared_fraction": [shared_fraction(match, t, encoder_scores) for t in thresholds]})


@dataclass(frozen=True)
class ChanceLevel:
    """MCC of independent random (gaussian) dictionaries of the given shapes."""

    d_sae_a: int
    d_sae_b: int
    d_in: int
    sign: str
    values: tuple[float, ...] = field(default_factory=tuple)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=0))


def chance_level(d_sae_a: int, d_in: int, d_sae_b: int | None = None, sign: str = "signed", draws: int = 3,
                 seed: int = 0, device: str = "auto", method: str = "auto") -> ChanceLevel:
    """Chance MCC: match `draws` pairs of random dictionaries of the same shapes."""
    d_sae_b = d_sae_a if d_sae_b is None else d_sae_b
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(draws):
        a = torch.randn(d_sae_a, d_in, generator=gen)
        b = torch.randn(d_sae_b, d_in, generator=gen)
        values.append(match_decoders(a, b, sign, "include", device, method).mcc)
    return ChanceLevel(d_sae_a, d_sae_b, d_in, sign, tuple(values))


def frequency_bins(frequencies: np.ndarray, scores: np.ndarray, n_bins: int = FREQUENCY_BINS) -> pd.DataFrame:
    """Consistency by activation frequency: equal-width bins of log10 frequency (never-firing features apart).

    Columns: bin edges (as frequencies), count, mean and sd of match score, each bin's contribution to
    the overall mean (sum of its scores / all features), the cumulative contribution, and share of features.
    """
    import pandas as pd

    freq = np.asarray(frequencies, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if freq.shape != scores.shape:
        raise ValueError(f"frequencies {freq.shape} and scores {scores.shape} must have the same shape")
    valid = ~np.isnan(scores)
    alive = valid & (freq > 0)
    total = int(valid.sum())
    logf = np.log10(freq[alive])
    edges = np.linspace(logf.min(), logf.max(), n_bins + 1) if alive.any() else np.zeros(n_bins + 1)
    idx = np.clip(np.searchsorted(edges, logf, side="right") - 1, 0, n_bins - 1)
    rows = []
    s_alive = scores[alive]
    for b in range(n_bins):
        s = s_alive[idx == b]
        rows.append({"bin": b, "freq_low": 10 ** edges[b], "freq_high": 10 ** edges[b + 1], "count": len(s),
                     "mean": float(s.mean()) if len(s) else np.nan, "sd": float(s.std(ddof=0)) if len(s) else np.nan,
                     "contribution": float(s.sum()) / total if total else np.nan, "share": len(s) / total if total else np.nan})
    never = valid & (freq <= 0)
    if never.any():
        s = scores[never]
        rows.append({"bin": -1, "freq_low": 0.0, "freq_high": 0.0, "count": len(s), "mean": float(s.mean()),
                     "sd": float(s.std(ddof=0)), "contribution": float(s.sum()) / total, "share": len(s) / total})
    df = pd.DataFrame(rows).sort_values("bin", kind="stable").reset_index(drop=True)
    df["cumulative"] = df["contribution"].cumsum()
    return df
