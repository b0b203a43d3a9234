"""How well an explanation predicts its feature: detection and fuzzing by an LLM judge, embedding AUROC, delphi import.

Examples follow delphi's scorers. Activating examples are a feature's stored contexts spread evenly over its
activation bins (the top contexts and each lower quantile bin). Non-activating examples are random windows of
held-out activations on which the feature is zero on every token; without activations, other features' top contexts
stand in and the result says negatives="other-features". Detection and fuzzing scores are balanced accuracies of the
judge's 0/1 answers (activating = positive); the embedding score is the AUROC of the cosine between the explanation
and each example. Scores are stored per feature and method in `scores.parquet` beside the run.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from saecore.cache import atomic_write_parquet, content_key, read_parquet
from saecore.errors import InputError, LoadError
from saecore.explain import (AnswerCache, ExplainerConfig, ExplainerError, Job, even_quota, read_feature_contexts,
                             run_jobs)
from saecore.features import Context, feature_file
from saecore.loaders.tensors import load_json
from saecore.prompts import (SCORE_VERSION, detection_messages, fuzzing_messages, mark_tokens, parse_binary_list,
                             plain_text, select_contexts)
from saecore.text import plural

Progress = Callable[[int, int, str], None]

SCORES_FILE = "scores.parquet"
METHODS = ("detection", "fuzzing", "embedding")
LLM_METHODS = ("detection", "fuzzing")
SCORE_COLUMNS = ("feature", "method", "score", "n_examples", "n_failed", "explainer", "explanation_hash", "source",
                 "negatives", "scored_at")
TOP_BIN = "top"
RANDOM_BIN = "random"
NEGATIVES_STORE = "store"
NEGATIVES_OTHER = "other-features"
NEGATIVES_NONE = "none"
# Below this fraction of answered examples a judge's score is NaN.
MIN_ANSWERED = 0.5
# delphi's scorer folders and the method each one measures.
DELPHI_SCORERS = {"detection": "detection", "fuzz": "fuzzing", "fuzzing": "fuzzing"}
DELPHI_FILE = re.compile(r"^(?P<module>.*)_latent(?P<index>\d+)\.txt$")


class ScoringError(ExplainerError):
    """The judge endpoint stopped a scoring job; finished features are stored, a rerun continues from the cache."""


# --------------------------------------------------------------------------- metrics

def balanced_accuracy(truth: Sequence[bool], predicted: Sequence[bool | int]) -> float:
    """Mean of the true-positive and true-negative rates; NaN when either class is absent."""
    t = np.asarray(truth, dtype=bool)
    p = np.asarray(predicted, dtype=bool)
    if t.shape != p.shape:
        raise InputError(f"balanced_accuracy needs equal lengths, got {t.size} and {p.size}")
    if t.all() or not t.any():
        return math.nan
    return float((p[t].mean() + (~p[~t]).mean()) / 2)


def auroc(truth: Sequence[bool], scores: Sequence[float]) -> float:
    """Area under the ROC curve of `scores` for the positives in `truth` (ties count half); NaN when a class is absent."""
    from scipy.stats import rankdata

    t = np.asarray(truth, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if t.shape != s.shape:
        raise InputError(f"auroc needs equal lengths, got {t.size} and {s.size}")
    n_pos = int(t.sum())
    n_neg = t.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(s)  # average ranks: a tie between a positive and a negative counts one half
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def score_answers(truth: Sequence[bool], predicted: Sequence[int | None],
                  min_answered: float = MIN_ANSWERED) -> tuple[float, int]:
    """Balanced accuracy over the answered examples and the number unanswered; NaN when too few were answered."""
    answered = [i for i, p in enumerate(predicted) if p is not None]
    n_failed = len(predicted) - len(answered)
    if not answered or len(answered) < min_answered * len(predicted):
        return math.nan, n_failed
    return balanced_accuracy([truth[i] for i in answered], [predicted[i] for i in answered]), n_failed


def explanation_hash(text: str) -> str:
    """A short digest of an explanation's text, to tell which explanation a score belongs to."""
    return hashlib.blake2b(str(text).strip().encode("utf-8"), digest_size=8).hexdigest()


# --------------------------------------------------------------------------- examples

@dataclass(frozen=True)
class Example:
    """One excerpt shown to a scorer: tokens, the feature's activation on each, and whether the feature fires."""

    tokens: tuple[str, ...]
    activations: tuple[float, ...]
    activating: bool
    bin: str  # "top", a quantile bin like "0.25-0.50", "random" (store window) or "feature <j>" (another's context)
    row: int | None = None  # first store row of a random window

    @property
    def text(self) -> str:
        return plain_text(self.tokens)


