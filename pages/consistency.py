"""Consistency: PW-MCC of a family (or chosen runs), score distributions, shared fraction, frequency bins, steps."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import behaviour, data, share
from dashboard.panels import solve_badge
from dashboard.pick import chosen_runs
from dashboard.state import bound, publish, workspace_label
from dashboard.tables import table
from saecore.errors import InputError, SaecoreError
from saecore.metrics import SHARED_THRESHOLD, frequency_bins, shared_fraction, shared_fraction_curve
from saecore.overview import checkpoint_series, steps_table
from saecore.plots.agreement import AGREEMENT_MEASURES, agreement_scatter, encoder_decoder_figure
from saecore.pairs import frequencies_of
from saecore.plots.consistency import (contribution_figure, frequency_bins_figure, pwmcc_matrix_figure,
                                       score_histogram, shared_fraction_figure, sign_label, steps_figure)

MAX_PAIR_TRACES = 6
# Short column names of the agreement table (the full names are the column tooltips).
AGREEMENT_COLUMNS = {"decoder_pw_mcc": "decoder", "encoder_pw_mcc": "encoder", "shared_decoder": "shared dec",
                     "shared_encoder": "shared enc", "shared_both": "shared both", "same_partner": "same partner",
                     "pearson_mean": "act. r", "jaccard_mean": "Jaccard"}

_num = st.column_config.NumberColumn
BIN_COLUMNS = {
    "bin": _num("bin", help="-1: features that never fired"),
    "freq_low": _num("fires from", format="%.1e", help="lower edge of the bin's firing fraction"),
    "freq_high": _num("to", format="%.1e", help="upper edge of the bin's firing fraction"),
    "count": _num("features"), "mean": _num("mean score", format="%.3f"), "sd": _num("sd", format="%.3f"),
    "contribution": _num("contribution", format="%.4f", help="sum of the bin's scores / all features"),
    "share": _num("share of features", format="percent"),
    "cumulative": _num("cumulative", format="%.4f", help="contributions of this and all lower bins")}

view, ws, root, runs, label = chosen_runs("📈 Consistency across seeds", "Choose at least two runs to compare.")
root_s = str(root)

try:
    comp = data.comparison(runs, view.sign, view.dead)
except InputError as exc:
    st.error(f"These runs cannot be compared: {exc}")
    st.stop()
except (SaecoreError, ValueError, RuntimeError, OSError) as exc:
    st.error(f"Matching failed: {exc}")
    st.stop()

chance = data.chance(runs[0].d_sae, runs[0].d_in, runs[1].d_sae, view.sign)
names = ", ".join(comp.names)
settings = f"{sign_label(view.sign)}, dead rows {view.dead}d"

c1, c2, c3, c4 = st.columns(4)
c1.metric("PW-MCC (mean over pairs)", f"{comp.pw.mean:.4f}", help="population std (ddof=0) over the run pairs")
c2.metric("std over pairs", f"{comp.pw.std:.4f}")
c3.metric("chance level", f"{chance:.4f}", help="MCC of random gaussian dictionaries of the same shapes")
c4.metric("pairs", len(comp.pw.pairs))
solves = comp.solves()
st.caption(f"{label}: {names}. {settings[:1].upper() + settings[1:]}.")
st.caption(f"{solve_badge(solves)} {solves.detail} {comp.cached} of {len(comp.matches)} pairs from the cache.")

share.key_numbers(f"PW-MCC of {label}", {
    "PW-MCC": f"{comp.pw.mean:.4f} ± {comp.pw.std:.4f}", "chance": f"{chance:.4f}", "pairs": str(len(comp.pw.pairs)),
    "runs": names, "settings": settings}, caption=solves.detail)
matrix = comp.pw.matrix()
cap = f"Pairwise MCC ({settings}) between the runs of {label}."
share.chart(pwmcc_matrix_figure(comp.names, matrix, chance, cap),
            pd.DataFrame(matrix, index=comp.names, columns=comp.names).reset_index(names="run"), cap, key="matrix", subject=label)

pair_keys = sorted(comp.matches)[:MAX_PAIR_TRACES]
pair_label = {k: f"{comp.names[k[0]]} ↔ {comp.names[k[1]]}" for k in pair_keys}
scores = {pair_label[k]: comp.matches[k].scores for k in pair_keys}
hist_df = pd.concat([pd.DataFrame({"pair": lbl, "score": s}) for lbl, s in scores.items()], ignore_index=True)
cap = (f"Matched decoder {sign_label(view.sign)} of every matched feature, per run pair of {label} "
       f"(first {len(pair_keys)} pairs). Dashed: chance MCC {chance:.3f}; dotted: shared threshold {SHARED_THRESHOLD}.")
share.chart(score_histogram(scores, chance, view.sign, cap), hist_df, cap, key="histogram", subject=label)

curves = {pair_label[k]: shared_fraction_curve(comp.matches[k]) for k in pair_keys}
curve_df = pd.concat([c.assign(pair=lbl) for lbl, c in curves.items()], ignore_index=True)
at_threshold = ", ".join(f"{lbl}: {shared_fraction(comp.matches[k]):.1%}" for k, lbl in pair_label.items())
cap = (f"Fraction of run A's features whose matched partner in run B has decoder cosine above the threshold "
       f"({label}, {settings}; decoder only). At {SHARED_THRESHOLD}: {at_threshold}.")
share.chart(shared_fraction_figure(curves, chance, view.sign, cap), curve_df, cap, key="shared", subject=label)

st.subheader("Beyond decoder cosine: encoders and activations")
store = behaviour.store_for(ws, runs) if ws is not None else None
agreement = None
if store is not None:
    try:
        agreement = behaviour.family_agreement(runs, comp, store, view.sign, view.dead)
    except (SaecoreError, ValueError, OSError) as exc:
        st.warning(f"Activation agreement could not be measured: {exc}")
agree_df, agree_problems = behaviour.agreement_table(comp, agreement, SHARED_THRESHOLD, view.sign, view.dead)
means = {c: agree_df[c].mean() for c in AGREEMENT_MEASURES if c in agree_df.columns}
m1, m2, m3, m4 = st.columns(4)
m1.metric("encoder PW-MCC", "–" if "encoder_pw_mcc" not in means else f"{means['encoder_pw_mcc']:.3f}",
          help="the same exact matching on encoder directions instead of decoder directions")
m2.metric(f"shared in both (> {SHARED_THRESHOLD})", "–" if "shared_both" not in means else f"{means['shared_both']:.1%}",
          help="features whose decoder-matched partner has decoder and encoder cosine above the threshold "
               "(Paulo & Belrose 2025)")
m3.metric("activation correlation", "–" if "pearson_mean" not in means else f"{means['pearson_mean']:.3f}",
          help="mean Pearson r of matched pairs' activations over the same held-out tokens")
m4.metric("firing overlap (Jaccard)", "–" if "jaccard_mean" not in means else f"{means['jaccard_mean']:.3f}",
          help="mean |both fire| / |either fires| of matched pairs over the held-out tokens")
for problem in agree_problems:
    st.caption(f"Encoders not compared for {problem}.")
if store is None:
    st.info("Activation agreement needs stored activations of these runs' model and hook inside the workspace "
            "(a folder written by saecore.activations; the demo ships data/demo/heldout).")
else:
    st.caption(f"Activations: {store.n_tokens:,} held-out tokens at `{store.hook}` "
               f"({Path(store.path).name}); matched pairs from the decoder matching above.")
share.key_numbers(f"Encoders and activations of {label}", {
    AGREEMENT_MEASURES[c]: f"{v:.3f}" for c, v in means.items()})
agree_fmt = {c: st.column_config.NumberColumn(AGREEMENT_COLUMNS[c], help=AGREEMENT_MEASURES[c], format="%.3f", width=72)
             for c in AGREEMENT_MEASURES}
table(agree_df, column_config={"pair": st.column_config.TextColumn("seed pair", width=210), **agree_fmt})
cap = (f"Per seed pair of {label} ({settings}): MCC of the decoder and of the encoder matching; fractions of run A's "
       f"features whose partner is above {SHARED_THRESHOLD} by decoder, by encoder, and by both; how often both "
       "matchings pick the same partner; mean activation correlation and firing overlap of decoder-matched pairs.")
share.chart(encoder_decoder_figure(agree_df, cap), agree_df, cap, key="encoder_decoder", subject=label)
if agreement is not None:
    scatter = {f"{comp.names[i]} ↔ {comp.names[j]}": a.frame()
               for (i, j), a in list(zip(agreement.index, agreement.pairs))[:3]}
    cap = (f"Each point is a decoder-matched feature pair ({settings}); y = Pearson correlation of the two features' "
           f"activations over {agreement.pairs[0].n_tokens:,} held-out tokens.")
    share.chart(agreement_scatter(scatter, cap), pd.concat([f.assign(pair=k) for k, f in scatter.items()],
                                                           ignore_index=True), cap, key="agreement_scatter", subject=label)

st.subheader("Consistency by activation frequency")
ref_default = view.reference if view.reference in comp.names else comp.names[0]
ref_name = bound(st.container(key="controls_reference").selectbox, "consistency_reference", ref_default,
                 label="Reference run (its features are binned by how often they fire)", options=comp.names)
view = view.replace(reference=ref_name)
publish(view)
ref = comp.names.index(ref_name)
stats, why = data.stats(runs[ref].meta.path)
freq = frequencies_of(runs[ref], stats)
if freq is None:
    st.info(f"Activation frequencies are not available for {ref_name}: {why or 'no sparsity file and no feature statistics'}.")
else:
    source = "feature statistics" if stats is not None else "the run's sparsity file"
    consistency = comp.feature_consistency(ref)
    bins = frequency_bins(freq, consistency["mean_score"].to_numpy())
    table(bins, column_config=BIN_COLUMNS)
    share.table_section("Frequency bins", bins.rename(columns={c: cfg["label"] for c, cfg in BIN_COLUMNS.items()}))
    cap = (f"Features of {ref_name} in 5 equal-width bins of log10 firing fraction (from {source}); per-feature score = "
           f"mean matched {sign_label(view.sign)} against the other {len(runs) - 1} run(s) of {label}. "
           f"Bars: mean ± sd, n = features per bin. Dashed: chance MCC.")
    share.chart(frequency_bins_figure(bins, chance, view.sign, cap), bins, cap, key="freq_bins", subject=label)
    cap = (f"Each frequency bin's share of the mean per-feature score of {ref_name} ({label}, {settings}): "
           "bars = bin contribution (sum of its scores / all features), line = cumulative sum (ends at the mean), "
           "dotted = share of features in the bin (right axis).")
    share.chart(contribution_figure(bins, cap), bins, cap, key="contribution", subject=label)

if view.family:
    series = checkpoint_series(ws, view.family)
    usable = {s: m for s, m in series.items() if len(m) >= 2}
    if len(usable) >= 2:  # one checkpoint is a point, not a trajectory
        st.subheader("PW-MCC during training")
        results = []
        for step, step_metas in usable.items():
            step_runs, step_problems = data.runs(step_metas, root_s)
            for p in step_problems:
                st.error(f"Checkpoint {step}: {p}")
            if len(step_runs) >= 2:
                results.append((step, data.comparison(step_runs, view.sign, view.dead).pw))
        steps = steps_table(results)
        cap = (f"PW-MCC ({settings}) of the checkpoints of {label} at {len(results)} steps; "
               f"points = single seed pairs, line = mean ± sd. Dashed: chance MCC {chance:.3f}.")
        share.chart(steps_figure(steps, chance, cap), steps, cap, key="steps", subject=label)

share.report_button(f"Consistency of {label}", f"Workspace {workspace_label(root)}; runs {names}; {settings}")
