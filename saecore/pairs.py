"""Matched feature pairs for browsing: the pair table, its filter, runner-up candidates and one feature across seeds."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from saecore.consistency import Comparison
from saecore.errors import InputError
from saecore.explanations import pick_explainer
from saecore.matching import Match
from saecore.metrics import match_for
from saecore.runs import Run
from saecore.similarity import check_sign, normalize_rows

PAIR_COLUMNS = ("feature_a", "feature_b", "score", "runner_up_b", "runner_up_b_score", "freq_a", "freq_b",
                "explanation_a", "explanation_b")


def frequencies_of(run: Run, stats: pd.DataFrame | None = None) -> np.ndarray | None:
    """Firing fraction per feature: measured stats when given (column 'frequency'), else the run's stored sparsity."""
    if stats is not None and len(stats) and "frequency" in stats:
        out = np.full(run.d_sae, np.nan)
        idx = stats["feature"].to_numpy(dtype=np.int64)
        ok = (idx >= 0) & (idx < run.d_sae)
        out[idx[ok]] = stats["frequency"].to_numpy(dtype=np.float64)[ok]
        return out
    return None if run.frequencies is None else np.asarray(run.frequencies, dtype=np.float64)


def explanation_map(explanations: pd.DataFrame | None) -> dict[int, str]:
    """Feature index -> one explanation text from a read_explanations table (the explainer covering most features)."""
    if explanations is None or not len(explanations):
        return {}
    df = pick_explainer(explanations)
    return {int(f): str(t) for f, t in zip(df["feature"], df["explanation"])}


def pair_table(match: Match, freq_a: np.ndarray | None = None, freq_b: np.ndarray | None = None,
               explanations_a: Mapping[int, str] | None = None, explanations_b: Mapping[int, str] | None = None
               ) -> pd.DataFrame:
    """One row per matched pair, best score first, with frequencies and explanations when known."""
    p = match.pairs()
    fa = p["feature_a"].to_numpy()
    fb = p["feature_b"].to_numpy()
    ea, eb = explanations_a or {}, explanations_b or {}
    df = pd.DataFrame({
        "feature_a": fa, "feature_b": fb, "score": p["score"].to_numpy(),
        "runner_up_b": p["runner_up_b"].to_numpy(), "runner_up_b_score": p["runner_up_b_score"].to_numpy(),
        "freq_a": freq_a[fa] if freq_a is not None else np.nan,
        "freq_b": freq_b[fb] if freq_b is not None else np.nan,
        "explanation_a": [ea.get(int(f)) for f in fa],
        "explanation_b": [eb.get(int(f)) for f in fb],
    })
    return df


@dataclass(frozen=True)
class PairFilter:
    """Which pairs to show: score and (run A) frequency ranges, explanation presence, text in explanations."""

    score_min: float = -1.0
    score_max: float = 1.0
    freq_min: float | None = None
    freq_max: float | None = None
    explained: bool = False  # keep only pairs where at least one side has an explanation
    text: str = ""


def filter_bounds(df: pd.DataFrame) -> tuple[tuple[float, float], tuple[int, int] | None]:
    """What the filter's ranges can span: match score from its floor (0, or lower for negative scores) to 1, and
    whole log10 decades of run A's firing fraction (None when the frequencies are unknown or span no range)."""
    score = (float(np.floor(min(df["score"].min(), 0.0) * 100) / 100) if len(df) else -1.0, 1.0)
    fired = df["freq_a"][df["freq_a"] > 0]
    if not len(fired):
        return score, None
    decades = (math.floor(np.log10(fired.min())), math.ceil(np.log10(fired.max())))
    return score, decades if decades[1] > decades[0] else None


def clip_range(values: tuple | None, bounds: tuple) -> tuple:
    """A requested (lo, hi) range kept inside bounds; the whole bounds when none is requested."""
    if values is None:
        return tuple(bounds)
    return tuple(min(max(v, bounds[0]), bounds[1]) for v in values)


def filter_pairs(df: pd.DataFrame, f: PairFilter) -> pd.DataFrame:
    """The rows of a pair table that pass the filter (order kept)."""
    keep = (df["score"] >= f.score_min) & (df["score"] <= f.score_max)
    if f.freq_min is not None:
        keep &= df["freq_a"] >= f.freq_min
    if f.freq_max is not None:
        keep &= df["freq_a"] <= f.freq_max
    has_a, has_b = df["explanation_a"].notna(), df["explanation_b"].notna()
    if f.explained:
        keep &= has_a | has_b
    text = f.text.strip().lower()
    if text:
        in_a = df["explanation_a"].fillna("").str.lower().str.contains(text, regex=False)
        in_b = df["explanation_b"].fillna("").str.lower().str.contains(text, regex=False)
        keep &= in_a | in_b
    return df[keep]


