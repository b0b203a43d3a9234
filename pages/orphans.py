"""Orphan latents: features no other seed learned (best cosine below a threshold in every other seed), listed and
compared with shared ones on frequency and explanation scores."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import behaviour, data, share
from dashboard.pick import chosen_runs, comparison_or_stop
from dashboard.state import bound, publish, workspace_label
from dashboard.tables import selected_feature, table
from saecore.orphans import compared_columns, group_values, run_counts_frame
from saecore.plots.agreement import best_score_histogram, orphan_figure
from saecore.plots.consistency import sign_label
from saecore.viewstate import to_params

view, ws, root, runs, label = chosen_runs("🧩 Orphan latents", "Choose at least two runs of a family.")
comp = comparison_or_stop(view, runs)

with st.container(key="controls_threshold"):
    threshold = bound(st.slider, "orphans_threshold", view.threshold, label="Orphan threshold: a latent is an orphan "
                      "when its nearest latent in every other seed has a decoder cosine below", min_value=0.1,
                      max_value=0.95, step=0.05)
view = view.replace(threshold=float(threshold))
publish(view)
with st.spinner("Finding orphan latents…"):
    report = behaviour.orphans(comp, view.threshold, view.sign, view.dead)
settings = f"{sign_label(view.sign)}, dead rows {view.dead}d"

counts = run_counts_frame(report)
pooled = counts.iloc[-1]
c1, c2, c3 = st.columns(3)
c1.metric("orphan latents (all runs)", f"{int(pooled['orphan']):,}", help="best cosine below the threshold in every "
          "other seed")
c2.metric("orphan fraction", f"{pooled['orphan_fraction']:.1%}", help="orphans among live latents")
c3.metric("shared in every seed", f"{pooled['shared_fraction']:.1%}",
          help="best cosine at or above the threshold in every other seed")
st.caption(f"{label}: {', '.join(report.runs)}. Orphan threshold {view.threshold:g}. Best match = the nearest latent in the other seed (the matched partner "
           f"or the runner-up, whichever is closer), {settings}. 'partial' latents are matched in some seeds only.")
share.key_numbers(f"Orphans of {label} at {view.threshold:g}", {
    "orphans": f"{int(pooled['orphan']):,}", "orphan fraction": f"{pooled['orphan_fraction']:.1%}",
    "shared in every seed": f"{pooled['shared_fraction']:.1%}"})
COUNT = st.column_config.NumberColumn(format="localized", width=80)
PERCENT = "%.1f %%"
table(counts.assign(orphan_fraction=100 * counts["orphan_fraction"], shared_fraction=100 * counts["shared_fraction"]),
      column_config={"run": st.column_config.TextColumn(width=200),
                     **{c: COUNT for c in ("latents", "dead", "orphan", "shared", "partial")},
                     "orphan_fraction": st.column_config.NumberColumn("orphan fraction", format=PERCENT),
                     "shared_fraction": st.column_config.NumberColumn("shared in every seed", format=PERCENT)})
share.table_section("Orphans per run", counts, f"Threshold {view.threshold:g}; {settings}.")

best = {r.run: r.table["best_min"].to_numpy() for r in report.per_run}
cap = (f"Each latent's decoder cosine to its nearest latent in the other seed where that is lowest ({label}, "
       f"{settings}). Latents left of the dotted line at {view.threshold:g} are orphans.")
share.chart(best_score_histogram(best, view.threshold, cap),
            pd.concat([pd.DataFrame({"run": k, "best_min": v}) for k, v in best.items()], ignore_index=True), cap,
            key="best_scores", subject=label)

st.subheader("Orphan vs shared latents")
columns = compared_columns(report)
if not columns:
    st.info("No per-feature data to compare: these runs have no feature statistics, explanation scores or sparsity file.")
else:
    with st.spinner("Comparing orphan and shared latents (bootstrap)…"):
        groups = behaviour.orphan_groups(report, columns)
    num = lambda name: st.column_config.NumberColumn(name, format="%.3g", width=85)  # noqa: E731
    table(groups, column_order=["measure", "run", "n_orphan", "n_shared", "mean_orphan", "mean_shared", "difference",
                                "p_value"],
          column_config={"measure": st.column_config.TextColumn(width=150), "run": st.column_config.TextColumn(width=140),
                         "n_orphan": st.column_config.NumberColumn("orphans", format="localized", width=70),
                         "n_shared": st.column_config.NumberColumn("shared", format="localized", width=70),
                         "mean_orphan": num("mean, orphans"), "mean_shared": num("mean, shared"),
                         "difference": st.column_config.TextColumn("difference [95% CI]", width=200),
                         "p_value": st.column_config.NumberColumn("p", format="%.2g", width=70)})
    share.table_section("Orphan vs shared", groups, "Difference of means (orphan − shared) with a 95% bootstrap "
                        "interval; two-sided Mann-Whitney U p-value.")
    st.caption("Difference = mean over orphans − mean over shared latents, 95% bootstrap interval in brackets; "
               "p = two-sided Mann-Whitney U test. Explanation scores: 0.5 is chance.")
    for column, (name, log) in columns.items():
        cap = (f"{name[:1].upper() + name[1:]} of orphan and shared latents per run of {label} (threshold {view.threshold:g}); boxes show "
               "quartiles, the dashed line the mean.")
        values = group_values(report, column)
        share.chart(orphan_figure(values, name, cap, log=log), report.table()[["run", "status", column]], cap,
                    key=f"orphans_{column}", subject=label)

st.subheader("The orphans")
names = report.runs
run_name = bound(st.container(key="controls_orphan_run").selectbox, "orphans_run",
                 view.run_a if view.run_a in names else names[0], label="Orphans of run", options=names)
per_run = report.per_run[names.index(run_name)]
listing = per_run.orphans()
shown = [c for c in ("feature", "best_min", "frequency", "explanation", "detection", "fuzzing", "embedding")
         if c in listing.columns]
st.caption(f"{len(listing):,} orphans of {run_name}, least matched first. Select one to follow it into every seed on "
           "the Feature pairs page.")
order = listing["feature"].astype(int).tolist()
table(listing[shown], height=320, key="orphan_table", selection_mode="single-row", on_select="rerun",
      column_config={"best_min": st.column_config.NumberColumn("best cosine", format="%.3f", width=90),
                     "frequency": st.column_config.NumberColumn(format="%.2e", width=90),
                     "explanation": st.column_config.TextColumn(width=300)})
share.table_section(f"Orphans of {run_name}", listing[shown])
picked = selected_feature(st.session_state.get("orphan_table"), order)
if picked is not None:
    target = view.replace(run_a=run_name, run_b=next(n for n in names if n != run_name), feature=picked, view="seeds")
    publish(target)
    st.switch_page(str(data.base_dir() / "pages" / "pairs.py"), query_params=to_params(target))

share.report_button(f"Orphans of {label}", f"Workspace {workspace_label(root)}; runs {', '.join(names)}; "
                    f"threshold {view.threshold:g}; {settings}")
