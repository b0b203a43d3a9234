"""Feature pairs: the matched pairs of two runs (filterable), one pair side by side, or one feature across all seeds."""

from __future__ import annotations

import math

import numpy as np
import streamlit as st

from dashboard import data, share
from dashboard.panels import feature_panel
from dashboard.pick import chosen_runs
from dashboard.state import publish, workspace_label
from saecore.errors import SaecoreError
from saecore.metrics import match_for
from saecore.pairs import (PairFilter, across_runs, candidates, explanation_map, filter_pairs, frequencies_of,
                           neighbours, pair_of, pair_table)
from saecore.plots.consistency import sign_label

SORTS = {"score (high → low)": ("score", False), "score (low → high)": ("score", True),
         "feature of run A": ("feature_a", True), "frequency in run A (high → low)": ("freq_a", False)}
_LAST_SELECTION = "_pairs_last_selection"

view, _, root, runs = chosen_runs("🔍 Feature pairs", "Choose at least two runs.")
root_s = str(root)
names = [r.name for r in runs]
with st.container(key="controls_runs"):
    c1, c2, c3 = st.columns([2, 2, 2])
    a_name = c1.selectbox("Run A", names, index=names.index(view.run_a) if view.run_a in names else 0)
    b_options = [n for n in names if n != a_name]
    b_name = c2.selectbox("Run B", b_options, index=b_options.index(view.run_b) if view.run_b in b_options else 0)
    mode = c3.radio("Show", ["pair", "seeds"], index=0 if view.view == "pair" else 1, horizontal=True,
                    format_func=lambda v: "A ↔ B pair" if v == "pair" else "same feature in all runs")
view = view.replace(run_a=a_name, run_b=b_name, view=mode)
ia, ib = names.index(a_name), names.index(b_name)

try:
    comp = data.comparison(runs, view.sign, view.dead)
except (SaecoreError, ValueError, RuntimeError, OSError) as exc:
    publish(view)
    st.error(f"These runs cannot be matched: {exc}")
    st.stop()
match = match_for(comp.matches, ia, ib)
run_a, run_b = runs[ia], runs[ib]

stats_a, _ = data.stats(run_a.meta.path)
stats_b, _ = data.stats(run_b.meta.path)
freq_a, freq_b = frequencies_of(run_a, stats_a), frequencies_of(run_b, stats_b)
expl_a, _ = data.explanations(run_a.meta.path)
expl_b, _ = data.explanations(run_b.meta.path)
table = pair_table(match, freq_a, freq_b, explanation_map(expl_a), explanation_map(expl_b))

with st.expander("Filter and sort the pairs", expanded=not view.present):
    f1, f2 = st.columns(2)
    lo = float(np.floor(min(table["score"].min(), 0.0) * 100) / 100) if len(table) else -1.0
    score_range = f1.slider("Match score", min_value=lo, max_value=1.0, value=(lo, 1.0), step=0.01)
    freq_range = (None, None)
    finite = table["freq_a"][table["freq_a"] > 0] if freq_a is not None else []
    if len(finite):
        lmin, lmax = math.floor(np.log10(finite.min())), math.ceil(np.log10(finite.max()))
        if lmax > lmin:
            lr = f2.slider("log10 firing fraction in run A", min_value=lmin, max_value=lmax, value=(lmin, lmax))
            if lr != (lmin, lmax):
                freq_range = (10.0 ** lr[0], 10.0 ** lr[1])
    else:
        f2.caption("Frequency filter: no activation frequencies for run A.")
    f3, f4, f5 = st.columns([1, 2, 2])
    explained = f3.checkbox("Has explanation", value=False, disabled=expl_a is None and expl_b is None)
    text = f4.text_input("Search explanations", value="", disabled=expl_a is None and expl_b is None)
    sort = f5.selectbox("Order", list(SORTS))
flt = PairFilter(score_range[0], score_range[1], freq_range[0], freq_range[1], explained, text)
shown = filter_pairs(table, flt)
col, ascending = SORTS[sort]
shown = shown.sort_values(col, ascending=ascending, kind="stable", na_position="last").reset_index(drop=True)
order = shown["feature_a"].tolist()

st.caption(f"{len(shown):,} of {len(table):,} matched pairs of `{a_name}` ↔ `{b_name}` "
           f"({sign_label(view.sign)}, dead rows {view.dead}d). Select a row to open the pair.")
