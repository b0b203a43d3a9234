"""How well an explanation predicts its feature: detection and fuzzing by an LLM judge, and embedding AUROC.

The examples come from saecore.examples. Detection and fuzzing scores are balanced accuracies of the judge's 0/1
answers (activating = positive); the embedding score is the AUROC of the cosine between the explanation and each
example. Scores are stored per feature and method in `scores.parquet` beside the run (delphi's own scores are
read by saecore.delphi).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from saecore.cache import atomic_write_parquet, content_key, read_parquet
from saecore.errors import InputError, LoadError
from saecore.explain import (AnswerCache, ExplainerConfig, ExplainerError, Job, read_feature_contexts,
                             run_jobs)
from saecore.examples import (NEGATIVES_NONE, ExampleSet, SamplingConfig,
                              build_examples, fuzzing_texts, run_store_codes)
from saecore.features import feature_file
from saecore.prompts import (SCORE_VERSION, detection_messages, fuzzing_messages, parse_binary_list)
from saecore.text import plural

Progress = Callable[[int, int, str], None]

SCORES_FILE = "scores.parquet"
METHODS = ("detection", "fuzzing", "embedding")
LLM_METHODS = ("detection", "fuzzing")
SCORE_COLUMNS = ("feature", "method", "score", "n_examples", "n_failed", "explainer", "explanation_hash", "source",
                 "negatives", "scored_at")
# Below this fraction of answered examples a judge's score is NaN.
MIN_ANSWERED = 0.5


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


def score_summary(scores: pd.DataFrame | None) -> dict[str, str]:
    """Mean score and number of scored features per method, as '0.481 (200)'; '–' where a method has none."""
    out = {}
    for method in METHODS:
        values = scores[method].dropna() if scores is not None and method in scores.columns else pd.Series(dtype=float)
        out[method] = f"{values.mean():.3f} ({len(values):,})" if len(values) else "–"
    return out
