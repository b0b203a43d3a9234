"""Feature pairs: the matched pairs of two runs (filterable), one pair side by side, or one feature across all seeds."""

from __future__ import annotations

import math

import numpy as np
import streamlit as st

from dashboard import behaviour, data, share
from dashboard.panels import feature_panel, solve_badge
from dashboard.pick import chosen_runs, comparison_or_stop
from dashboard.state import bind, bound, publish, published, workspace_label
from dashboard.tables import selected_feature, table
from saecore.plots.agreement import fan_in_figure
from saecore.agreement import with_activation_r
from saecore.errors import SaecoreError
from saecore.matching import summarize_solves
from saecore.metrics import match_for
from saecore.pairs import (PairFilter, across_runs, candidates, clip_range, explanation_map, feature_to_open,
                           filter_bounds, filter_pairs, frequencies_of, neighbours, pair_of, pair_table,
                           partner_in_a, sort_pairs)
from saecore.plots.consistency import sign_label
from saecore.viewstate import ORDER_LABELS, ORDERS, VIEWS

COSINE = {"rank": st.column_config.NumberColumn(width=40), "feature": st.column_config.NumberColumn(width=60),
          "cosine": st.column_config.NumberColumn(format="%.3f", width=60),
          "matched": st.column_config.TextColumn(width=50)}

VIEW_LABELS = {"pair": "A ↔ B pair", "seeds": "same feature in all runs", "partners": "top partners (many-to-one)"}
PARTNERS_K = 3
FEATURE = "pair_feature"  # the open pair's run-A feature (a widget key; callbacks below move it)
REFILTER = "_pairs_refiltered"  # set when a filter changed: a hidden open pair gives way to the first shown one


def _open(feature: int | None) -> None:
    if feature is not None:
        st.session_state[FEATURE] = int(feature)


def _refiltered() -> None:
    st.session_state[REFILTER] = True


def draw_partners(run_a, run_b, view, root) -> None:
    """Every latent of the smaller run with its nearest latents in the larger one (the page's many-to-one view)."""
    found = behaviour.partners(run_a, run_b, PARTNERS_K, view.sign)
    facts = found.to_json()
    widths = (f"{found.small} has {found.d_small:,} latents, {found.large} {found.d_large:,}"
              + (" (different widths)" if found.d_small != found.d_large else ""))
    st.markdown(f"Every latent of the smaller run with its {PARTNERS_K} nearest latents in the larger one, beside the "
                f"optimal one-to-one match. {widths}.")
    p1, p2, p3 = st.columns(3)
    p1.metric("mean top-1 cosine", f"{facts['mean_cos'][0]:.3f}")
    p2.metric("top-1 is the 1-to-1 match", f"{facts['top1_is_matched']:.1%}")
    p3.metric("most latents sharing one partner", f"{facts['max_fan_in']}")
    share.key_numbers(f"Partners of {found.small} in {found.large}", {
        "mean top-1 cosine": f"{facts['mean_cos'][0]:.3f}", "top-1 is the 1-to-1 match": f"{facts['top1_is_matched']:.1%}",
        "max fan-in": str(facts["max_fan_in"])})
    frame = found.frame()
    labels = {**{f"partner_{i}": f"partner {i}" for i in range(1, PARTNERS_K + 1)},
             **{f"cos_{i}": f"cos {i}" for i in range(1, PARTNERS_K + 1)},
             "matched_partner": "1-to-1 partner", "matched_score": "1-to-1 cos"}
    columns = {c: st.column_config.NumberColumn(name, format="%.3f" if "cos" in name else None, width=85)
               for c, name in labels.items()}
    table(frame, height=320, column_config={"latent": st.column_config.NumberColumn(f"latent of {found.small}",
                                                                                   width=170), **columns})
    share.table_section(f"Top {PARTNERS_K} partners in {found.large} of every latent of {found.small}", frame,
                        f"Decoder {sign_label(view.sign)}, exact (float64); matched = the optimal one-to-one partner.")
    cap = (f"For every latent of {found.large}: how many latents of {found.small} have it as their nearest latent "
           f"(decoder {sign_label(view.sign)}). Counts above 1 hint at features the larger run merged or the smaller "
           "one split.")
    share.chart(fan_in_figure(found.counts(), cap), found.fan_in(), cap, key="fan_in")
    share.report_button(f"Top partners of {found.small} in {found.large}",
                        f"Workspace {workspace_label(root)}; runs {run_a.name}, {run_b.name}; {sign_label(view.sign)}")


