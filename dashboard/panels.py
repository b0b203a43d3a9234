"""One feature of one run drawn as a panel: explanation, frequency, max activation and shaded top contexts."""

from __future__ import annotations

import math
import re

import streamlit as st

from dashboard import data
from saecore.highlight import context_html
from saecore.matching import SolveSummary
from saecore.report import Section
from saecore.runs import Run

N_CONTEXTS = 6
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def escape_markdown(text: str) -> str:
    """Text shown literally inside markdown (explanations come from files or a model, never trusted)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def solve_badge(summary: SolveSummary) -> str:
    """Markdown badge saying whether the matchings on view are proven optimal (green) or not (orange)."""
    if summary.proven:
        return f":green-badge[:material/verified: {summary.headline}]"
    return f":orange-badge[:material/warning: {summary.headline}]"


def _fmt_freq(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    return f"{value:.2e} ({value * 1e6:,.0f} per million tokens)"


SCORE_NAMES = {"detection": "detection", "fuzzing": "fuzzing", "embedding": "embedding AUROC"}


def score_text(row) -> str | None:
    """'detection 0.70 · fuzzing 0.55 · embedding AUROC 0.81' for the scores a feature has (None when none)."""
    parts = [f"{name} {row[m]:.2f}" for m, name in SCORE_NAMES.items() if m in row and row[m] == row[m]]
    if not parts:
        return None
    return " · ".join(parts) + (" (scored for an older explanation)" if bool(row.get("stale", False)) else "")


def feature_facts(run: Run, feature: int) -> dict:
    """Explanations, frequency, max activation and contexts of one feature, each None when not available."""
    stats, stats_why = data.stats(run.meta.path)
    row = None
    if stats is not None:
        match = stats[stats["feature"] == feature]
        row = match.iloc[0] if len(match) else None
    freq = float(row["frequency"]) if row is not None else (
        float(run.frequencies[feature]) if run.frequencies is not None else None)
    expl, expl_why = data.explanations(run.meta.path)
    texts = []
    if expl is not None:
        sub = expl[expl["feature"] == feature]
        texts = [(str(r.explanation), str(getattr(r, "explainer", "") or "")) for r in sub.itertuples()]
    ctx, ctx_why = data.contexts(run.meta.path, feature)
    scores = data.explanation_scores(run.meta.path)
    scored = None if scores is None else scores[scores["feature"] == feature]
    return {"scores": score_text(scored.iloc[0]) if scored is not None and len(scored) else None, "frequency": freq, "max_activation": float(row["max_activation"]) if row is not None else None,
            "explanations": texts, "explanations_why": expl_why, "contexts": ctx, "contexts_why": ctx_why,
            "stats_why": stats_why}


def feature_panel(run: Run, feature: int | None, heading: str) -> Section | None:
    """Draw the panel; returns the same content as a report section."""
    st.markdown(f"#### {heading}")
    if feature is None:
        st.info(f"No matched feature in {run.name}.")
        return None
    st.markdown(f"**Run** `{run.name}` · **feature** `{feature}`")
    facts = feature_facts(run, feature)
    if facts["explanations"]:
        for text, explainer in facts["explanations"]:
            st.markdown(f"> {escape_markdown(text)}")
            if explainer:
                st.caption(f"— {escape_markdown(explainer)}")
        if facts["scores"]:
            st.caption(f"Explanation scores: {facts['scores']}", help="balanced accuracy of an LLM judge telling "
                       "activating from non-activating examples (detection) or right from random highlights (fuzzing); "
                       "AUROC of the explanation's embedding similarity to activating vs non-activating examples; "
                       "0.5 is chance, 1 is perfect")
    else:
        st.caption(f"Explanation: {facts['explanations_why'] or 'none for this feature'}.")
    max_act = facts["max_activation"]
    st.markdown(f"Frequency: {_fmt_freq(facts['frequency'])}  \n"
                f"Max activation: {'unknown' if max_act is None else f'{max_act:.3g}'}")
    html_parts = []
    if facts["contexts"]:
        top = [c for c in facts["contexts"] if c.kind == "top"][:N_CONTEXTS] or facts["contexts"][:N_CONTEXTS]
        scale = max((c.max_activation for c in top), default=0.0)
        html_parts = [context_html(c.tokens, c.activations, scale) for c in top]
        st.markdown("Top-activating contexts (shading = activation):")
        st.html("".join(html_parts))
    else:
        why = facts["contexts_why"]
        st.caption(f"Contexts: not available for this run ({why})." if why else
                   "Contexts: none recorded for this feature (it did not fire on the sampled text).")
    expl_text = "; ".join(t for t, _ in facts["explanations"]) or "no explanation"
    return Section(title=f"{run.name} feature {feature}", html="".join(html_parts),
                   caption=f"Explanation: {expl_text}. " + (f"Scores: {facts['scores']}. " if facts["scores"] else "")
                   + f"Frequency: {_fmt_freq(facts['frequency'])}.")