# Orders of the pair table (keys as in saecore.viewstate.ORDERS): column and direction.
SORTS: dict[str, tuple[str, bool]] = {"score-desc": ("score", False), "score-asc": ("score", True),
                                      "feature": ("feature_a", True), "freq-desc": ("freq_a", False)}


def sort_pairs(df: pd.DataFrame, order: str) -> pd.DataFrame:
    """The pair table in one of the SORTS orders (stable; missing values last), renumbered from 0."""
    column, ascending = SORTS[order]
    return df.sort_values(column, ascending=ascending, kind="stable", na_position="last").reset_index(drop=True)


def first_pair(df: pd.DataFrame) -> int | None:
    """Run A's feature of the pair to open first: explained on both sides, else on one, else the first row."""
    if not len(df):
        return None
    has_a, has_b = df["explanation_a"].notna(), df["explanation_b"].notna()
    for keep in (has_a & has_b, has_a | has_b):
        if keep.any():
            return int(df.loc[keep, "feature_a"].iloc[0])
    return int(df["feature_a"].iloc[0])


def feature_to_open(requested: int | None, shown: pd.DataFrame, d_sae: int, refiltered: bool = False) -> int:
    """Run A's feature to open: the requested one (even outside the filtered list, when typed), else the first
    shown pair (see first_pair); a filter change that hides the open pair also moves to the first shown pair."""
    valid = requested is not None and 0 <= requested < d_sae
    hidden = refiltered and len(shown) and requested not in set(shown["feature_a"].tolist())
    if valid and not hidden:
        return int(requested)
    first = first_pair(shown)
    return 0 if first is None else first


def partner_in_a(match: Match, feature_b: int) -> int | None:
    """Run A's feature matched to one feature of run B (None when that feature is unmatched)."""
    if not 0 <= feature_b < len(match.partner_b):
        raise InputError(f"feature {feature_b} is out of range for {match.run_b} (d_sae={len(match.partner_b)})")
    partner = int(match.partner_b[feature_b])
    return None if partner < 0 else partner


def neighbours(order: Sequence[int], current: int | None) -> tuple[int | None, int | None]:
    """The previous and next item around `current` in a list (the first item is 'next' when current is absent)."""
    items = list(order)
    if not items:
        return None, None
    if current not in items:
        return None, items[0]
    i = items.index(current)
    return (items[i - 1] if i > 0 else None), (items[i + 1] if i + 1 < len(items) else None)


def _check_feature(run: Run, feature: int) -> int:
    if not 0 <= int(feature) < run.d_sae:
        raise InputError(f"feature {feature} is out of range for {run.name} (d_sae={run.d_sae})")
    return int(feature)


def candidates(run_a: Run, feature: int, run_b: Run, k: int = 5, sign: str = "signed") -> pd.DataFrame:
    """The k features of run_b whose decoder directions are closest (cosine) to one feature of run_a."""
    check_sign(sign)
    feature = _check_feature(run_a, feature)
    if run_a.d_in != run_b.d_in:
        raise InputError(f"{run_a.name} (d_in={run_a.d_in}) and {run_b.name} (d_in={run_b.d_in}) cannot be compared")
    a_n, _ = normalize_rows(run_a.decoder[feature:feature + 1].to(torch.float64))
    b_n, _ = normalize_rows(run_b.decoder.to(torch.float64))
    s = (b_n @ a_n[0]).abs() if sign == "abs" else b_n @ a_n[0]
    k = min(int(k), run_b.d_sae)
    vals, idx = torch.topk(s, k)
    return pd.DataFrame({"rank": np.arange(1, k + 1), "feature": idx.numpy(), "cosine": vals.numpy()})


def pair_of(match: Match, feature_a: int) -> tuple[int | None, float]:
    """Run B's partner of one run-A feature and its score (None, NaN when unmatched)."""
    if not 0 <= feature_a < len(match.partner_a):
        raise InputError(f"feature {feature_a} is out of range for {match.run_a} (d_sae={len(match.partner_a)})")
    partner = int(match.partner_a[feature_a])
    return (None, float("nan")) if partner < 0 else (partner, float(match.score_a[feature_a]))


def across_runs(comparison: Comparison, reference: int, feature: int) -> pd.DataFrame:
    """One feature of the reference run followed into every run of the comparison through its direct match."""
    ref_run = comparison.runs[reference]
    feature = _check_feature(ref_run, feature)
    rows = []
    for j, run in enumerate(comparison.runs):
        if j == reference:
            rows.append({"run": run.name, "index": j, "feature": feature, "score": 1.0, "reference": True})
            continue
        partner, score = pair_of(match_for(comparison.matches, reference, j), feature)
        rows.append({"run": run.name, "index": j, "feature": partner, "score": score, "reference": False})
    return pd.DataFrame(rows)