view, ws, root, runs, _ = chosen_runs("🔍 Feature pairs", "Choose at least two runs.")
root_s = str(root)
names = [r.name for r in runs]
with st.container(key="controls_runs"):
    c1, c2, c3 = st.columns([2, 2, 2])
    a_name = bound(c1.selectbox, "pairs_run_a", view.run_a if view.run_a in names else names[0], label="Run A",
                   options=names)
    b_options = [n for n in names if n != a_name]
    b_name = bound(c2.selectbox, f"pairs_run_b_{a_name}", view.run_b if view.run_b in b_options else b_options[0],
                   label="Run B", options=b_options)
    mode = bound(c3.radio, "pairs_mode", view.view, label="Show", options=list(VIEWS), horizontal=True,
                 format_func=VIEW_LABELS.get)
view = view.replace(run_a=a_name, run_b=b_name, view=mode)
ia, ib = names.index(a_name), names.index(b_name)

comp = comparison_or_stop(view, runs)
match = match_for(comp.matches, ia, ib)
run_a, run_b = runs[ia], runs[ib]

if view.view == "partners":  # the many-to-one view needs neither the pair table nor an open pair
    publish(view)
    draw_partners(run_a, run_b, view, root)
    st.stop()

stats_a, _ = data.stats(run_a.meta.path)
stats_b, _ = data.stats(run_b.meta.path)
freq_a, freq_b = frequencies_of(run_a, stats_a), frequencies_of(run_b, stats_b)
expl_a, _ = data.explanations(run_a.meta.path)
expl_b, _ = data.explanations(run_b.meta.path)
pairs = pair_table(match, freq_a, freq_b, explanation_map(expl_a), explanation_map(expl_b))
store = behaviour.store_for(ws, runs) if ws is not None else None
agreement = None
if store is not None:
    try:
        agreement = behaviour.family_agreement(runs, comp, store, view.sign, view.dead).between(ia, ib)
    except (SaecoreError, ValueError, OSError) as exc:
        st.caption(f"Activation agreement not available: {exc}")
if agreement is not None:
    pairs = with_activation_r(pairs, agreement)
no_text = expl_a is None and expl_b is None

score_bounds, decades = filter_bounds(pairs)
lo = score_bounds[0]
with st.expander("Filter and sort the pairs", expanded=not view.present):
    f1, f2 = st.columns(2)
    score_range = bound(f1.slider, f"pairs_score_{ia}_{ib}", clip_range(view.score, score_bounds), label="Match score",
                        min_value=lo, max_value=1.0, step=0.01, on_change=_refiltered)
    view = view.replace(score=None if tuple(score_range) == score_bounds else tuple(score_range))
    freq_range = (None, None)
    if decades:
        lr = bound(f2.slider, f"pairs_freq_{ia}_{ib}", clip_range(view.log_freq, decades),
                   label="log10 firing fraction in run A", min_value=decades[0], max_value=decades[1],
                   on_change=_refiltered)
        view = view.replace(log_freq=None if tuple(lr) == decades else tuple(lr))
        if view.log_freq:
            freq_range = (10.0 ** lr[0], 10.0 ** lr[1])
    else:
        f2.caption("Frequency filter: no activation frequencies for run A.")
    f3, f4, f5 = st.columns([1, 2, 2])
    explained = bound(f3.checkbox, "pairs_explained", view.explained, label="Has explanation", disabled=no_text,
                      on_change=_refiltered)
    text = bound(f4.text_input, "pairs_search", view.search, label="Search explanations", disabled=no_text,
                 on_change=_refiltered)
    order_key = bound(f5.selectbox, "pairs_order", view.order, label="Order", options=list(ORDERS),
                      format_func=ORDER_LABELS.get)
view = view.replace(explained=explained, search=text.strip(), order=order_key)
flt = PairFilter(score_range[0], score_range[1], freq_range[0], freq_range[1], explained, text)
shown = sort_pairs(filter_pairs(pairs, flt), order_key)
order = shown["feature_a"].tolist()

bind(FEATURE, feature_to_open(view.feature, shown, run_a.d_sae, st.session_state.pop(REFILTER, False)))

st.caption(f"{len(shown):,} of {len(pairs):,} matched pairs of `{a_name}` ↔ `{b_name}` "
           f"({sign_label(view.sign)}, dead rows {view.dead}d). Select a row to open the pair.")
