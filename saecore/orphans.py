"""Orphan latents: directions of one seed that no other seed of the family learned (nearest cosine below a threshold).

A latent's best score against another run is the cosine with its nearest neighbour there. The
1-to-1 Match already holds it: the nearest neighbour is either the matched partner or, when that is
not the closest, the runner-up (the best candidate other than the partner), so
best = max(matched score, runner-up score), with no extra pass over the cosine matrix.

A latent is an **orphan** when its best score is below the threshold against every other run, and
**shared** when it is at least the threshold against every other run; the rest are **partial**.
Dead latents (zero-norm decoder rows) have no direction: they are marked, counted and left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from saecore.errors import InputError
from saecore.matching import Match
from saecore.metrics import SHARED_THRESHOLD, match_for

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from saecore.consistency import Comparison, MatchCache, Progress
    from saecore.runs import Run

ORPHAN, SHARED, PARTIAL, DEAD = "orphan", "shared", "partial", "dead"
STATUSES = (ORPHAN, SHARED, PARTIAL, DEAD)
DEFAULT_BOOT = 2000
# Bootstrap draws are made in chunks of about this many indices, so memory stays bounded for large runs.
BOOT_CHUNK_ELEMENTS = 1 << 22


def _num(x: float | None) -> float | None:
    """A JSON-safe float: None for NaN/inf or None."""
    return None if x is None or not np.isfinite(x) else float(x)


def nearest_in_other(match: Match) -> tuple[np.ndarray, np.ndarray]:
    """(index, cosine) of each A feature's nearest B feature: max(matched score, runner-up score); -1/NaN when none."""
    partner, score = match.partner_a, np.asarray(match.score_a, dtype=np.float64)
    ru, ru_score = match.runner_up_a, np.asarray(match.runner_up_score_a, dtype=np.float64)
    take_partner = (partner >= 0) & ~(ru_score > score)
    index = np.where(take_partner, partner, ru)
    best = np.fmax(score, ru_score)
    index = np.where(np.isnan(best), -1, index)
    return index.astype(np.int64), best


def classify(best: np.ndarray, threshold: float = SHARED_THRESHOLD, dead: np.ndarray | None = None) -> np.ndarray:
    """Status per latent from its (n, R−1) best scores: orphan (all below), shared (all at least), else partial; dead wins."""
    best = np.asarray(best, dtype=np.float64).reshape(len(best), -1)
    above = best >= threshold  # NaN (no live candidate) counts as below
    status = np.full(len(best), PARTIAL, dtype=object)
    if best.shape[1]:
        status[above.all(axis=1)] = SHARED
        status[(~above).all(axis=1)] = ORPHAN
    if dead is not None:
        status[np.asarray(dead, dtype=bool)] = DEAD
    return status


