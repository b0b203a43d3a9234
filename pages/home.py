"""Home: open a workspace, list its runs and families, and summarise PW-MCC per family."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data, page, share
from dashboard.state import bound, open_workspace, publish, roots, workspace_label
from dashboard.tables import table
from saecore.errors import SaecoreError
from saecore.overview import comparable_families, families_table, family_labels, family_summary, runs_table
from saecore.plots.consistency import family_summary_figure, sign_label

view = page.start("🧬 SAE feature consistency", "Did SAEs trained with different seeds learn the same features? "
                  "Open a workspace of runs to compare them.")

with st.container(key="controls"):
    path = bound(st.text_input, "home_workspace", view.workspace, label="Workspace folder",
                 help="A folder under one of the allowed roots: " + ", ".join(str(r) for r in roots()))
view = view.replace(workspace=path.strip() or view.workspace)
ws, root = open_workspace(view)
publish(view)
if ws is None:
    st.stop()

root_s = str(root)
families = ws.families
labels = family_labels(families)
comparable = comparable_families(ws)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Runs", len(ws.runs))
c2.metric("Families", len(families))
c3.metric("Families with ≥ 2 seeds (final runs)", len(comparable))
c4.metric("Unreadable paths", len(ws.errors))
st.caption(f"Workspace `{workspace_label(root)}`. A family is a set of runs with the same format, architecture, "
           "sparsity, shape, model, hook and step, differing only in seed.")

st.subheader("Runs")
warnings: dict[str, list[str]] = {}
explained: dict[str, int] = {}
for meta in ws.runs:
    try:
        warnings[meta.name] = data.run(meta, root_s).warnings()
    except (SaecoreError, OSError, ValueError) as exc:  # shown beside the run; the page goes on with the others
        warnings[meta.name] = [f"cannot load: {getattr(exc, 'problem', exc)}"]
    expl, _ = data.explanations(meta.path)
    explained[meta.name] = 0 if expl is None else int(expl["feature"].nunique())
runs_df = runs_table(ws, explained, warnings)
runs_df["family"] = runs_df["family"].map(labels)
runs_df = runs_df[[c for c in runs_df.columns
                   if runs_df[c].notna().any() and (runs_df[c] != "").any()
                   and not (c == "explanations" and runs_df[c].sum() == 0)]]
# Architecture and sparsity are part of the family's label, and a format shared by every run says nothing:
# without them, and with fixed widths, the table fits the screen.
hidden = {"architecture", "sparsity"} | ({"format"} if runs_df["format"].nunique() == 1 else set())
table(runs_df, column_order=[c for c in runs_df.columns if c not in hidden], column_config={
    "run": st.column_config.TextColumn(width=240), "seed": st.column_config.NumberColumn(width=50),
    "step": st.column_config.NumberColumn(width=70), "shape": st.column_config.TextColumn(width=90),
    "L0": st.column_config.NumberColumn(format="%.1f", width=50),
    "FVU": st.column_config.NumberColumn(format="%.3f", width=55),
    "explanations": st.column_config.NumberColumn("explained", help="features with an explanation", width=80),
    "format": st.column_config.TextColumn(width=90), "family": st.column_config.TextColumn(width=300)})
share.table_section("Runs", runs_df, f"Every run found under {workspace_label(root)}.")
if ws.errors:
    st.warning(f"{len(ws.errors)} path(s) looked like runs but could not be read:")
    errors_df = pd.DataFrame([{"path": e.path, "problem": e.reason} for e in ws.errors])
    table(errors_df)
    share.table_section("Unreadable paths", errors_df)

st.subheader("Families")
fam_df = families_table(ws, labels)
table(fam_df, column_order=["family", "step", "runs", "seeds", "shape", "key"], column_config={
    "family": st.column_config.TextColumn(width=330), "step": st.column_config.NumberColumn(width=70),
    "runs": st.column_config.NumberColumn(width=50), "seeds": st.column_config.TextColumn(width=70),
    "shape": st.column_config.TextColumn(width=90),
    "key": st.column_config.TextColumn("family key", width=300,
                                       help="The full key: format/architecture/sparsity/shape/model/hook/step")})
share.table_section("Families", fam_df)

st.subheader("PW-MCC across families")
if not comparable:
    with_steps = len(comparable_families(ws, final_only=False))
    st.info("No family of final runs has two or more seeds yet: PW-MCC needs at least two seeds of one configuration."
            + (f" {with_steps} checkpoint families can be compared on the Consistency page." if with_steps else ""))
else:
    results, chances, numbers = [], {}, {}
    for key, metas in comparable.items():
        loaded, problems = data.runs(metas, root_s)
        for p in problems:
            st.error(f"Family {labels[key]}: {p}")
        if len(loaded) < 2:
            continue
        try:
            comp = data.comparison(loaded, view.sign, view.dead)
        except (SaecoreError, OSError, ValueError, RuntimeError) as exc:  # one bad family must not hide the others
            st.error(f"Family {labels[key]}: {exc}")
            continue
        results.append((key, metas, comp.pw))
        numbers[labels[key]] = f"{comp.pw.mean:.3f} ± {comp.pw.std:.3f} ({len(comp.pw.pairs)} pairs)"
        shape = f"({metas[0].d_sae:,} latents, d_in {metas[0].d_in:,})"
        chances[shape] = data.chance(metas[0].d_sae, metas[0].d_in, metas[0].d_sae, view.sign)
    summary = family_summary(results)
    if len(summary):
        caption = (f"PW-MCC = mean matched decoder {sign_label(view.sign)} under the optimal one-to-one matching, "
                   f"for every pair of seeds in {len(results)} famil{'y' if len(results) == 1 else 'ies'} of {workspace_label(root)}; dead rows "
                   f"{view.dead}d. Open circles: single pairs; diamonds: family mean. Dashed: chance level "
                   "(random dictionaries of the same shape).")
        fig = family_summary_figure(summary, chances, caption)
        share.key_numbers("PW-MCC per family (mean ± std over seed pairs)",
                          {**numbers, **{f"chance {k}": f"{v:.3f}" for k, v in chances.items()}})
        share.chart(fig, summary.assign(family_label=summary["family"].map(labels)), caption, key="family_summary")

share.report_button("SAE workspace overview", f"Workspace {workspace_label(root)}")
