"""Figures for cross-seed consistency: PW-MCC summary and matrix, score histograms, shared fraction, frequency bins, steps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from saecore.metrics import SHARED_THRESHOLD
from saecore.text import arch_text, setting_text
from saecore.plots.style import (ARCH_COLORS, DASHES, TICK_WIDTH, arch_color, finish, mark_chance, mark_threshold,
                                 wrap_label)


def sign_label(sign: str) -> str:
    return "|cos|" if sign == "abs" else "signed cosine"


def family_summary_figure(summary: pd.DataFrame, chance: Mapping[str, float] | None = None, caption: str = "") -> go.Figure:
    """PW-MCC per family against its sparsity setting: per-pair values as points beside the family mean."""
    fig = go.Figure()
    archs = sorted(summary["architecture"].unique()) if len(summary) else []
    cats = (summary[["architecture", "sparsity", "sparsity_value"]].drop_duplicates()
            .sort_values(["architecture", "sparsity_value", "sparsity"], na_position="last"))
    keys = [f"{a}: {s}" for a, s in zip(cats["architecture"], cats["sparsity"])]
    labels = [setting_text(a, s) if s != "-" else f"{arch_text(a)} (sparsity not recorded)"
              for a, s in zip(cats["architecture"], cats["sparsity"])]
    position = {key: i for i, key in enumerate(keys)}
    for arch in archs:
        sub = summary[summary["architecture"] == arch]
        color = arch_color(archs, arch)
        x_pairs = np.array([position[f"{arch}: {s}"] for s in sub["sparsity"]], dtype=float)
        # Pair values sit just left of the mean, spread a little so that equal values stay visible.
        rank = sub.groupby("sparsity").cumcount().to_numpy()
        x_pairs = x_pairs - 0.18 + 0.04 * (rank % 4)
        fig.add_trace(go.Scatter(
            x=x_pairs, y=sub["pw_mcc"], mode="markers", name=f"{arch_text(arch)}: each seed pair",
            marker={"color": color, "size": 8, "symbol": "circle-open", "line": {"width": 2}},
            customdata=np.stack([sub["family"], sub["run_a"], sub["run_b"]], axis=1),
            hovertemplate="%{customdata[0]}<br>%{customdata[1]} ↔ %{customdata[2]}<br>PW-MCC %{y:.4f}<extra></extra>"))
        means = sub.groupby("sparsity", sort=False)["pw_mcc"].mean()
        order = sorted(means.index, key=lambda sp: position[f"{arch}: {sp}"])
        fig.add_trace(go.Scatter(
            x=[position[f"{arch}: {sp}"] for sp in order], y=[means[sp] for sp in order], mode="markers+lines",
            name=f"{arch_text(arch)}: family mean", marker={"color": color, "size": 14, "symbol": "diamond"},
            line={"color": color, "width": 1.5}, text=[f"{arch}: {sp}" for sp in order],
            hovertemplate="%{text}<br>mean PW-MCC %{y:.4f}<extra></extra>"))
    for i, (label, value) in enumerate((chance or {}).items()):
        mark_chance(fig, value, label=f"chance {label}", dash=DASHES[i % len(DASHES)])
    fig.update_xaxes(tickmode="array", tickvals=list(range(len(labels))),
                     ticktext=[wrap_label(text, TICK_WIDTH) for text in labels],
                     range=[-0.6, max(len(labels) - 0.4, 0.6)])
    fig.update_yaxes(range=[0, 1.02])
    return finish(fig, "PW-MCC per family vs sparsity setting", "architecture and sparsity setting",
                  "PW-MCC (mean matched decoder cosine)", caption)


def pwmcc_matrix_figure(names: Sequence[str], matrix: np.ndarray, chance: float | None = None, caption: str = "") -> go.Figure:
    """R × R heatmap of pairwise MCC with the values written in the cells."""
    short = [str(n) for n in names]
    text = [[f"{v:.3f}" for v in row] for row in matrix]
    fig = go.Figure(go.Heatmap(z=matrix, x=short, y=short, text=text, texttemplate="%{text}", zmin=0, zmax=1,
                               colorscale="Viridis", colorbar={"title": {"text": "PW-MCC"}},
                               hovertemplate="%{y} ↔ %{x}<br>PW-MCC %{z:.4f}<extra></extra>"))
    ticks = {"tickmode": "array", "tickvals": short, "ticktext": [wrap_label(n, TICK_WIDTH) for n in short]}
    fig.update_xaxes(**ticks)
    fig.update_yaxes(autorange="reversed", **ticks)
    if chance is not None:
        ticks = [t for t in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0) if abs(t - chance) > 0.06]
        vals = sorted(ticks + [chance])
        fig.update_traces(colorbar={"tickvals": vals,
                                    "ticktext": [f"chance {v:.2f}" if v == chance else f"{v:.1f}" for v in vals]})
        caption = f"{caption} Chance level (random dictionaries, same shapes): {chance:.3f}.".strip()
    return finish(fig, "Pairwise MCC between runs", "run", "run", caption)


def score_histogram(scores: Mapping[str, np.ndarray], chance: float | None = None, sign: str = "signed",
                    caption: str = "") -> go.Figure:
    """Distribution of per-feature matched scores, one trace per run pair."""
    fig = go.Figure()
    for label, values in scores.items():
        v = np.asarray(values, dtype=float)
        fig.add_trace(go.Histogram(x=v[~np.isnan(v)], name=label, opacity=0.55, xbins={"start": -1, "end": 1.0001, "size": 0.02}))
    fig.update_layout(barmode="overlay")
    finite = [float(np.nanmin(v)) for v in scores.values() if np.isfinite(np.asarray(v, dtype=float)).any()]
    low = min(finite + ([chance] if chance is not None else []) + [SHARED_THRESHOLD]) - 0.03
    fig.update_xaxes(range=[max(-1.0, low), 1.01])
    mark_chance(fig, chance, axis="x", label="chance MCC")
    mark_threshold(fig, SHARED_THRESHOLD, f"shared threshold {SHARED_THRESHOLD}")
    return finish(fig, "Per-feature match scores", f"matched decoder {sign_label(sign)}", "number of features", caption)


def shared_fraction_figure(curves: Mapping[str, pd.DataFrame], chance: float | None = None, sign: str = "signed",
                           caption: str = "") -> go.Figure:
    """Fraction of features whose matched partner exceeds a threshold, as the threshold varies."""
    fig = go.Figure()
    for label, df in curves.items():
        fig.add_trace(go.Scatter(x=df["threshold"], y=df["shared_fraction"], mode="lines", name=label))
    mark_threshold(fig, SHARED_THRESHOLD, f"shared threshold {SHARED_THRESHOLD} (Paulo & Belrose)")
    mark_chance(fig, chance, axis="x", label="chance MCC")
    fig.update_yaxes(range=[0, 1.02])
    return finish(fig, "Shared fraction vs threshold", f"threshold on matched decoder {sign_label(sign)}",
                  "fraction of features shared", caption)


def bin_labels(bins: pd.DataFrame) -> list[str]:
    """Readable frequency-bin labels ('never fires' for the bin of features that never fired)."""
    out = []
    for _, b in bins.iterrows():
        out.append("never fires" if b["bin"] < 0 else f"{b['freq_low']:.1e}–{b['freq_high']:.1e}")
    return out


def bin_ticks(labels: list[str]) -> dict:
    """Axis settings that write each bin's range on two lines ("low–" over "high"), narrow enough to stay level."""
    return {"tickmode": "array", "tickvals": labels, "ticktext": [text.replace("–", "–<br>") for text in labels]}