def row_min_mean(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, min and mean over the non-NaN entries (NaN where a row has none), without warnings."""
    valid = ~np.isnan(values)
    n = valid.sum(axis=1)
    mins = np.fmin.reduce(values, axis=1) if values.shape[1] else np.full(len(values), np.nan)
    means = np.where(n > 0, np.where(valid, values, 0.0).sum(axis=1) / np.maximum(n, 1), np.nan)
    return mins, means


@dataclass
class RunOrphans:
    """One run's latents against the other runs of its family: the per-latent table and the counts."""

    run: str
    others: list[str]
    threshold: float
    table: pd.DataFrame

    def count(self, status: str) -> int:
        """How many latents have this status (orphan, shared, partial, dead)."""
        return int((self.table["status"] == status).sum())

    @property
    def n_latents(self) -> int:
        return int(len(self.table))

    @property
    def n_live(self) -> int:
        return self.n_latents - self.count(DEAD)

    @property
    def n_orphan(self) -> int:
        return self.count(ORPHAN)

    def orphans(self) -> pd.DataFrame:
        """The orphan rows of the table, least matched first."""
        return self.table[self.table["orphan"]].sort_values("best_min", kind="stable")

    @property
    def orphan_fraction(self) -> float:
        """Orphans among live latents (dead ones are not counted either way)."""
        return self.n_orphan / self.n_live if self.n_live else float("nan")

    def to_json(self) -> dict:
        """Counts and fractions (the table itself goes to CSV)."""
        counts = {s: self.count(s) for s in STATUSES}
        return {"run": self.run, "others": list(self.others), "threshold": self.threshold, "n_latents": self.n_latents,
                "n_live": self.n_live, "counts": counts, "orphan_fraction": _num(self.orphan_fraction),
                "shared_fraction": _num(counts[SHARED] / self.n_live) if self.n_live else None,
                "mean_best_min": _num(float(self.table["best_min"].mean()))}


def orphan_table(comparison: Comparison, run: int, threshold: float = SHARED_THRESHOLD,
                 side: pd.DataFrame | None = None) -> RunOrphans:
    """Every latent of one run: best score and nearest latent per other run, their min/mean, status, orphan flag,
    and the columns of `side` (feature + frequency, explanation, scores...) joined on feature."""
    import pandas as pd

    runs = comparison.runs
    others = [j for j in range(len(runs)) if j != run]
    d_sae = runs[run].d_sae
    dead = runs[run].dead_mask
    best = np.full((d_sae, len(others)), np.nan)
    nearest = np.full((d_sae, len(others)), -1, dtype=np.int64)
    for t, j in enumerate(others):
        index, score = nearest_in_other(match_for(comparison.matches, run, j))
        best[:, t] = np.where(dead, np.nan, score)
        nearest[:, t] = np.where(dead, -1, index)
    status = classify(best, threshold, dead)
    best_min, best_mean = row_min_mean(best)
    cols: dict[str, np.ndarray] = {"feature": np.arange(d_sae), "status": status, "orphan": status == ORPHAN,
                                   "dead": dead, "best_min": best_min, "best_mean": best_mean}
    cols.update({f"best:{runs[j].name}": best[:, t] for t, j in enumerate(others)})
    cols.update({f"nearest:{runs[j].name}": nearest[:, t] for t, j in enumerate(others)})
    table = pd.DataFrame(cols)
    if side is not None and len(side.columns) > 1:
        table = join_side(table, side)
    return RunOrphans(runs[run].name, [runs[j].name for j in others], float(threshold), table)


def join_side(table: pd.DataFrame, side: pd.DataFrame) -> pd.DataFrame:
    """Left-join per-feature side data on 'feature' (features missing there get NaN); clashing names are refused."""
    if "feature" not in side.columns:
        raise InputError(f"per-feature data needs a 'feature' column; got {', '.join(map(str, side.columns))}")
    clash = [c for c in side.columns if c != "feature" and c in table.columns]
    if clash:
        raise InputError(f"per-feature data repeats columns of the orphan table: {', '.join(clash)}")
    if side["feature"].duplicated().any():
        raise InputError("per-feature data holds some feature twice")
    side = side.astype({"feature": "int64"})
    return table.merge(side, on="feature", how="left", validate="one_to_one")


def side_table(run: Run, scores: pd.DataFrame | None = None, explainer: str | None = None) -> pd.DataFrame:
    """A run's per-feature side data: frequency (stored statistics, else the run's own sparsity), explanation
    (one per feature) when stored, and the given explanation scores (feature + one column per method)."""
    import pandas as pd

    from saecore.errors import LoadError
    from saecore.explanations import read_explanations
    from saecore.features import read_stats
    from saecore.semantic import one_per_feature

    out = pd.DataFrame({"feature": np.arange(run.d_sae, dtype=np.int64)})
    try:
        stats = read_stats(run.meta.path)
        out = out.merge(stats[["feature", "frequency"]].astype({"feature": "int64"}), on="feature", how="left")
    except LoadError:
        if run.frequencies is not None and len(run.frequencies) == run.d_sae:
            out["frequency"] = np.asarray(run.frequencies, dtype=np.float64)
    try:
        expl, _ = one_per_feature(read_explanations(run.meta.path), explainer)
    except LoadError:
        expl = pd.Series(dtype=object)
    if len(expl):
        out["explanation"] = out["feature"].map(expl)
    if scores is not None:
        out = join_side(out, scores)
    return out


@dataclass
class GroupComparison:
    """Orphan vs shared latents on one per-feature column: sizes, means, medians, bootstrap CI of the
    difference of means (orphan − shared) and the two-sided Mann-Whitney U test."""

    label: str
    column: str
    n_orphan: int
    n_shared: int
    n_partial: int
    n_dead: int
    n_missing: int
    mean_orphan: float
    mean_shared: float
    median_orphan: float
    median_shared: float
    diff: float
    ci_low: float
    ci_high: float
    mann_whitney_u: float
    p_value: float
    confidence: float = 0.95
    n_boot: int = DEFAULT_BOOT
    seed: int = 0

    def to_json(self) -> dict:
        out: dict = {}
        for k, v in self.__dict__.items():
            out[k] = _num(v) if isinstance(v, float) else v
        return out


def bootstrap_diff_ci(x: np.ndarray, y: np.ndarray, n_boot: int = DEFAULT_BOOT, confidence: float = 0.95,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(x) − mean(y), resampling each group with replacement; NaN when a group is empty."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if not len(x) or not len(y) or n_boot < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    step = max(1, BOOT_CHUNK_ELEMENTS // max(len(x), len(y)))
    for s in range(0, n_boot, step):
        b = min(step, n_boot - s)
        mx = x[rng.integers(0, len(x), size=(b, len(x)))].mean(axis=1)
        my = y[rng.integers(0, len(y), size=(b, len(y)))].mean(axis=1)
        diffs[s:s + b] = mx - my
    alpha = (1.0 - confidence) / 2
    lo, hi = np.quantile(diffs, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def mann_whitney(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(U of x, two-sided p) from scipy; NaN when a group is empty."""
    from scipy.stats import mannwhitneyu

    if not len(x) or not len(y):
        return float("nan"), float("nan")
    res = mannwhitneyu(x, y, alternative="two-sided")
    return float(res.statistic), float(res.pvalue)


def compare_groups(table: pd.DataFrame, column: str, label: str = "", n_boot: int = DEFAULT_BOOT,
                   confidence: float = 0.95, seed: int = 0) -> GroupComparison:
    """Compare orphan and shared latents of an orphan table on `column`; dead latents and missing values are left out and counted."""
    if column not in table.columns:
        raise InputError(f"no column {column!r} to compare; the table has {', '.join(map(str, table.columns))}")
    values = np.asarray(table[column], dtype=np.float64)
    status = np.asarray(table["status"])
    has = np.isfinite(values)
    x = values[(status == ORPHAN) & has]
    y = values[(status == SHARED) & has]
    in_groups = np.isin(status, (ORPHAN, SHARED))
    lo, hi = bootstrap_diff_ci(x, y, n_boot, confidence, seed)
    u, p = mann_whitney(x, y)

    def stat(f, v: np.ndarray) -> float:
        return float(f(v)) if len(v) else float("nan")

    m_x, m_y = stat(np.mean, x), stat(np.mean, y)
    return GroupComparison(label, column, len(x), len(y), int((status == PARTIAL).sum()), int((status == DEAD).sum()),
                           int((in_groups & ~has).sum()), m_x, m_y, stat(np.median, x), stat(np.median, y),
                           m_x - m_y, lo, hi, u, p, confidence, n_boot, seed)


@dataclass
class OrphanReport:
    """Orphans of every run of a family at one threshold, and how the family was matched."""

    runs: list[str]
    threshold: float
    sign: str
    dead: str
    per_run: list[RunOrphans]
    cached: int = 0
    info: dict = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """All runs' tables stacked, 'run' first; one best:/nearest: column per run of the family (empty for the row's own run)."""
        import pandas as pd

        df = pd.concat([r.table.assign(run=r.run) for r in self.per_run], ignore_index=True)
        per_other = [f"{p}:{name}" for p in ("best", "nearest") for name in self.runs]
        head = ["run", "feature", "status", "orphan", "dead", "best_min", "best_mean"]
        rest = [c for c in df.columns if c not in head and c not in per_other]
        df = df[head + per_other + rest]
        return df.astype({f"nearest:{name}": "Int64" for name in self.runs})

    def compare(self, column: str, n_boot: int = DEFAULT_BOOT, seed: int = 0) -> list[GroupComparison]:
        """Orphan vs shared on `column` per run that has it, then pooled over those runs (label 'pooled')."""
        having = [r for r in self.per_run if column in r.table]
        if not having:
            raise InputError(f"no run has a column {column!r} to compare")
        out = [compare_groups(r.table, column, r.run, n_boot, seed=seed) for r in having]
        stacked = _stack([r.table[["status", column]] for r in having])
        out.append(compare_groups(stacked, column, "pooled", n_boot, seed=seed))
        return out

    def has_column(self, column: str) -> bool:
        """Whether some run's table has this column."""
        return any(column in r.table for r in self.per_run)

    def to_json(self, compare: Sequence[str] = ()) -> dict:
        """Counts per run, and orphan-vs-shared comparisons for the named columns (those some run has)."""
        out = {"runs": list(self.runs), "threshold": self.threshold, "sign": self.sign, "dead": self.dead,
               "cached": self.cached, "per_run": [r.to_json() for r in self.per_run], "info": self.info,
               "comparisons": {}}
        for c in compare:
            if self.has_column(c):
                out["comparisons"][c] = [g.to_json() for g in self.compare(c)]
        return out


def _stack(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Frames stacked with a fresh index."""
    import pandas as pd

    return pd.concat(list(frames), ignore_index=True)


def find_orphans(comparison: Comparison, threshold: float = SHARED_THRESHOLD,
                 side: Sequence[pd.DataFrame | None] | None = None) -> OrphanReport:
    """Orphan tables of every run of a Comparison; `side` gives per-run feature data (one frame or None per run)."""
    runs = comparison.runs
    if side is not None and len(side) != len(runs):
        raise InputError(f"got side data for {len(side)} runs, but the comparison has {len(runs)}")
    per_run = [orphan_table(comparison, i, threshold, side[i] if side is not None else None) for i in range(len(runs))]
    first = next(iter(comparison.matches.values()))
    return OrphanReport([r.name for r in runs], float(threshold), first.sign, first.dead, per_run, comparison.cached)


def family_orphans(runs: Sequence[Run], threshold: float = SHARED_THRESHOLD, sign: str = "signed",
                   dead: str = "exclude", device: str | torch.device = "auto", method: str = "auto",
                   cache: MatchCache | None = None, progress: Progress | None = None,
                   scores: Sequence[pd.DataFrame | None] | None = None, side_data: bool = True) -> OrphanReport:
    """Match all pairs of a family (cached) and find its orphans; side_data reads frequency and explanations from
    each run's folder, `scores` adds explanation scores per run (feature + one column per method)."""
    import time

    from saecore.consistency import compare_runs

    if scores is not None and len(scores) != len(runs):
        raise InputError(f"got scores for {len(scores)} runs, but there are {len(runs)} runs")
    t0 = time.perf_counter()
    comparison = compare_runs(list(runs), sign, dead, device, method, cache, progress)
    t1 = time.perf_counter()
    side = list(scores) if scores is not None else None
    if side_data:
        side = [side_table(r, scores[i] if scores is not None else None) for i, r in enumerate(runs)]
    report = find_orphans(comparison, threshold, side)
    report.info["seconds"] = {"matching": t1 - t0, "tables": time.perf_counter() - t1}
    report.info["pw_mcc"] = _num(comparison.pw.mean)
    return report


# Display name and whether a log axis suits it, for per-feature measures with a known meaning.
KNOWN_MEASURES: dict[str, tuple[str, bool]] = {
    "frequency": ("activation frequency", True),
    "detection": ("detection score", False),
    "fuzzing": ("fuzzing score", False),
    "embedding": ("embedding score", False),
}
# Columns of an orphan table that describe the matching itself, never compared between groups.
CORE_COLUMNS = ("feature", "status", "orphan", "dead", "best_min", "best_mean")


def compared_columns(report: OrphanReport) -> dict[str, tuple[str, bool]]:
    """Numeric per-feature columns worth comparing (some finite value in some run): column -> (display name, log axis)."""
    import pandas as pd

    out: dict[str, tuple[str, bool]] = {}
    for r in report.per_run:
        for c in r.table.columns:
            if c in CORE_COLUMNS or c in out or c.startswith(("best:", "nearest:")):
                continue
            col = r.table[c]
            if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col) \
                    and np.isfinite(col.to_numpy(dtype=np.float64, na_value=np.nan)).any():
                out[c] = KNOWN_MEASURES.get(c, (c, False))
    return out


def run_counts_frame(report: OrphanReport) -> pd.DataFrame:
    """One row per run, then 'all runs': latents, dead, orphan, shared, partial and the orphan/shared fractions of live latents."""
    import pandas as pd

    rows = [{"run": r.run, "latents": r.n_latents, **{s: r.count(s) for s in (DEAD, ORPHAN, SHARED, PARTIAL)}}
            for r in report.per_run]
    total = {"run": "all runs", **{k: sum(row[k] for row in rows) for k in ("latents", DEAD, ORPHAN, SHARED, PARTIAL)}}
    df = pd.DataFrame([*rows, total])
    live = (df["latents"] - df[DEAD]).to_numpy(dtype=np.float64)
    with np.errstate(all="ignore"):
        df["orphan_fraction"] = np.where(live > 0, df[ORPHAN] / live, np.nan)
        df["shared_fraction"] = np.where(live > 0, df[SHARED] / live, np.nan)
    return df


def comparison_frame(report: OrphanReport, columns: Sequence[str] | dict[str, tuple[str, bool]],
                     n_boot: int = DEFAULT_BOOT, seed: int = 0) -> pd.DataFrame:
    """Orphan vs shared on each column, one row per run and one pooled: sizes, means, medians, the difference of
    means with its bootstrap CI (also as text, 'diff [low, high]') and the Mann-Whitney p-value."""
    import pandas as pd

    names = columns if isinstance(columns, dict) else {c: KNOWN_MEASURES.get(c, (c, False)) for c in columns}
    rows = []
    for column, (name, _) in names.items():
        for g in report.compare(column, n_boot, seed):
            rows.append({"measure": name, "run": "all runs" if g.label == "pooled" else g.label,
                         "n_orphan": g.n_orphan, "n_shared": g.n_shared, "mean_orphan": g.mean_orphan,
                         "mean_shared": g.mean_shared, "median_orphan": g.median_orphan,
                         "median_shared": g.median_shared, "diff": g.diff, "ci_low": g.ci_low, "ci_high": g.ci_high,
                         "difference": f"{g.diff:.3g} [{g.ci_low:.3g}, {g.ci_high:.3g}]", "p_value": g.p_value})
    return pd.DataFrame(rows)


def group_values(report: OrphanReport, column: str) -> dict[str, dict[str, np.ndarray]]:
    """run -> {'orphan': values, 'shared': values} of one column (runs lacking it are left out), for box plots."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for r in report.per_run:
        if column in r.table:
            values = r.table[column].to_numpy(dtype=np.float64, na_value=np.nan)
            out[r.run] = {g: values[(r.table["status"] == g).to_numpy()] for g in (ORPHAN, SHARED)}
    return out