visible = [c for c in shown.columns if not (c.startswith(("explanation_", "freq_")) and shown[c].isna().all())]
event = st.dataframe(
    shown, hide_index=True, column_order=visible, on_select="rerun", selection_mode="single-row", key=f"pair_table_{ia}_{ib}", height=280,
    column_config={"feature_a": "feature A", "feature_b": "feature B", "runner_up_b": "runner-up in B",
                   "explanation_a": "explanation A", "explanation_b": "explanation B",
                   "score": st.column_config.ProgressColumn("match score", min_value=-1.0 if lo < 0 else 0.0, max_value=1.0,
                                                            format="%.3f"),
                   "runner_up_b_score": st.column_config.NumberColumn("runner-up cosine", format="%.3f"),
                   "freq_a": st.column_config.NumberColumn("frequency A", format="%.2e"),
                   "freq_b": st.column_config.NumberColumn("frequency B", format="%.2e")})
rows = list(event.selection.rows) if event is not None else []
last = st.session_state.get(_LAST_SELECTION)
st.session_state[_LAST_SELECTION] = (ia, ib, rows)
feature = view.feature
if rows and last != (ia, ib, rows) and rows[0] < len(shown):
    feature = int(shown.iloc[rows[0]]["feature_a"])
if feature is None or feature >= run_a.d_sae:
    feature = order[0] if order else 0

prev_f, next_f = neighbours(order, feature)
n1, n2, n3 = st.columns([1, 2, 1])
if n1.button("◀ Previous", disabled=prev_f is None, width="stretch"):
    feature = prev_f
if n3.button("Next ▶", disabled=next_f is None, width="stretch"):
    feature = next_f
feature = int(n2.number_input(f"Feature of run A ({a_name})", min_value=0, max_value=run_a.d_sae - 1, value=int(feature),
                              step=1))
view = view.replace(feature=feature)
publish(view)
position = f"{order.index(feature) + 1} of {len(order)} in the filtered list" if feature in order else "not in the filtered list"
st.caption(f"Feature {feature} of {a_name}: {position}. This page's address restores exactly this view.")

if view.view == "pair":
    partner, score = pair_of(match, feature)
    left, middle, right = st.columns([4, 3, 4])
    with left:
        sec_a = feature_panel(run_a, feature, "Run A")
    with right:
        sec_b = feature_panel(run_b, partner, "Run B")
    with middle:
        st.markdown("#### Match")
        st.metric(f"matched decoder {sign_label(view.sign)}", "unmatched" if partner is None else f"{score:.4f}")
        chance = data.chance(run_a.d_sae, run_a.d_in, run_b.d_sae, view.sign)
        st.caption(f"Chance MCC for these shapes: {chance:.3f}.")
        sim = data.explanation_similarity(run_a.meta.path, feature, run_b.meta.path, partner)
        if sim is not None:
            st.metric("explanation similarity", f"{sim:.3f}", help="cosine of the two explanations' sentence embeddings")
        cand = candidates(run_a, feature, run_b, k=5, sign=view.sign)
        cand["matched"] = np.where(cand["feature"] == (partner if partner is not None else -1), "✓", "")
        st.markdown(f"Closest features in run B ({b_name})")
        st.dataframe(cand, hide_index=True, column_config={"cosine": st.column_config.NumberColumn(format="%.3f")})
        if partner is not None:
            back = candidates(run_b, partner, run_a, k=5, sign=view.sign)
            st.markdown(f"Closest features in run A to B's feature {partner}")
            st.dataframe(back, hide_index=True, column_config={"cosine": st.column_config.NumberColumn(format="%.3f")})
        share.table_section(f"Candidates in {b_name} for {a_name} feature {feature}", cand,
                            f"Decoder {sign_label(view.sign)}; the optimal one-to-one match is marked ✓.")
    for sec in (sec_a, sec_b):
        if sec is not None:
            share.add_section(sec)
    title = f"Feature {feature} of {a_name} and its match in {b_name}"
else:
    chain = across_runs(comp, ia, feature)
    st.markdown(f"Feature {feature} of **{a_name}** (reference) followed into every run of the set by its optimal match.")
    share.table_section("Same feature in every run", chain,
                        f"Each run's feature matched to {a_name} feature {feature} ({sign_label(view.sign)}).")
    columns = st.columns(len(chain))
    for c, row in zip(columns, chain.itertuples()):
        with c:
            partner = None if row.feature is None or (isinstance(row.feature, float) and math.isnan(row.feature)) \
                else int(row.feature)
            heading = "Reference" if row.reference else f"match {row.score:.3f}"
            sec = feature_panel(runs[row.index], partner, heading)
            if sec is not None:
                share.add_section(sec)
    title = f"Feature {feature} of {a_name} across {len(runs)} runs"

share.report_button(title, f"Workspace {workspace_label(root)}; runs {', '.join(names)}; {sign_label(view.sign)}")