def frequency_bins_figure(bins: pd.DataFrame, chance: float | None = None, sign: str = "signed",
                          caption: str = "") -> go.Figure:
    """Mean ± sd of per-feature consistency in each activation-frequency bin, with counts."""
    labels = bin_labels(bins)
    fig = go.Figure(go.Bar(
        x=labels, y=bins["mean"], error_y={"type": "data", "array": bins["sd"].fillna(0)}, name="mean ± sd",
        marker_color=ARCH_COLORS[0], text=[f"n={int(c)}" for c in bins["count"]], textposition="inside",
        insidetextanchor="start", hovertemplate="%{x}<br>mean %{y:.4f}<extra></extra>"))
    mark_chance(fig, chance, label="chance MCC")
    fig.update_xaxes(**bin_ticks(labels))
    fig.update_yaxes(range=[min(0.0, float(np.nanmin(bins["mean"] - bins["sd"].fillna(0)))) if len(bins) else 0, 1.05])
    return finish(fig, "Consistency by activation frequency", "activation frequency bin (firing fraction, log-spaced)",
                  f"per-feature match score ({sign_label(sign)})", caption)


def contribution_figure(bins: pd.DataFrame, caption: str = "") -> go.Figure:
    """Each frequency bin's contribution to the mean score (bars), its running sum (line) and share of features.

    No chance line: a bin's contribution is a part of the mean, not a match score, so chance MCC is no reference.
    """
    labels = bin_labels(bins)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=labels, y=bins["contribution"], name="contribution of bin", marker_color=ARCH_COLORS[0]),
                  secondary_y=False)
    fig.add_trace(go.Scatter(x=labels, y=bins["cumulative"], mode="lines+markers", name="cumulative contribution",
                             line={"color": ARCH_COLORS[1]}), secondary_y=False)
    fig.add_trace(go.Scatter(x=labels, y=bins["share"], mode="lines+markers", name="share of features",
                             line={"color": ARCH_COLORS[2], "dash": "dot"}), secondary_y=True)
    fig = finish(fig, "Contribution of each frequency bin to the mean match score",
                 "activation frequency bin (firing fraction, log-spaced)", "contribution to mean score", caption)
    fig.update_xaxes(**bin_ticks(labels))
    fig.update_yaxes(rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text="share of features", secondary_y=True, range=[0, 1.02], tickmode="linear", tick0=0,
                     dtick=0.2, tickformat=".0%", showgrid=False)
    return fig


def steps_figure(steps: pd.DataFrame, chance: float | None = None, caption: str = "") -> go.Figure:
    """PW-MCC (mean ± sd over pairs, and each pair) against training step."""
    fig = go.Figure()
    agg = steps.groupby("step")["pw_mcc"].agg(["mean", "std"]).reset_index()
    fig.add_trace(go.Scatter(x=steps["step"], y=steps["pw_mcc"], mode="markers", name="each pair",
                             marker={"color": ARCH_COLORS[0], "opacity": 0.4}))
    fig.add_trace(go.Scatter(x=agg["step"], y=agg["mean"], mode="lines+markers", name="mean ± sd over pairs",
                             error_y={"type": "data", "array": agg["std"].fillna(0)}, line={"color": ARCH_COLORS[0]}))
    mark_chance(fig, chance, label="chance MCC")
    fig.update_xaxes(type="log")
    fig.update_yaxes(range=[0, 1.02])
    return finish(fig, "PW-MCC during training", "training step (tokens seen, log scale)", "PW-MCC", caption)
