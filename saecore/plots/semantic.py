"""Figures for consistency vs semantics: decoder match score against explanation similarity, and the binned table."""

from __future__ import annotations

import html
from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from saecore.plots.style import ARCH_COLORS, CHANCE_COLOR, finish, reference_line


def bins_frame(edges, counts, means) -> pd.DataFrame:
    """The paper's binned table: one row per log-spaced score bin with its range, pair count and mean similarity."""
    edges = list(edges)
    return pd.DataFrame({
        "bin": [f"{edges[i]:.3f}–{edges[i + 1]:.3f}" for i in range(len(counts))],
        "score_low": edges[:-1], "score_high": edges[1:], "pairs": list(counts),
        "mean_similarity": list(means)})


def _hover_text(text: str, width: int = 70) -> str:
    t = html.escape(str(text))
    return t if len(t) <= width else t[: width - 1] + "…"


def semantic_scatter(pairs: Mapping[str, pd.DataFrame], baselines: Mapping[str, float] | None = None,
                     caption: str = "") -> go.Figure:
    """One panel per comparison: a point per matched pair (x = decoder match score, y = explanation similarity).

    Each trace's customdata holds (feature_a, feature_b) so a clicked point can open the pair.
    """
    labels = list(pairs)
    fig = make_subplots(rows=1, cols=max(1, len(labels)), shared_yaxes=True, subplot_titles=labels,
                        horizontal_spacing=0.04)
    for i, label in enumerate(labels, start=1):
        df = pairs[label]
        custom = np.stack([df["feature_a"].to_numpy(), df["feature_b"].to_numpy(),
                           [_hover_text(t) for t in df["explanation_a"]],
                           [_hover_text(t) for t in df["explanation_b"]]], axis=1) if len(df) else None
        fig.add_trace(go.Scatter(
            x=df["score"], y=df["similarity"], mode="markers", name=f"{label}: matched pairs",
            marker={"size": 6, "opacity": 0.6, "color": ARCH_COLORS[(i - 1) % len(ARCH_COLORS)]}, customdata=custom,
            hovertemplate=("A %{customdata[0]}: %{customdata[2]}<br>B %{customdata[1]}: %{customdata[3]}<br>"
                           "match %{x:.3f} · explanation similarity %{y:.3f}<extra></extra>")), row=1, col=i)
    _baseline_lines(fig, labels, baselines)
    fig = finish(fig, "Decoder match score vs explanation similarity", "decoder match score",
                 "explanation similarity (embedding cosine)", caption, height=480)
    for col in range(2, len(labels) + 1):
        fig.update_yaxes(title_text="", row=1, col=col)
    return fig


def binned_figure(tables: Mapping[str, pd.DataFrame], baselines: Mapping[str, float] | None = None,
                  caption: str = "") -> go.Figure:
    """Mean explanation similarity per log-spaced bin of match score: one panel per comparison, bars with counts."""
    labels = list(tables)
    fig = make_subplots(rows=1, cols=max(1, len(labels)), shared_yaxes=True, subplot_titles=labels,
                        horizontal_spacing=0.05)
    for i, label in enumerate(labels, start=1):
        df = tables[label]
        color = ARCH_COLORS[(i - 1) % len(ARCH_COLORS)]
        fig.add_trace(go.Bar(x=df["bin"], y=df["mean_similarity"], name=f"{label}: matched pairs", marker_color=color,
                             text=[f"n={int(n)}" for n in df["pairs"]], textposition="outside",
                             hovertemplate="score %{x}<br>mean similarity %{y:.3f}<extra></extra>"),
                      row=1, col=i)
        fig.update_xaxes(tickmode="array", tickvals=list(df["bin"]),
                         ticktext=[str(b).replace("–", "–<br>") for b in df["bin"]], row=1, col=i)
    _baseline_lines(fig, labels, baselines)
    fig = finish(fig, "Explanation similarity by match-score bin (5 log-spaced bins)", "decoder match score bin",
                 "mean explanation similarity", caption, height=480)
    for col in range(2, len(labels) + 1):
        fig.update_yaxes(title_text="", row=1, col=col)
    return fig


def _baseline_lines(fig: go.Figure, labels: list[str], baselines: Mapping[str, float] | None) -> None:
    """The random-pair baseline of each panel as a dashed line, its value named in the legend or the panel title.

    With several panels the legend names the line once and each panel title carries its own value, so no
    legend entry has to repeat a long comparison label.
    """
    known = {col: base for col, label in enumerate(labels, start=1)
             if (base := (baselines or {}).get(label)) is not None and base == base}
    if len(labels) == 1 and known:
        reference_line(fig, known[1], f"random pairs {known[1]:.2f}", row=1, col=1)
        return
    for col, base in known.items():
        fig.add_hline(base, line_dash="dash", line_color=CHANCE_COLOR, line_width=1.5, row=1, col=col)
    titles = [a for a in fig.layout.annotations if a.yref == "paper" and a.y == 1.0]
    for col, base in known.items():
        if col <= len(titles):
            titles[col - 1].update(text=f"{titles[col - 1].text}<br>random pairs {base:.2f}")
    if known:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name="random unmatched pairs (mean)",
                                 hoverinfo="skip", line={"color": CHANCE_COLOR, "dash": "dash", "width": 1.5}))
