"""Cached access to saecore from the pages: workspaces, runs, comparisons, chance levels and optional feature data."""

from __future__ import annotations

import importlib
import json
import os
from collections import OrderedDict
from pathlib import Path

import pandas as pd
import streamlit as st

from saecore.access import check_inside
from saecore.cache import atomic_write_json, content_key, default_cache_dir
from saecore.consistency import Comparison, MatchCache, compare_runs
from saecore.errors import SaecoreError
from saecore.loaders import load_run
from saecore.metrics import chance_level
from saecore.runs import Run, RunMeta
from saecore.workspace import Workspace, scan

MAX_COMPARISONS = 16


def path_signature(path: str) -> tuple:
    """Names, sizes and modification times of a run's files: a changed file gives a new cache key."""
    p = Path(path)
    items = sorted(p.iterdir()) if p.is_dir() else [p]
    out = []
    for f in items:
        try:
            s = f.stat()
        except OSError:
            continue
        out.append((f.name, s.st_size, s.st_mtime_ns))
    return tuple(out)


@st.cache_data(ttl=30, show_spinner=False)
def workspace(root: str) -> Workspace:
    """Every run under an (already access-checked) root; rescanned at most every 30 s."""
    return scan(root)


@st.cache_resource(max_entries=64, show_spinner=False)
def _run(path: str, signature: tuple, name: str) -> Run:
    return load_run(path, name=name, with_encoder=False)  # no page reads encoders; they would double the memory held


def run(meta: RunMeta, root: str) -> Run:
    """A loaded run (weights read once per content), refused if its files point outside the workspace."""
    check_inside(meta.path, root)
    return _run(meta.path, path_signature(meta.path), meta.name)


@st.cache_resource(show_spinner=False)
def _comparisons() -> "OrderedDict[tuple, Comparison]":
    return OrderedDict()


def comparison_key(runs: list[Run], sign: str, dead: str) -> tuple:
    return (tuple(r.fingerprint for r in runs), tuple(r.name for r in runs), sign, dead)


def cached_comparison(runs: list[Run], sign: str, dead: str) -> Comparison | None:
    """A comparison already computed in this server process, or None."""
    return _comparisons().get(comparison_key(runs, sign, dead))


def with_progress(title: str, work):
    """Run `work(progress)` inside a status box with a progress bar, removed when the work is done."""
    slot = st.empty()
    with slot.status(title, expanded=True):
        bar = st.progress(0.0)

        def progress(done: int, total: int, message: str) -> None:
            bar.progress(min(done / max(total, 1), 1.0), text=message)

        result = work(progress)
    slot.empty()
    return result


def comparison(runs: list[Run], sign: str, dead: str, device: str = "auto") -> Comparison:
    """compare_runs keyed on the runs' content: the first time with a progress bar, then from memory."""
    key = comparison_key(runs, sign, dead)
    store = _comparisons()
    if key in store:
        store.move_to_end(key)
        return store[key]
    n_pairs = len(runs) * (len(runs) - 1) // 2
    result = with_progress(f"Matching {len(runs)} runs ({n_pairs} pairs)…", lambda progress: compare_runs(
        runs, sign=sign, dead=dead, device=device, cache=MatchCache(), progress=progress))
    store[key] = result
    while len(store) > MAX_COMPARISONS:
        store.popitem(last=False)
    return result


@st.cache_data(show_spinner="Computing the chance level…")
def chance(d_sae_a: int, d_in: int, d_sae_b: int, sign: str) -> float:
    """Mean MCC of random dictionaries of these shapes; kept on disk, so each shape is computed once per machine."""
    draws = 3 if max(d_sae_a, d_sae_b) <= 1024 else 1
    path = default_cache_dir() / "chance" / f"{content_key('chance', d_sae_a, d_in, d_sae_b, sign, draws)}.json"
    try:
        return float(json.loads(path.read_text())["mean"])
    except (OSError, ValueError, KeyError):
        pass
    value = chance_level(d_sae_a, d_in, d_sae_b, sign=sign, draws=draws)
    atomic_write_json(path, {"mean": value.mean, "values": list(value.values), "d_sae_a": d_sae_a, "d_in": d_in,
                             "d_sae_b": d_sae_b, "sign": sign})
    return value.mean


def optional(module: str, name: str):
    """A function of an optional saecore module, or None when that module is not installed in this build."""
    try:
        mod = importlib.import_module(f"saecore.{module}")
    except ImportError:
        return None
    return getattr(mod, name, None)


def files_mtime(path: Path) -> float:
    """Newest modification time of a file or of the files in a folder (0 when unreadable): part of cache keys."""
    try:
        return max((f.stat().st_mtime for f in path.iterdir()), default=0.0) if path.is_dir() else path.stat().st_mtime
    except OSError:
        return 0.0


def _read(module: str, name: str, what: str, *args) -> tuple[object | None, str | None]:
    """(saecore.<module>.<name>(*args), None), or (None, why not): a missing module or a file it cannot read."""
    read = optional(module, name)
    if read is None:
        return None, f"{what} are not available in this build"
    try:
        return read(*args), None
    except (SaecoreError, OSError, ValueError) as exc:
        return None, str(getattr(exc, "problem", exc))


@st.cache_data(show_spinner=False, max_entries=256)
def _stats(path: str, mtime: float) -> tuple[pd.DataFrame | None, str | None]:
    return _read("features", "read_stats", "feature statistics", path)