visible = [c for c in shown.columns if not (c.startswith(("explanation_", "freq_")) and shown[c].isna().all())]
current = st.session_state[FEATURE]
table_key = f"pair_table_{ia}_{ib}_{current}"  # a fresh table per open pair: its row is the one selected
table(shown, column_order=visible, height=280, key=table_key, selection_mode="single-row",
      selection_default={"selection": {"rows": [order.index(current)] if current in order else []}},
      on_select=lambda: _open(selected_feature(st.session_state[table_key], order)),
      column_config={"feature_a": st.column_config.NumberColumn("feature A", width=70),
                     "feature_b": st.column_config.NumberColumn("feature B", width=70),
                     "runner_up_b": st.column_config.NumberColumn("runner-up", help="runner-up in B", width=70),
                     "explanation_a": st.column_config.TextColumn("explanation A", width=140),
                     "explanation_b": st.column_config.TextColumn("explanation B", width=140),
                     "score": st.column_config.ProgressColumn("match score", min_value=-1.0 if lo < 0 else 0.0,
                                                              max_value=1.0, format="%.3f", width=100),
                     "runner_up_b_score": st.column_config.NumberColumn("runner-up cos", format="%.3f", width=80),
                     "freq_a": st.column_config.NumberColumn("frequency A", format="%.2e", width=75),
                     "freq_b": st.column_config.NumberColumn("frequency B", format="%.2e", width=75),
                     "activation_r": st.column_config.NumberColumn("activation r", format="%.3f", width=70,
                                                                   help="Pearson r over the held-out tokens")})

prev_f, next_f = neighbours(order, current)
n1, n2, n3 = st.columns([1, 2, 1])
n1.button("◀ Previous", disabled=prev_f is None, width="stretch", on_click=_open, args=(prev_f,))
n3.button("Next ▶", disabled=next_f is None, width="stretch", on_click=_open, args=(next_f,))
feature = int(published(FEATURE, n2.number_input(f"Feature of run A ({a_name})", min_value=0,
                                                 max_value=run_a.d_sae - 1, step=1, key=FEATURE)))
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
        solved = summarize_solves([match.info])
        st.caption(f"{solve_badge(solved)} Chance MCC for these shapes: {chance:.3f}.", help=solved.detail)
        sim = data.explanation_similarity(run_a.meta.path, feature, run_b.meta.path, partner)
        if sim is not None:
            st.metric("explanation similarity", f"{sim:.3f}", help="cosine of the two explanations' sentence embeddings")
        behaviour_numbers = behaviour.pair_numbers(agreement, run_a, run_b, feature, view.sign, view.dead)
        for name, (value, helptext) in behaviour_numbers.items():
            st.metric(name, value, help=helptext)
        if agreement is not None and (one := agreement.of_feature(feature)) is not None:
            st.caption(f"Over {one['n_tokens']:,} held-out tokens: A fires on {one['fires_a']:,}, B on "
                       f"{one['fires_b']:,}, both on {one['fires_both']:,}.")
        share.key_numbers(f"{a_name} feature {feature} ↔ {b_name} feature {partner}", {
            f"match score ({sign_label(view.sign)})": "unmatched" if partner is None else f"{score:.4f}",
            "explanation similarity": "–" if sim is None else f"{sim:.3f}",
            **{name: value for name, (value, _) in behaviour_numbers.items()}, "chance MCC": f"{chance:.3f}"})
        cand = candidates(run_a, feature, run_b, k=5, sign=view.sign)
        cand["matched"] = np.where(cand["feature"] == (partner if partner is not None else -1), "✓", "")
        cand_features = cand["feature"].tolist()
        st.markdown(f"Closest features in run B ({b_name}); select one to open its own pair")
        cand_key = f"candidates_b_{ia}_{ib}_{feature}"
        table(cand, key=cand_key, selection_mode="single-row", column_config=COSINE,
              on_select=lambda: _open(partner_in_a(match, selected_feature(st.session_state[cand_key], cand_features))))
        if partner is not None:
            back = candidates(run_b, partner, run_a, k=5, sign=view.sign)
            back_features = back["feature"].tolist()
            st.markdown(f"Closest features in run A to B's feature {partner}; select one to open it")
            back_key = f"candidates_a_{ia}_{ib}_{feature}"
            table(back, key=back_key, selection_mode="single-row", column_config=COSINE,
                  on_select=lambda: _open(selected_feature(st.session_state[back_key], back_features)))
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
