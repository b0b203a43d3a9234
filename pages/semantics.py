"""Consistency vs semantics: do features with similar decoder directions get similar explanations?"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import behaviour, data, page, share
from dashboard.pick import keys_help, sign_and_dead
from dashboard.state import bound, open_workspace, publish, workspace_label
from dashboard.tables import table
from saecore.agreement import with_activation_r
from saecore.errors import SaecoreError
from saecore.metrics import match_for
from saecore.overview import comparable_families, explained_pair, family_labels, seed_text
from saecore.plots.consistency import sign_label
from saecore.plots.agreement import three_axes_figure
from saecore.plots.semantic import bins_frame, binned_figure, semantic_scatter
from saecore.text import setting_text
from saecore.viewstate import SCORERS, to_params

# Headers short enough to read in full at the table's widths (the full name is each column's tooltip).
SHORT_HEADS = {"pairs explained on both sides": "explained pairs", "mean similarity, matched pairs": "sim. matched",
               "mean similarity, random pairs": "sim. random pairs"}

view = page.start("💬 Consistency vs semantics",
                  "Matched features with a high decoder cosine should also be explained alike. Each point is a "
                  "matched pair of two seeds; its explanation similarity is the cosine of the two explanations' "
                  "sentence embeddings.")
ws, root = open_workspace(view)
if ws is None:
    publish(view)
    st.stop()
root_s = str(root)
if data.optional("semantic", "compare_explanations") is None:
    publish(view)
    st.info("Explanation similarity is not available in this build (the semantic module is missing).")
    st.stop()

families = comparable_families(ws)
counts: dict[str, int] = {}
for metas in families.values():
    for m in metas:
        expl, _ = data.explanations(m.path)
        counts[m.name] = 0 if expl is None else int(expl["feature"].nunique())
eligible = {k: v for k, v in families.items() if explained_pair([m.name for m in v], counts) is not None}
if not eligible:
    publish(view)
    st.info("No family has two runs with explanations yet. Generate or import explanations on the Explanations page.")
    st.stop()

labels = family_labels(families)
with st.container(key="controls"):
    if view.families is not None:
        default = [k for k in view.families if k in eligible]
    else:
        default = [view.family] if view.family in eligible else list(eligible)
    chosen = bound(st.multiselect, "semantics_families", default, label="Families (one seed pair each, side by side)",
                   options=list(eligible), format_func=lambda k: labels.get(k, k),
                   help=keys_help({k: labels[k] for k in eligible}))
    view = sign_and_dead(view.replace(families=chosen))
    s1, s2 = st.columns([2, 3])
    scorer = bound(s1.selectbox, "semantics_scorer", view.scorer, label="Only explanations scored by",
                   options=[None, *SCORERS], format_func=lambda m: "any explanation (no score filter)" if m is None
                   else {"embedding": "embedding AUROC"}.get(m, m),
                   help="keep a pair only when both explanations reach the minimum score by this method "
                        "(scores are computed with `python -m saecore score`)")
    min_score = bound(s2.slider, "semantics_min_score", view.min_score if view.min_score is not None else 0.6,
                      label="Minimum explanation score (0.5 = chance)", min_value=0.0, max_value=1.0, step=0.05,
                      disabled=scorer is None)
    view = view.replace(scorer=scorer, min_score=float(min_score) if scorer else None)
publish(view)
if not chosen:
    st.info("Choose at least one family.")
    st.stop()
if data.embedder() is None:
    st.error("The sentence embedding model could not be loaded: "
             f"{st.session_state.get('_embedder_problem', 'unknown problem')}")
    st.stop()

results, where, three = {}, {}, {}
for key in chosen:
    metas = eligible[key]
    names = [m.name for m in metas]
    a_name, b_name = explained_pair(names, counts, (view.run_a, view.run_b))
    runs, problems = data.runs(metas, root_s)
    for p in problems:
        st.error(f"Family {labels[key]}: cannot load run {p}")
    loaded = [r.name for r in runs]
    if a_name not in loaded or b_name not in loaded or len(runs) < 2:
        continue
    unscored = [m for m in (a_name, b_name) if view.scorer and not behaviour.has_scores(
        next(r for r in runs if r.name == m).meta.path, view.scorer)]
    if unscored:
        st.info(f"Family {labels[key]}: no {view.scorer} scores for {', '.join(unscored)} yet "
                f"(`python -m saecore score RUN --method {view.scorer}`).")
        continue
    try:
        comp = data.comparison(runs, view.sign, view.dead)
        ia, ib = loaded.index(a_name), loaded.index(b_name)
        match = match_for(comp.matches, ia, ib)
        ra, rb = runs[ia], runs[ib]
        cache_key = (ra.fingerprint, rb.fingerprint, view.sign, view.dead, data.explanations_version(ra.meta.path),
                     data.explanations_version(rb.meta.path))
        res = data.semantic_result(match, cache_key + (view.scorer, view.min_score), ra.meta.path, rb.meta.path,
                                   view.scorer, view.min_score)
    except (SaecoreError, ValueError, RuntimeError, OSError) as exc:
        st.error(f"Family {labels[key]}: {exc}")
        continue
    if res is None:
        continue
    seeds = {m.name: seed_text(m) for m in metas}
    label = f"{setting_text(metas[0].architecture, metas[0].sparsity)}: {seeds[a_name]} ↔ {seeds[b_name]}"
    results[label] = res
    where[label] = (key, a_name, b_name)
    store = behaviour.store_for(ws, runs)
    if store is not None:
        try:
            agreement = behaviour.family_agreement(runs, comp, store, view.sign, view.dead).between(ia, ib)
            three[label] = with_activation_r(res.pairs, agreement)
        except (SaecoreError, ValueError, OSError) as exc:
            st.caption(f"Family {labels[key]}: activation agreement not available ({exc}).")

if not results:
    st.warning("Nothing to show for the chosen families." + (
        f" No matched pair has both explanations scored ≥ {view.min_score:g} by {view.scorer}; lower the minimum or "
        "choose another scorer." if view.scorer else ""))
    st.stop()
if view.scorer:
    st.caption(f"Only pairs whose two explanations score ≥ {view.min_score:g} by {view.scorer} "
               f"({', '.join(f'{k}: {r.n_pairs:,} pairs' for k, r in results.items())}).")

stats_df = pd.DataFrame([{"comparison": label, **r.summary()} for label, r in results.items()])
st.subheader("Correlation of match score with explanation similarity")
widths = [220, 130, 150, 150, 120, 150]  # the table fits a 1400 px screen beside the sidebar
table(stats_df, column_config={c: st.column_config.TextColumn(SHORT_HEADS.get(c, c), width=w, help=c)
                               for c, w in zip(stats_df.columns, widths)})
explainers = sorted({e for r in results.values() for e in (r.explainer_a, r.explainer_b) if e})
st.caption(f"95% bootstrap intervals in brackets. Explainer: {', '.join(explainers) or 'unknown'}; "
           f"embedder: {next(iter(results.values())).embedder}.")
for label, r in results.items():
    share.key_numbers(label, r.summary())
share.table_section("Correlations", stats_df, "Bootstrap 95% confidence intervals; random pairs = unmatched features.")
for r in results.values():
    for note in r.notes:
        st.caption(f"Note: {note}")

baselines = {label: r.baseline.mean for label, r in results.items()}
cap = (f"Each point is a matched feature pair ({sign_label(view.sign)} decoder match, dead rows {view.dead}d) with "
       f"explanations on both sides; y = cosine of the explanations' embeddings ({next(iter(results.values())).embedder}). "
       "Dashed: mean similarity of random unmatched pairs. Click a point to open the pair.")
event = share.chart(semantic_scatter({k: r.pairs for k, r in results.items()}, baselines, cap),
                    pd.concat([r.pairs.assign(comparison=k) for k, r in results.items()], ignore_index=True),
                    cap, key="semantic_scatter", on_select="rerun")

points = (event.selection.points if event is not None and hasattr(event, "selection") else []) or []
if points:
    point = points[0]
    labels = list(results)
    curve = int(point.get("curve_number", 0))
    if 0 <= curve < len(labels):
        label = labels[curve]
        custom = point.get("customdata")
        feature_a = int(custom[0]) if custom else int(results[label].pairs.iloc[int(point["point_index"])]["feature_a"])
        family, a_name, b_name = where[label]
        target = view.replace(family=family, runs=(), run_a=a_name, run_b=b_name, feature=feature_a, view="pair")
        publish(target)
        st.switch_page(str(data.base_dir() / "pages" / "pairs.py"), query_params=to_params(target))

st.subheader("Three views of a matched pair: decoder, activations, explanations")
if three:
    axes_df = behaviour.axes_table(three)
    table(axes_df, column_config={"comparison": st.column_config.TextColumn(width=220)})
    share.table_section("Correlations between the three views", axes_df, "Spearman rank correlations over matched "
                        "pairs explained on both sides.")
    cap = ("Each point is a matched pair explained on both sides; decoder cosine of the match, Pearson correlation of "
           "the two features' activations over the workspace's held-out tokens, and cosine of the explanations' "
           "embeddings. Spearman correlations of each pair of views are in the table above.")
    share.chart(three_axes_figure(three, cap), pd.concat([f.assign(comparison=k) for k, f in three.items()],
                                                        ignore_index=True), cap, key="three_axes")
else:
    st.info("Activation correlation needs stored activations of these runs' model and hook inside the workspace "
            "(the demo ships data/demo/heldout).")

tables = {label: bins_frame(r.bins.edges, r.bins.counts, r.bins.means) for label, r in results.items()}
st.subheader("Binned by match score (the paper's layout)")
for label, t in tables.items():
    st.markdown(f"**{label}**")
    table(t, column_config={"mean_similarity": st.column_config.NumberColumn(format="%.3f")})
    share.table_section(f"Binned table: {label}", t)
cap = ("Matched pairs in 5 log-spaced bins of decoder match score; bar = mean explanation similarity, n = pairs "
       "in the bin; dashed = random unmatched pairs. Pairs with score ≤ 0 are left out of the bins.")
share.chart(binned_figure(tables, baselines, cap),
            pd.concat([t.assign(comparison=k) for k, t in tables.items()], ignore_index=True), cap, key="binned")

share.report_button("Consistency vs semantics", f"Workspace {workspace_label(root)}; {', '.join(results)}")
