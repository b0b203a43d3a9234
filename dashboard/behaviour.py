"""Cached access to what lies beyond decoder cosine: activation agreement, encoder matching, scores, orphans, widths."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard.data import (comparison_key, explanation_scores, explanations_version, files_mtime, path_signature,
                            with_progress)
from saecore.consistency import Comparison
from saecore.errors import SaecoreError
from saecore.metrics import SHARED_THRESHOLD
from saecore.runs import Run
from saecore.workspace import StoredActivations, Workspace

MAX_AGREEMENTS = 8


@st.cache_resource(show_spinner=False)
def _agreements() -> OrderedDict:
    return OrderedDict()


def store_for(ws: Workspace, runs: list[Run]) -> StoredActivations | None:
    """The workspace's stored activations that every run reads, or None."""
    return ws.activations_for(*(r.meta for r in runs))


def family_agreement(runs: list[Run], comp: Comparison, store: StoredActivations, sign: str, dead: str):
    """Activation agreement of every matched pair of every run pair (encoded once per run), kept in memory."""
    from saecore.agreement import family_agreement as measure

    key = (comparison_key(runs, sign, dead), store.path, files_mtime(Path(store.path)))
    cache = _agreements()
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    result = with_progress(
        f"Encoding {store.n_tokens:,} held-out tokens with {len(runs)} runs…",
        lambda progress: measure([r.meta.path for r in runs], store.path, matches=comp.matches, sign=sign, dead=dead,
                                 progress=progress))
    cache[key] = result
    while len(cache) > MAX_AGREEMENTS:
        cache.popitem(last=False)
    return result


@st.cache_data(show_spinner="Matching encoders…", max_entries=64)
def _encoders(path_a: str, path_b: str, signatures: tuple, threshold: float, sign: str, dead: str):
    from saecore.agreement import compare_encoders

    try:
        return compare_encoders(path_a, path_b, threshold=threshold, sign=sign, dead=dead), None
    except (SaecoreError, OSError, ValueError) as exc:
        return None, str(getattr(exc, "problem", exc))


def encoders(run_a: Run, run_b: Run, threshold: float, sign: str, dead: str):
    """(EncoderDecoder, None) for two runs, or (None, why encoders cannot be compared)."""
    sig = (path_signature(run_a.meta.path), path_signature(run_b.meta.path))
    return _encoders(run_a.meta.path, run_b.meta.path, sig, threshold, sign, dead)


def agreement_table(comp: Comparison, agreement, threshold: float, sign: str, dead: str) -> tuple[pd.DataFrame, list[str]]:
    """One row per seed pair (saecore.agreement.agreement_frame) with cached encoder matchings; plus problems."""
    from saecore.agreement import agreement_frame

    found, problems = {}, []
    for i, j in comp.matches:
        a, b = comp.runs[i], comp.runs[j]
        found[i, j], why = encoders(a, b, threshold, sign, dead)
        if found[i, j] is None:
            problems.append(f"{a.name} ↔ {b.name}: {why}")
    return agreement_frame(comp.names, comp.matches, found, agreement), problems


def _number(value: float | None, fmt: str = ".3f") -> str:
    return "undefined" if value is None or value != value else f"{value:{fmt}}"


def pair_numbers(agreement, run_a: Run, run_b: Run, feature: int, sign: str, dead: str) -> dict[str, tuple[str, str]]:
    """The open pair's activation correlation, firing overlap and encoder cosine: name -> (value, help)."""
    out: dict[str, tuple[str, str]] = {}
    one = None if agreement is None else agreement.of_feature(feature)
    if one is not None:
        out["activation correlation"] = (_number(one["pearson"]), "Pearson r of the two features' activations over "
                                         "the same held-out tokens (undefined when one never fires)")
        out["firing overlap (Jaccard)"] = (_number(one["jaccard"]), "tokens where both fire / tokens where either fires")
    enc, _ = encoders(run_a, run_b, SHARED_THRESHOLD, sign, dead)
    if enc is not None and 0 <= feature < len(enc.encoder_cosine) and enc.decoder_partner[feature] >= 0:
        out["encoder cosine"] = (_number(float(enc.encoder_cosine[feature])),
                                 "cosine of the two features' encoder directions (same pair as the decoder match)")
    return out


def has_scores(path: str, method: str) -> bool:
    """Whether any feature of the run has a score by this method."""
    scores = explanation_scores(path)
    return scores is not None and method in scores.columns and bool(scores[method].notna().any())


@st.cache_resource(show_spinner=False)
def _orphan_reports() -> OrderedDict:
    return OrderedDict()


def orphans(comp: Comparison, threshold: float, sign: str, dead: str):
    """Orphan tables of every run (frequency, explanation and explanation scores joined), kept in memory."""
    from saecore.orphans import find_orphans, side_table
    from saecore.scoring import METHODS

    runs = comp.runs
    versions = tuple(explanations_version(r.meta.path) for r in runs)
    key = (comparison_key(runs, sign, dead), float(threshold), versions)
    cache = _orphan_reports()
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    sides = []
    for r in runs:
        scores = explanation_scores(r.meta.path)
        methods = [m for m in METHODS if scores is not None and m in scores.columns and scores[m].notna().any()]
        sides.append(side_table(r, scores[["feature", *methods]] if methods else None))
    report = find_orphans(comp, threshold, sides)
    report.info["dashboard_key"] = key  # identifies the inputs, for results derived from this report
    cache[key] = report
    while len(cache) > MAX_AGREEMENTS:
        cache.popitem(last=False)
    return report


@st.cache_resource(show_spinner="Finding each latent's nearest partners…", max_entries=16)
def _partners(_a: Run, _b: Run, key: tuple, k: int, sign: str):
    from saecore.consistency import MatchCache
    from saecore.partners import find_partners

    return find_partners(_a, _b, k=k, sign=sign, cache=MatchCache())


def partners(run_a: Run, run_b: Run, k: int, sign: str):
    """Top-k partners in the larger run of every latent of the smaller one (with the 1-to-1 match beside them)."""
    return _partners(run_a, run_b, (run_a.fingerprint, run_b.fingerprint, run_a.name, run_b.name), k, sign)


@st.cache_resource(show_spinner=False, max_entries=32)
def _orphan_groups(_report, key: tuple, columns: tuple) -> pd.DataFrame:
    from saecore.orphans import comparison_frame

    return comparison_frame(_report, dict(columns))


def orphan_groups(report, columns: dict) -> pd.DataFrame:
    """Orphan vs shared on each column (bootstrap CIs), computed once per set of inputs."""
    return _orphan_groups(report, report.info["dashboard_key"], tuple(columns.items()))


@st.cache_data(show_spinner="Correlating the three views…", max_entries=32)
def axes_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Spearman correlations (bootstrap CIs) between decoder cosine, activation r and explanation similarity."""
    from saecore.semantic import axes_correlations

    return pd.DataFrame([{"comparison": k, **axes_correlations(df)} for k, df in frames.items()])
