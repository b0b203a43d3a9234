"""Figures beyond decoder cosine: activation agreement of matched pairs, encoder vs decoder, the three axes, orphans."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from saecore.plots.style import ARCH_COLORS, THRESHOLD_COLOR, finish, mark_threshold

# Columns of encoder_decoder_figure's table, in the order drawn, with the name each bar group gets.
AGREEMENT_MEASURES = {
    "decoder_pw_mcc": "decoder MCC",
    "encoder_pw_mcc": "encoder MCC",
    "shared_decoder": "shared by decoder",
    "shared_encoder": "shared by encoder",
    "shared_both": "shared in both",
    "same_partner": "same partner",
    "pearson_mean": "activation r (mean)",
    "jaccard_mean": "firing overlap (mean)",
}
# The three per-pair axes of the semantics view: column -> axis title.
AXES = {"score": "decoder cosine", "activation_r": "activation r", "similarity": "explanation similarity"}


def _color(i: int) -> str:
    return ARCH_COLORS[i % len(ARCH_COLORS)]


def _pair_customdata(df: pd.DataFrame) -> np.ndarray | None:
    return np.stack([df["feature_a"].to_numpy(), df["feature_b"].to_numpy()], axis=1) if len(df) else None


def agreement_scatter(pairs: Mapping[str, pd.DataFrame], caption: str = "") -> go.Figure:
    """One panel per run pair: a point per matched pair, x = decoder cosine, y = activation correlation.

    Frames need feature_a, feature_b, decoder_score and pearson; customdata holds the two features for clicks.
    """
    labels = list(pairs)
    fig = make_subplots(rows=1, cols=max(1, len(labels)), shared_yaxes=True, shared_xaxes=True,
                        subplot_titles=labels, horizontal_spacing=0.04)
    for i, label in enumerate(labels, start=1):
        df = pairs[label]
        fig.add_trace(go.Scattergl(
            x=df["decoder_score"], y=df["pearson"], mode="markers", name=f"{label}: matched pairs",
            marker={"size": 5, "opacity": 0.45, "color": _color(i - 1)}, customdata=_pair_customdata(df),
            hovertemplate=("A %{customdata[0]} ↔ B %{customdata[1]}<br>decoder cosine %{x:.3f}<br>"
                           "activation r %{y:.3f}<extra></extra>")), row=1, col=i)
    fig = finish(fig, "Decoder cosine vs activation correlation of matched pairs",
                 "decoder cosine", "activation r (Pearson)", caption, height=460)
    for col in range(2, len(labels) + 1):
        fig.update_yaxes(title_text="", row=1, col=col)
    return fig


def encoder_decoder_figure(table: pd.DataFrame, caption: str = "") -> go.Figure:
    """One bar per agreement measure: the mean over the seed pairs, whiskers from the lowest to the highest pair.

    All measures lie in [0, 1]; one bar each keeps the values readable on a slide whatever the number of pairs.
    """
    measures = [c for c in AGREEMENT_MEASURES if c in table.columns and table[c].notna().any()]
    values = table[measures].astype(float)
    mean, low, high = values.mean(), values.min(), values.max()
    n = len(table)
    fig = go.Figure(go.Bar(
        x=[AGREEMENT_MEASURES[c] for c in measures], y=mean.to_numpy(), marker_color=_color(0),
        name=f"mean over {n} seed pair{'s' if n != 1 else ''}" + (" (whiskers: lowest to highest)" if n > 1 else ""),
        error_y={"type": "data", "symmetric": False, "array": (high - mean).to_numpy(),
                 "arrayminus": (mean - low).to_numpy(), "visible": n > 1, "color": "#444"},
        text=[f"{v:.2f}" for v in mean], textposition="outside", cliponaxis=False,
        hovertemplate="%{x}: mean %{y:.3f}<extra></extra>"))
    fig = finish(fig, "Decoder, encoder and activation agreement of the seed pairs", "", "MCC, fraction or r",
                 caption, height=440)
    fig.update_yaxes(range=[0, 1.12])
    return fig


def three_axes_figure(frames: Mapping[str, pd.DataFrame], caption: str = "") -> go.Figure:
    """The three views of a matched pair side by side: decoder cosine, activation correlation, explanation similarity.

    Panels: decoder vs activation, decoder vs explanation, activation vs explanation; one colour per comparison.
    """
    panels = [("score", "activation_r"), ("score", "similarity"), ("activation_r", "similarity")]
    titles = [f"{AXES[y]} vs {AXES[x]}" for x, y in panels]
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles, horizontal_spacing=0.07)
    for i, (label, df) in enumerate(frames.items()):
        for col, (x, y) in enumerate(panels, start=1):
            fig.add_trace(go.Scattergl(
                x=df[x], y=df[y], mode="markers", name=f"{label}: matched pairs", legendgroup=label,
                showlegend=col == 1, marker={"size": 5, "opacity": 0.55, "color": _color(i)},
                customdata=_pair_customdata(df),
                hovertemplate=(f"A %{{customdata[0]}} ↔ B %{{customdata[1]}}<br>{AXES[x]} %{{x:.3f}}<br>"
                               f"{AXES[y]} %{{y:.3f}}<extra></extra>")), row=1, col=col)
    fig = finish(fig, "Three views of each matched pair: decoder, activations and explanations", "", "", caption,
                 height=440)
    for col, (x, y) in enumerate(panels, start=1):
        fig.update_xaxes(title_text=AXES[x], row=1, col=col)
        fig.update_yaxes(title_text=AXES[y], row=1, col=col)
    return fig


def orphan_figure(values: Mapping[str, Mapping[str, np.ndarray]], measure: str, caption: str = "",
                  log: bool = False) -> go.Figure:
    """Box plots of one per-latent measure for orphan and shared latents, one pair of boxes per run."""
    fig = go.Figure()
    for j, group in enumerate(("orphan", "shared")):
        xs, ys = [], []
        for run, groups in values.items():
            v = np.asarray(groups.get(group, []), float)
            v = v[np.isfinite(v)]
            xs.extend([run] * len(v))
            ys.extend(v.tolist())
        fig.add_trace(go.Box(x=xs, y=ys, name=f"{group} latents", marker_color=THRESHOLD_COLOR if j == 0 else _color(0),
                             boxmean=True, hovertemplate="%{x}<br>" + measure + " %{y:.3g}<extra></extra>"))
    fig.update_layout(boxmode="group")
    fig = finish(fig, f"Orphan vs shared latents: {measure}", "run", measure, caption, height=440)
    if log:
        fig.update_yaxes(type="log")
    return fig


def best_score_histogram(best: Mapping[str, np.ndarray], threshold: float, caption: str = "") -> go.Figure:
    """Distribution of each latent's best cosine in its least similar other seed, one outline per run (outlines
    stay readable where filled bars would hide each other); orphans lie left of the threshold."""
    fig = go.Figure()
    low = -1.0 if any(np.nanmin(v) < 0 for v in best.values() if np.isfinite(v).any()) else 0.0
    edges = np.linspace(low, 1.0, round((1.0 - low) / 0.02) + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    for i, (run, v) in enumerate(best.items()):
        v = np.asarray(v, float)
        counts, _ = np.histogram(v[np.isfinite(v)], bins=edges)
        fig.add_trace(go.Scatter(x=centers, y=counts, name=run, mode="lines", line={"shape": "hvh", "width": 2,
                                 "color": _color(i)}, hovertemplate="best cosine %{x:.2f}: %{y} latents<extra>"
                                 + run + "</extra>"))
    mark_threshold(fig, threshold, f"orphan threshold {threshold:g}")
    return finish(fig, "Each latent's best match in its least similar other seed", "best decoder cosine (min over "
                  "the other seeds of the nearest neighbour's cosine)", "latents per 0.02 bin", caption, height=420)


def fan_in_figure(fan_in: np.ndarray, caption: str = "") -> go.Figure:
    """How many latents of the smaller run pick each latent of the larger run as their top partner."""
    counts = np.bincount(np.asarray(fan_in, int))
    fig = go.Figure(go.Bar(x=list(range(len(counts))), y=counts, name="latents of the larger run",
                           marker_color=_color(0), text=[f"{c:,}" for c in counts], textposition="outside",
                           hovertemplate="picked by %{x} latents: %{y} latents<extra></extra>"))
    fig = finish(fig, "Many-to-one: how many smaller-run latents share each larger-run partner",
                 "number of smaller-run latents whose top partner it is", "latents of the larger run", caption,
                 height=400)
    fig.update_xaxes(dtick=1)
    return fig