@dataclass(frozen=True)
class ExampleSet:
    """The activating and non-activating examples of one feature, and where the non-activating ones came from."""

    feature: int
    activating: tuple[Example, ...]
    non_activating: tuple[Example, ...]
    negatives: str  # "store", "other-features" or "none"

    @property
    def examples(self) -> tuple[Example, ...]:
        return self.activating + self.non_activating


@dataclass(frozen=True)
class SamplingConfig:
    """How many examples of each kind a feature gets, and how they are drawn."""

    n_activating: int = 10
    n_non_activating: int = 10
    skip_shown: bool = True  # leave out the contexts an explain prompt shows (when enough others remain)
    shown_top: int = ExplainerConfig.n_top
    shown_quantile: int = ExplainerConfig.n_quantile
    seed: int = 0
    max_store_rows: int = 200_000  # rows of the activation store encoded to find windows where a feature is zero
    tries: int = 64  # random windows tried per wanted non-activating example

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def context_bin(context: Context) -> str:
    """The activation bin a stored context was drawn from: 'top' or its quantile bin."""
    if context.kind == "top":
        return TOP_BIN
    return str(context.extra.get("quantile_bin") or context.kind)


def activating_examples(contexts: Sequence[Context], n: int, rng: np.random.Generator,
                        skip: Sequence[Context] = ()) -> list[Example]:
    """Up to n contexts that fire, spread evenly over their activation bins (strongest bin first), random within."""
    firing = [c for c in contexts if any(a > 0 for a in c.activations)]
    skipped = {id(c) for c in skip}
    rest = [c for c in firing if id(c) not in skipped]
    pool = rest if len(rest) >= max(1, n // 2) else firing
    groups: dict[str, list[Context]] = {}
    for c in pool:
        groups.setdefault(context_bin(c), []).append(c)
    names = sorted(groups, key=lambda b: (b != TOP_BIN, [-float(x) for x in re.findall(r"[\d.]+", b)] or [0.0], b))
    quota = even_quota([len(groups[b]) for b in names], n)
    out = []
    for b, q in zip(names, quota):
        for i in np.sort(rng.choice(len(groups[b]), size=q, replace=False)):
            c = groups[b][int(i)]
            out.append(Example(tuple(c.tokens), tuple(float(a) for a in c.activations), True, b))
    return out


@dataclass(frozen=True)
class StoreCodes:
    """Where each feature fires on the first `n_rows` rows of an activation store: rows grouped by feature."""

    store_path: str
    n_rows: int
    indptr: np.ndarray = field(repr=False)  # (d_sae + 1,): feature j fires on rows[indptr[j]:indptr[j + 1]]
    rows: np.ndarray = field(repr=False)  # int32, ascending within each feature

    def firing_rows(self, feature: int) -> np.ndarray:
        return self.rows[self.indptr[feature]:self.indptr[feature + 1]]

    @property
    def nbytes(self) -> int:
        return int(self.indptr.nbytes + self.rows.nbytes)


@torch.no_grad()
def encode_store(sae, store, max_rows: int = 200_000, batch_size: int = 4096,
                 device: str | torch.device = "cpu") -> StoreCodes:
    """Which features of a single-model `sae` fire on each of the first max_rows rows of `store` (support only)."""
    n = min(int(store.n_tokens), int(max_rows))
    d_sae = int(sae.cfg.d_sae)
    dev = torch.device(device)
    sae = sae.to(dev).eval()
    rows, feats = [], []
    for i in range(0, n, batch_size):
        j = min(i + batch_size, n)
        x = torch.from_numpy(np.asarray(store.rows(i, j), dtype=np.float32)).to(dev)
        nz = torch.nonzero(sae.encode(x)[0] > 0)
        rows.append((nz[:, 0] + i).to(torch.int32).cpu().numpy())
        feats.append(nz[:, 1].to(torch.int32).cpu().numpy())
    r = np.concatenate(rows) if rows else np.zeros(0, np.int32)
    f = np.concatenate(feats) if feats else np.zeros(0, np.int32)
    order = np.argsort(f, kind="stable")  # rows come out ascending, and a stable sort keeps them so per feature
    indptr = np.concatenate([[0], np.cumsum(np.bincount(f, minlength=d_sae))]).astype(np.int64)
    return StoreCodes(str(store.path), n, indptr, r[order])


_CODES: OrderedDict[tuple, StoreCodes] = OrderedDict()
_CODES_KEPT = 2
_CODES_LOCK = threading.Lock()


def run_store_codes(run_path: str | Path, store, max_rows: int = 200_000,
                    device: str | torch.device = "cpu") -> StoreCodes:
    """encode_store with the run's own encoder, kept in memory for the last two runs so each is encoded once."""
    from saecore.train import load_sae

    run_path = Path(run_path)
    weights = run_path / "sae_weights.safetensors"
    stamp = (weights.stat().st_size, weights.stat().st_mtime_ns) if weights.is_file() else None
    key = (str(run_path.resolve()), stamp, str(Path(store.path).resolve()), int(store.n_tokens), int(max_rows))
    with _CODES_LOCK:
        if key in _CODES:
            _CODES.move_to_end(key)
            return _CODES[key]
    sae = load_sae(run_path, device=device)
    if sae.cfg.d_in != store.d_model:
        raise InputError(f"{run_path}: the SAE expects d_in={sae.cfg.d_in}, the activations in {store.path} have "
                         f"{store.d_model}")
    codes = encode_store(sae, store, max_rows, device=device)
    with _CODES_LOCK:
        _CODES[key] = codes
        while len(_CODES) > _CODES_KEPT:
            _CODES.popitem(last=False)
    return codes


def store_negatives(codes: StoreCodes, store, feature: int, lengths: Sequence[int], rng: np.random.Generator,
                    tries: int = 64) -> list[Example]:
    """Random windows of the given lengths, each inside one document, on which `feature` is zero on every token."""
    fires = codes.firing_rows(int(feature))
    docs, tokens, vocab = store.docs, store.tokens, store.token_strings
    used: set[int] = set()
    out = []
    for length in lengths:
        if length < 1 or length > codes.n_rows:
            continue
        starts = rng.integers(0, codes.n_rows - length + 1, size=tries)
        window = starts[:, None] + np.arange(length)
        one_doc = np.all(docs[window] == docs[starts][:, None], axis=1)
        at = np.searchsorted(fires, starts)
        silent = (at >= len(fires)) | (fires[np.minimum(at, max(len(fires) - 1, 0))] >= starts + length)
        pick = next((int(starts[i]) for i in np.nonzero(one_doc & silent)[0] if int(starts[i]) not in used), None)
        if pick is None:
            continue
        used.add(pick)
        out.append(Example(tuple(vocab[int(t)] for t in tokens[pick:pick + length]), (0.0,) * length, False,
                           RANDOM_BIN, pick))
    return out


def other_feature_negatives(others: Mapping[int, Sequence[Context]], feature: int, n: int,
                            rng: np.random.Generator) -> list[Example]:
    """n top contexts of randomly chosen other features (the feature's own activation on them is unknown, shown as 0)."""
    candidates = np.array(sorted(f for f, cs in others.items() if f != feature and any(c.kind == "top" for c in cs)))
    if not len(candidates) or n <= 0:
        return []
    out = []
    for f in rng.choice(candidates, size=n, replace=len(candidates) < n):
        tops = [c for c in others[int(f)] if c.kind == "top"]
        c = tops[int(rng.integers(len(tops)))]
        out.append(Example(tuple(c.tokens), (0.0,) * len(c.tokens), False, f"feature {int(f)}"))
    return out


def build_examples(feature: int, contexts: Sequence[Context], sampling: SamplingConfig = SamplingConfig(),
                   codes: StoreCodes | None = None, store=None,
                   others: Mapping[int, Sequence[Context]] | None = None) -> ExampleSet:
    """The examples of one feature (deterministic in sampling.seed and the feature): store negatives when given."""
    rng = np.random.default_rng([int(sampling.seed), int(feature)])
    shown = select_contexts(contexts, sampling.shown_top, sampling.shown_quantile) if sampling.skip_shown else []
    positives = activating_examples(contexts, sampling.n_activating, rng, shown)
    n_neg = sampling.n_non_activating if positives else 0
    if codes is not None and store is not None:
        lengths = [len(positives[i % len(positives)].tokens) for i in range(n_neg)]
        negatives, kind = store_negatives(codes, store, feature, lengths, rng, sampling.tries), NEGATIVES_STORE
    elif others:
        negatives, kind = other_feature_negatives(others, feature, n_neg, rng), NEGATIVES_OTHER
    else:
        negatives, kind = [], NEGATIVES_NONE
    return ExampleSet(int(feature), tuple(positives), tuple(negatives), kind)


# --------------------------------------------------------------------------- fuzzing highlights

def span_count(activations: Sequence[float]) -> int:
    """How many runs of consecutive active tokens a window has (each is one << >> mark)."""
    active = [a > 0 for a in activations]
    return sum(1 for i, a in enumerate(active) if a and (i == 0 or not active[i - 1]))


def random_marks(tokens: Sequence[str], n_marks: int, rng: np.random.Generator) -> list[int]:
    """n_marks random positions of non-blank tokens, no two adjacent (so each is its own mark), ascending."""
    chosen: list[int] = []
    for p in rng.permutation(len(tokens)):
        if len(chosen) >= n_marks:
            break
        if plain_text([tokens[p]]) and all(abs(int(p) - q) > 1 for q in chosen):
            chosen.append(int(p))
    return sorted(chosen)


def highlighted(example: Example, n_marks: int, rng: np.random.Generator) -> str:
    """An activating example with its active tokens marked, or a non-activating one with n_marks random marks."""
    if example.activating:
        return mark_tokens(example.tokens, example.activations)
    acts = [0.0] * len(example.tokens)
    for p in random_marks(example.tokens, max(n_marks, 1), rng):
        acts[p] = 1.0
    return mark_tokens(example.tokens, acts)


def fuzzing_texts(examples: ExampleSet, rng: np.random.Generator) -> list[str]:
    """Every example of the set as a highlighted excerpt; the i-th negative gets as many marks as the i-th positive."""
    marks = [span_count(e.activations) for e in examples.activating] or [1]
    texts = [highlighted(e, 0, rng) for e in examples.activating]
    texts += [highlighted(e, marks[i % len(marks)], rng) for i, e in enumerate(examples.non_activating)]
    return texts


# --------------------------------------------------------------------------- results and storage

@dataclass
class FeatureScore:
    """One feature's score by one method, and how many examples it rests on."""

    feature: int
    method: str
    score: float
    n_examples: int
    n_failed: int
    explainer: str
    explanation_hash: str
    source: str
    negatives: str
    error: str | None = None  # why there is no score at all (not stored)
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class ScoreReport:
    """The outcome of one scoring job."""

    results: list[FeatureScore] = field(default_factory=list)
    wall_seconds: float = 0.0
    requests: int = 0
    stored_to: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def n_cached(self) -> int:
        return sum(r.cached for r in self.results)

    def frame(self, scored_at: str | None = None) -> pd.DataFrame:
        """The stored form of the results that have a score row (NaN scores included: they say too few answers)."""
        return scores_frame([r for r in self.results if r.ok], scored_at)

    def summary(self) -> dict[str, dict]:
        """Per method: features scored, mean score over the non-NaN ones, NaN count, examples failed."""
        out: dict[str, dict] = {}
        for r in self.results:
            s = out.setdefault(r.method, {"features": 0, "scored": 0, "nan": 0, "failed_examples": 0, "errors": {},
                                          "mean": math.nan, "_sum": 0.0})
            s["features"] += 1
            if not r.ok:
                s["errors"][r.error] = s["errors"].get(r.error, 0) + 1
                continue
            s["failed_examples"] += r.n_failed
            if math.isnan(r.score):
                s["nan"] += 1
            else:
                s["scored"] += 1
                s["_sum"] += r.score
        for s in out.values():
            s["mean"] = round(s.pop("_sum") / s["scored"], 4) if s["scored"] else None
        return out

    def to_json(self) -> dict:
        return {"methods": self.summary(), "requests": self.requests, "cached": self.n_cached,
                "wall_seconds": round(self.wall_seconds, 3), "stored_to": self.stored_to, "notes": list(self.notes)}


def scores_path(run_path: str | Path) -> Path:
    """`<run folder>/scores.parquet`, or `<file>.scores.parquet` beside a single-file run."""
    return feature_file(run_path, SCORES_FILE)


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    out = df[list(SCORE_COLUMNS)].copy()
    for c in ("feature", "n_examples", "n_failed"):
        out[c] = out[c].astype("int64")
    out["score"] = out["score"].astype("float64")
    for c in ("method", "explainer", "explanation_hash", "source", "negatives", "scored_at"):
        out[c] = out[c].astype(str).astype(object)
    return out.reset_index(drop=True)


def scores_frame(results: Sequence[FeatureScore], scored_at: str | None = None) -> pd.DataFrame:
    """Results as rows of the scores file."""
    when = scored_at or datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = [(r.feature, r.method, r.score, r.n_examples, r.n_failed, r.explainer, r.explanation_hash, r.source,
             r.negatives, when) for r in results]
    return _typed(pd.DataFrame.from_records(rows, columns=list(SCORE_COLUMNS)))


def read_scores(run_path: str | Path) -> pd.DataFrame:
    """The scores stored with a run (one row per feature, method, explainer and source); empty when there are none."""
    path = scores_path(run_path)
    if not path.is_file():
        return scores_frame([])
    df, _ = read_parquet(path)
    missing = [c for c in SCORE_COLUMNS if c not in df.columns]
    if missing:
        raise LoadError(path, f"missing columns {', '.join(missing)}")
    return _typed(df)


_SCORES_LOCK = threading.Lock()


def store_scores(run_path: str | Path, df: pd.DataFrame) -> Path:
    """Merge score rows into the run's scores file atomically: rows for the same feature, method, explainer and
    source are replaced, all others kept."""
    new = _typed(df)
    key = ["feature", "method", "explainer", "source"]
    if new.duplicated(key).any():
        dup = new[new.duplicated(key, keep=False)].iloc[0]
        raise InputError(f"scores to store hold feature {dup.feature} / {dup.method} / {dup.source} twice")
    with _SCORES_LOCK:
        old = read_scores(run_path)
        keys = set(map(tuple, new[key].itertuples(index=False)))
        old = old[[tuple(k) not in keys for k in old[key].itertuples(index=False)]]
        merged = pd.concat([old, new], ignore_index=True) if len(old) else new
        merged = merged.sort_values(["method", "source", "feature"], kind="stable").reset_index(drop=True)
        return atomic_write_parquet(scores_path(run_path), merged, {"columns": list(SCORE_COLUMNS)})


def scores_table(run_path: str | Path, explainer: str | None = None) -> pd.DataFrame:
    """One row per feature: its explainer, a column per method (the latest score), and whether the explanation
    changed since (stale). explainer None: the explainer with the most scored features."""
    from saecore.explanations import read_explanations

    df = read_scores(run_path)
    columns = ["feature", "explainer", *METHODS, "stale"]
    if df.empty:
        return pd.DataFrame({c: pd.Series([], dtype="float64" if c in METHODS else object) for c in columns})
    if explainer is None:
        counts = df.groupby("explainer")["feature"].nunique()
        explainer = sorted(counts.index, key=lambda e: (-counts[e], e))[0]
    df = df[df["explainer"] == explainer]
    if df.empty:
        raise InputError(f"no scores for explainer {explainer!r}")
    latest = df.sort_values("scored_at", kind="stable").drop_duplicates(["feature", "method"], keep="last")
    table = latest.pivot(index="feature", columns="method", values="score").reindex(columns=list(METHODS))
    table.columns.name = None
    table = table.reset_index()
    expl = read_explanations(run_path)
    expl = expl[expl["explainer"] == explainer]
    current = {int(f): explanation_hash(t) for f, t in zip(expl["feature"], expl["explanation"])}
    hashes = latest.groupby("feature")["explanation_hash"].apply(set)
    table["stale"] = [any(h and f in current and h != current[f] for h in hashes[f]) for f in table["feature"]]
    table.insert(1, "explainer", explainer)
    return table[columns].astype({"feature": "int64"})


# --------------------------------------------------------------------------- LLM judge

def score_config(config: ExplainerConfig, batch_size: int) -> ExplainerConfig:
    """The request settings for a judge answering batch_size examples: room for the list, no stop at a newline."""
    return replace(config, max_tokens=max(config.max_tokens, 4 * batch_size + 8), stop=())


def score_key(method: str, config: ExplainerConfig, messages: list[dict], request: dict | None = None) -> str:
    """Cache key of one judge answer: method, prompt version, model, endpoint, settings and the prompt itself."""
    return content_key("score", SCORE_VERSION, method, config.model, config.base_url.rstrip("/"), config.temperature,
                       config.max_tokens, list(config.stop), messages, *([request] if request else []))


def answer_format(n: int) -> dict:
    """Request fields that make a grammar-capable server (llama.cpp) answer exactly n 0/1 values as a JSON list.

    Small local judges rarely keep to the asked length on their own; a constrained answer always parses.
    """
    schema = {"type": "array", "items": {"type": "integer", "enum": [0, 1]}, "minItems": n, "maxItems": n}
    return {"response_format": {"type": "json_object", "schema": schema}}


@dataclass(frozen=True)
class Batch:
    """One judge prompt: which feature and method, and the examples (by index into the set) it shows."""

    feature: int
    method: str
    index: int
    examples: tuple[int, ...]


def judge_jobs(examples: ExampleSet, explanation: str, method: str, config: ExplainerConfig, batch_size: int = 5,
               seed: int = 0, constrain: bool = False) -> list[Job]:
    """The prompts scoring one feature's explanation by `method`: the examples shuffled and cut into batches."""
    if method not in LLM_METHODS:
        raise InputError(f"method must be one of {', '.join(LLM_METHODS)}, got {method!r}")
    rng = np.random.default_rng([int(seed), int(examples.feature), LLM_METHODS.index(method)])
    everything = examples.examples
    texts = [e.text for e in everything] if method == "detection" else fuzzing_texts(examples, rng)
    order = rng.permutation(len(everything))
    jobs = []
    for b, start in enumerate(range(0, len(order), batch_size)):
        idx = tuple(int(i) for i in order[start:start + batch_size])
        shown = [texts[i] for i in idx]
        messages = (detection_messages if method == "detection" else fuzzing_messages)(explanation, shown)
        request = answer_format(len(idx)) if constrain else None
        jobs.append(Job(Batch(examples.feature, method, b, idx), messages, score_key(method, config, messages, request),
                        _BinaryParser(len(idx)), f"no list of {len(idx)} answers", request))
    return jobs


@dataclass(frozen=True)
class _BinaryParser:
    n: int

    def __call__(self, text: str | None) -> tuple[int, ...] | None:
        return parse_binary_list(text, self.n)


# --------------------------------------------------------------------------- scoring a run

def _explained(run_path: str | Path, explainer: str | None) -> pd.DataFrame:
    from saecore.explanations import pick_explainer, read_explanations

    df = pick_explainer(read_explanations(run_path), explainer)
    if df.empty:
        raise InputError(f"{run_path}: no explanations stored for this run; explain or import them first")
    return df


def embedding_scores(sets: Mapping[int, ExampleSet], explanations: Mapping[int, str], embedder, explainer: str,
                     progress: Progress | None = None) -> list[FeatureScore]:
    """AUROC of cosine(explanation, example text) for activating vs non-activating examples, per feature."""
    features = [f for f in sets if f in explanations]
    texts = list(dict.fromkeys([explanations[f] for f in features] + [e.text for f in features
                                                                       for e in sets[f].examples]))
    vectors = embedder.embed(texts, progress=progress) if texts else np.zeros((0, 0), np.float32)
    at = {t: i for i, t in enumerate(texts)}
    source = f"embedding:{embedder.name}"
    out = []
    for f in features:
        s = sets[f]
        exp = vectors[at[explanations[f]]].astype(np.float64)
        cos = [float(vectors[at[e.text]].astype(np.float64) @ exp) for e in s.examples]
        score = auroc([e.activating for e in s.examples], cos)
        out.append(FeatureScore(f, "embedding", score, len(s.examples), 0, explainer,
                                explanation_hash(explanations[f]), source, s.negatives))
    return out


def score_run(run_path: str | Path, methods: Sequence[str] = LLM_METHODS, features: Sequence[int] | None = None,
              explainer: str | None = None, client=None, config: ExplainerConfig | None = None, store=None,
              embedder=None, sampling: SamplingConfig = SamplingConfig(), batch_size: int = 5,
              cache: AnswerCache | None = None, retry_failed: bool = False, progress: Progress | None = None,
              save: bool = True, store_every: int = 25, device: str | torch.device = "cpu",
              constrain: bool = False) -> ScoreReport:
    """Score the stored explanations of a run's features (all explained ones, or `features`) by each method.

    `store` (an ActivationStore of held-out activations) gives non-activating examples on which the feature is zero;
    without it, other features' contexts stand in. LLM methods need `client` and `config`, embedding an `embedder`;
    `constrain` asks the judge for a schema-constrained answer (see answer_format).
    Scores are merged into the run's scores file every `store_every` features and at the end, also when the
    endpoint stops the job (a ScoringError then says how many were stored; a rerun answers the rest from the cache).
    """
    t0 = time.monotonic()
    methods = list(dict.fromkeys(methods))
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise InputError(f"methods must be among {', '.join(METHODS)}, got {', '.join(bad) or 'none'}")
    if any(m in LLM_METHODS for m in methods) and (client is None or config is None):
        raise InputError("detection and fuzzing need an LLM client and config")
    if "embedding" in methods and embedder is None:
        raise InputError("the embedding score needs an embedder")
    explained = _explained(run_path, explainer)
    explainer_name = str(explained["explainer"].iloc[0])
    texts = {int(f): str(t) for f, t in zip(explained["feature"], explained["explanation"])}
    wanted = sorted(texts) if features is None else [int(f) for f in dict.fromkeys(features)]
    report = ScoreReport()
    for f in wanted:
        if f not in texts:
            report.results += [FeatureScore(f, m, math.nan, 0, 0, explainer_name, "", "", NEGATIVES_NONE,
                                            "no explanation") for m in methods]
    wanted = [f for f in wanted if f in texts]
    if store is not None:
        contexts = read_feature_contexts(run_path, wanted)
        codes = run_store_codes(run_path, store, sampling.max_store_rows, device)
        others = None
    else:
        contexts = read_feature_contexts(run_path)
        codes, others = None, contexts
        report.notes.append("no activations given: non-activating examples are other features' top contexts")
    sets: dict[int, ExampleSet] = {}
    for f in wanted:
        s = build_examples(f, contexts.get(f, []), sampling, codes, store, others)
        if not s.activating:
            report.results += [FeatureScore(f, m, math.nan, 0, 0, explainer_name, explanation_hash(texts[f]), "",
                                            s.negatives, "no activating contexts") for m in methods]
            continue
        if not s.non_activating:
            report.results += [FeatureScore(f, m, math.nan, len(s.activating), 0, explainer_name,
                                            explanation_hash(texts[f]), "", s.negatives,
                                            "no non-activating examples found") for m in methods]
            continue
        sets[f] = s
    unsaved: list[FeatureScore] = []

    def flush() -> None:
        if save and unsaved:
            report.stored_to = str(store_scores(run_path, scores_frame(unsaved)))
            unsaved.clear()

    def finish(r: FeatureScore) -> None:
        report.results.append(r)
        unsaved.append(r)
        if len(unsaved) >= store_every:
            flush()

    try:
        if "embedding" in methods:
            for r in embedding_scores(sets, texts, embedder, explainer_name, progress):
                finish(r)
            flush()
        llm = [m for m in methods if m in LLM_METHODS]
        if llm:
            _judge(sets, texts, llm, client, score_config(config, batch_size), explainer_name, batch_size,
                   sampling.seed, cache if cache is not None else AnswerCache(), retry_failed, progress, finish, report,
                   constrain)
    except ExplainerError as exc:
        flush()
        done = sum(r.ok and r.method in LLM_METHODS for r in report.results)
        where = f" in {report.stored_to}" if report.stored_to else ""
        raise ScoringError(f"{exc}; {plural(done, 'feature score')} finished before that and stored{where}; "
                           f"run again to continue (answers so far are cached)") from None
    finally:
        flush()  # also on Ctrl-C: finished features are never lost
        report.wall_seconds = time.monotonic() - t0
    return report


def _judge(sets: Mapping[int, ExampleSet], texts: Mapping[int, str], methods: Sequence[str], client,
           config: ExplainerConfig, explainer: str, batch_size: int, seed: int, cache: AnswerCache,
           retry_failed: bool, progress: Progress | None, finish: Callable[[FeatureScore], None],
           report: ScoreReport, constrain: bool = False) -> None:
    """Ask the judge about every batch; a feature's score is finished as soon as all its batches are answered."""
    jobs: list[Job] = []
    expected: dict[tuple[int, str], int] = {}
    for f, s in sets.items():
        for m in methods:
            part = judge_jobs(s, texts[f], m, config, batch_size, seed, constrain)
            expected[(f, m)] = len(part)
            jobs += part
    answers: dict[tuple[int, str], list] = {}
    source = f"llm:{config.model}"

    def on_answer(job: Job, a) -> None:
        batch: Batch = job.item  # type: ignore[assignment]
        key = (batch.feature, batch.method)
        answers.setdefault(key, []).append((batch, a))
        report.requests += 0 if a.cached else a.attempts
        if len(answers[key]) < expected[key]:
            return
        s = sets[batch.feature]
        everything = s.examples
        got = answers.pop(key)
        predicted: list[int | None] = [None] * len(everything)
        for b, ans in got:
            if ans.ok:
                for i, p in zip(b.examples, ans.value):
                    predicted[i] = int(p)
        score, n_failed = score_answers([e.activating for e in everything], predicted)
        finish(FeatureScore(batch.feature, batch.method, score, len(everything), n_failed, explainer,
                            explanation_hash(texts[batch.feature]), source, s.negatives,
                            cached=all(ans.cached for _, ans in got)))

    run_jobs(jobs, client, config, cache, retry_failed, progress, on_answer, "batch")


# --------------------------------------------------------------------------- delphi scores

@dataclass
class DelphiImport:
    """What an import of delphi score files read and stored."""

    source: str
    module: str | None
    scores: pd.DataFrame
    files: dict[str, int]  # scorer folder -> files read
    skipped: dict[str, int]  # scorer folders that are not detection or fuzzing -> files
    warnings: list[str] = field(default_factory=list)
    stored_to: str | None = None

    def to_json(self) -> dict:
        by_method = {m: {"features": int((self.scores["method"] == m).sum()),
                         "mean": (round(float(v), 4) if not math.isnan(v := self.scores.loc[self.scores["method"] == m,
                                                                                            "score"].mean()) else None)}
                     for m in sorted(set(self.scores["method"]))}
        return {"source": self.source, "module": self.module, "files": self.files, "skipped": self.skipped,
                "methods": by_method, "warnings": self.warnings, "stored_to": self.stored_to}


def _flag(value: object) -> bool | None:
    """A record's truth or prediction as a bool: bools, 0/1 and probabilities (>= 0.5 is 1); None when missing."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return float(value) >= 0.5
    raise ValueError(f"{value!r} is not a boolean or 0/1")


def delphi_record(record: object, where: str) -> tuple[bool, bool | None]:
    """(activating, prediction) of one delphi example record; prediction None when the judge gave no answer.

    Accepted fields: truth in `activating` (delphi) or `ground_truth` (sae-auto-interp); the judge's answer in
    `prediction` (bool, 0/1 or a probability), else derived from `correct` (bool).
    """
    if not isinstance(record, dict):
        raise LoadError(where, f"expected an object per example, got {type(record).__name__}")
    try:
        truth = _flag(record.get("activating", record.get("ground_truth")))
        if truth is None:
            raise ValueError("no 'activating' or 'ground_truth' field")
        prediction = _flag(record.get("prediction"))
        if prediction is None:
            correct = _flag(record.get("correct"))
            prediction = None if correct is None else (truth if correct else not truth)
    except ValueError as exc:
        raise LoadError(where, str(exc)) from None
    return truth, prediction


def read_delphi_file(path: Path) -> tuple[float, int, int]:
    """(balanced accuracy, examples, examples without an answer) of one delphi score file."""
    data = load_json(path)
    if not isinstance(data, list):
        raise LoadError(path, f"expected a JSON list of example records, got {type(data).__name__}")
    pairs = [delphi_record(r, f"{path}[{i}]") for i, r in enumerate(data)]
    score, n_failed = score_answers([t for t, _ in pairs], [None if p is None else int(p) for _, p in pairs])
    return score, len(pairs), n_failed


def _delphi_folders(path: Path) -> list[Path]:
    """Scorer folders under a delphi results folder, its scores/ folder, or the scorer folder itself."""
    path = Path(path)
    if not path.is_dir():
        raise LoadError(path, "no such folder")
    root = path / "scores" if (path / "scores").is_dir() else path
    folders = [d for d in sorted(root.iterdir()) if d.is_dir() and any(DELPHI_FILE.match(p.name) for p in d.iterdir())]
    if not folders and any(DELPHI_FILE.match(p.name) for p in root.iterdir()):
        folders = [root]
    if not folders:
        raise LoadError(path, "no delphi score files (scores/<scorer>/<module>_latent<N>.txt)")
    return folders


def _delphi_explanation(folder: Path, name: str) -> str:
    """The hash of the delphi explanation the scores in `folder` were made for, when delphi's explanations/ is there."""
    for root in (folder.parent.parent, folder.parent):
        p = root / "explanations" / name
        if p.is_file():
            body = p.read_text(encoding="utf-8")
            try:
                text = json.loads(body)
            except json.JSONDecodeError:
                text = body
            return explanation_hash(text) if isinstance(text, str) else ""
    return ""


def import_delphi_scores(source: str | Path, run_path: str | Path, module: str | None = None,
                         explainer: str = "delphi", store: bool = True) -> DelphiImport:
    """Read delphi's per-latent score files (detection and fuzz scorers) and store their balanced accuracies.

    source: a delphi results folder, its scores/ folder, or one scorer folder. module: the hookpoint to read
    when the files cover several. Latent indices outside the run's d_sae are errors naming the file.
    """
    from saecore.loaders import load_meta

    src = Path(source)
    d_sae = load_meta(run_path).d_sae
    folders = _delphi_folders(src)
    files: dict[Path, list[tuple[str, int, Path]]] = {}
    modules: set[str] = set()
    skipped: dict[str, int] = {}
    for d in folders:
        matched = [(m["module"], int(m["index"]), p) for p in sorted(d.iterdir()) if (m := DELPHI_FILE.match(p.name))]
        if d.name not in DELPHI_SCORERS:
            skipped[d.name] = len(matched)
            continue
        files[d] = matched
        modules |= {m for m, _, _ in matched}
    if not files:
        raise LoadError(src, f"no detection or fuzz scores (found scorers {', '.join(skipped)})")
    if module is None and len(modules) > 1:
        raise InputError(f"{src}: scores for {len(modules)} modules ({', '.join(sorted(modules))}); choose one")
    if module is not None and module not in modules:
        raise InputError(f"{src}: no scores for module {module!r}; found {', '.join(sorted(modules))}")
    module = module or next(iter(modules))
    results, counts = [], {}
    label = f"delphi:{src.resolve()}"
    for d, matched in files.items():
        method = DELPHI_SCORERS[d.name]
        mine = [(i, p) for m, i, p in matched if m == module]
        counts[d.name] = len(mine)
        for index, p in mine:
            if index >= d_sae:
                raise LoadError(p, f"latent {index} is outside the run's d_sae {d_sae}; are these scores for another SAE?")
            score, n, n_failed = read_delphi_file(p)
            results.append(FeatureScore(index, method, score, n, n_failed, explainer, _delphi_explanation(d, p.name),
                                        label, "delphi"))
    by_key = {(r.feature, r.method): r for r in results}  # "fuzz" and "fuzzing" folders both present: last wins
    report = DelphiImport(str(src), module, scores_frame(list(by_key.values())), counts, skipped)
    if len(by_key) < len(results):
        report.warnings.append("several scorer folders measure the same method; the last one read was kept")
    if skipped:
        report.warnings.append(f"not imported (not detection or fuzzing): {', '.join(skipped)}")
    if store and len(report.scores):
        report.stored_to = str(store_scores(run_path, report.scores))
    return report


def well_scored(explanations: pd.DataFrame, scores: pd.DataFrame | None, method: str, min_score: float) -> pd.DataFrame:
    """The explanations of features whose current explanation scores at least min_score by `method`.

    `scores` is a scores_table frame; features without a score, or scored for an older explanation, are left out.
    """
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if scores is None or method not in scores.columns:
        return explanations.iloc[0:0]
    ok = scores[(scores[method] >= min_score) & ~scores["stale"].astype(bool)]["feature"]
    return explanations[explanations["feature"].isin(set(ok.astype(int)))]
