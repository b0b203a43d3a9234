"""Cached access to what lies beyond decoder cosine: activation agreement, encoder matching, scores, orphans, widths."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard.data import files_mtime, comparison_key, path_signature, with_progress
from saecore.consistency import Comparison
from saecore.errors import SaecoreError
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
    """One row per seed pair: decoder and encoder MCC, shared fractions, activation r and Jaccard; plus problems."""
    rows, problems = [], []
    by_pair = {} if agreement is None else dict(zip(agreement.index, agreement.pairs))
    for (i, j), match in sorted(comp.matches.items()):
        a, b = comp.runs[i], comp.runs[j]
        row = {"pair": f"{a.name} ↔ {b.name}", "decoder_pw_mcc": match.mcc}
        enc, why = encoders(a, b, threshold, sign, dead)
        if enc is None:
            problems.append(f"{a.name} ↔ {b.name}: {why}")
        else:
            row.update({k: getattr(enc, k) for k in ("encoder_pw_mcc", "shared_decoder", "shared_encoder",
                                                     "shared_both", "same_partner")})
        agr = by_pair.get((i, j))
        if agr is not None:
            s = agr.summary()
            row.update({"pearson_mean": s["pearson_mean"], "jaccard_mean": s["jaccard_mean"]})
        rows.append(row)
    return pd.DataFrame(rows), problems