def stats(path: str) -> tuple[pd.DataFrame | None, str | None]:
    """(per-feature statistics, None) or (None, why they are not available)."""
    return _stats(path, files_mtime(Path(path)))


@st.cache_data(show_spinner=False, max_entries=512)
def _contexts(path: str, feature: int, mtime: float) -> tuple[list | None, str | None]:
    return _read("features", "read_contexts", "contexts", path, feature)


def contexts(path: str, feature: int) -> tuple[list | None, str | None]:
    """(top-activating contexts of one feature, None) or (None, why not)."""
    return _contexts(path, int(feature), files_mtime(Path(path)))


def explanations_version(path: str) -> float:
    p = Path(path)
    return files_mtime(p) if p.is_dir() else files_mtime(p.parent)


@st.cache_data(show_spinner=False, max_entries=256)
def _explanations(path: str, mtime: float) -> tuple[pd.DataFrame | None, str | None]:
    df, why = _read("explanations", "read_explanations", "explanations", path)
    if why is None and (df is None or not len(df)):
        return None, "no explanations for this run"
    return df, why


def explanations(path: str) -> tuple[pd.DataFrame | None, str | None]:
    """(explanations table, None) or (None, why not)."""
    return _explanations(path, explanations_version(path))


@st.cache_data(show_spinner=False, max_entries=256)
def _scores(path: str, mtime: float) -> pd.DataFrame | None:
    df, _ = _read("scoring", "scores_table", "explanation scores", path)
    return df if df is not None and len(df) else None


def explanation_scores(path: str) -> pd.DataFrame | None:
    """One row per scored feature (detection, fuzzing, embedding, stale), or None when the run has no scores."""
    return _scores(path, explanations_version(path))


def base_dir() -> Path:
    """The app folder (relative workspace paths are read from here)."""
    return Path(os.environ.get("SAECORE_APP_DIR") or Path(__file__).resolve().parents[1])


def runs(metas: list[RunMeta], root: str) -> tuple[list[Run], list[str]]:
    """Load several runs; the ones that fail are reported as messages instead of stopping the page."""
    out, problems = [], []
    for m in metas:
        try:
            out.append(run(m, root))
        except (SaecoreError, OSError) as exc:
            problems.append(f"{m.name}: {getattr(exc, 'problem', exc)}")
    return out, problems


@st.cache_resource(show_spinner="Loading the sentence embedding model…")
def embedder():
    """The sentence-transformers embedder (local model files only), or None when it is not available."""
    make = optional("semantic", "Embedder")
    if make is None:
        return None
    try:
        return make()
    except (SaecoreError, OSError, ImportError) as exc:
        st.session_state["_embedder_problem"] = str(exc)
        return None


def explanation_similarity(path_a: str, feature_a: int, path_b: str, feature_b: int | None) -> float | None:
    """Cosine of the two features' explanation embeddings, when both are explained and embeddings are available."""
    if feature_b is None:
        return None
    ea, _ = explanations(path_a)
    eb, _ = explanations(path_b)
    if ea is None or eb is None:
        return None
    ta = ea.loc[ea["feature"] == feature_a, "explanation"]
    tb = eb.loc[eb["feature"] == feature_b, "explanation"]
    if not len(ta) or not len(tb):
        return None
    return _text_similarity(str(ta.iloc[0]), str(tb.iloc[0]))


@st.cache_data(show_spinner=False, max_entries=4096)
def _text_similarity(a: str, b: str) -> float | None:
    emb = embedder()
    return None if emb is None else float(emb.similarity([a], [b])[0])


@st.cache_data(show_spinner="Embedding explanations and computing correlations…", max_entries=64)
def semantic_result(_match, key: tuple, path_a: str, path_b: str, scorer: str | None = None,
                    min_score: float | None = None):
    """compare_explanations for one match; `key` (fingerprints, options, file times) identifies the inputs.

    With a scorer and min_score only explanations scoring at least that much on both sides take part.
    """
    compare = optional("semantic", "compare_explanations")
    emb = embedder()
    if compare is None or emb is None:
        return None
    ea, _ = explanations(path_a)
    eb, _ = explanations(path_b)
    if scorer and min_score is not None:
        from saecore.scoring import well_scored

        ea = well_scored(ea, explanation_scores(path_a), scorer, min_score)
        eb = well_scored(eb, explanation_scores(path_b), scorer, min_score)
    return compare(_match, ea, eb, embedder=emb)


@st.cache_resource(show_spinner="Reading contexts…", max_entries=16)
def _all_contexts(path: str, mtime: float) -> dict | None:
    contexts, why = _read("features", "read_contexts", "contexts", path)
    if why is not None:
        return None
    grouped: dict[int, list] = {}
    for c in contexts:
        grouped.setdefault(int(c.feature), []).append(c)
    return grouped


def has_contexts(path: str) -> bool:
    """Whether the run has a contexts file (cheap: nothing is read)."""
    from saecore.features import CONTEXTS_FILE, feature_file

    return feature_file(path, CONTEXTS_FILE).is_file()


def feature_contexts(path: str) -> dict | None:
    """Every feature's contexts (feature -> list of Context), or None when the run has none."""
    if not has_contexts(path):
        return None
    return _all_contexts(path, files_mtime(Path(path)))


@st.cache_data(ttl=10, show_spinner=False)
def endpoint_status(url: str, key_fingerprint: str, _key: str | None):
    """An explainer endpoint's status, asked at most every 10 s per URL and key (the key itself is never cached)."""
    from saecore.explain import probe_endpoint

    return probe_endpoint(url, _key)

