"""Figures of the synthetic model organism: GT-MCC and PW-MCC against training step, per architecture."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from saecore.plots.style import arch_color, finish, reference_line

PANELS = (("gt_mcc", "GT-MCC (learned vs ground truth)"), ("pw_mcc", "PW-MCC (between seeds)"))


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def curve_bands(curves: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, min and max over members (seeds or pairs) per architecture and step."""
    sel = curves[curves.metric == metric]
    return sel.groupby(["arch", "step"]).value.agg(["mean", "min", "max"]).reset_index()


def mcc_curves_figure(curves: pd.DataFrame, chance: dict | None = None, title: str = "Synthetic model organism",
                      caption: str = "") -> go.Figure:
    """Two panels (GT-MCC, PW-MCC vs step): per architecture the mean over seeds/pairs and a max–min band.

    curves: tidy table with columns arch, step, metric, member, value. chance: {"gt_mcc": x, "pw_mcc": y},
    the MCC of random dictionaries of the same shapes, drawn as dashed lines.
    """
    archs = list(dict.fromkeys(curves.arch))
    fig = make_subplots(rows=1, cols=2, subplot_titles=[label for _, label in PANELS], horizontal_spacing=0.08)
    for col, (metric, _) in enumerate(PANELS, start=1):
        bands = curve_bands(curves, metric)
        for arch in archs:
            b = bands[bands.arch == arch]
            color = arch_color(archs, arch)
            fig.add_trace(go.Scatter(x=b.step, y=b["max"], mode="lines", line={"width": 0}, hoverinfo="skip",
                                     showlegend=False, legendgroup=arch), row=1, col=col)
            fig.add_trace(go.Scatter(x=b.step, y=b["min"], mode="lines", line={"width": 0}, fill="tonexty",
                                     fillcolor=_rgba(color, 0.2), hoverinfo="skip", showlegend=False,
                                     legendgroup=arch), row=1, col=col)
            fig.add_trace(go.Scatter(x=b.step, y=b["mean"], mode="lines", line={"color": color, "width": 2},
                                     name=f"{arch} (mean, band = min–max)", legendgroup=arch,
                                     showlegend=col == 1,
                                     hovertemplate=f"{arch}<br>step %{{x}}<br>{metric} %{{y:.4f}}<extra></extra>"),
                          row=1, col=col)
    for col, (metric, label) in enumerate(PANELS, start=1):
        value = (chance or {}).get(metric)
        if value is not None and value == value:
            reference_line(fig, value, f"chance {label.split()[0]} {value:.3f}", row=1, col=col)
    fig.update_xaxes(title_text="training step", row=1, col=2)
    fig.update_yaxes(title_text="MCC (mean matched cosine)", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02])
    finish(fig, title, "training step", "MCC (mean matched cosine)", caption)
    fig.update_yaxes(title_text=None, row=1, col=2)
    return fig


def experiment_figure(summary: dict, curves: pd.DataFrame) -> go.Figure:
    """The MCC curves of an experiment summary (the --json contract), titled and captioned with its setting."""
    seeds = summary["seeds"]
    status = "" if summary.get("completed", True) else " — stopped early (partial)"
    title = f"Synthetic model organism, {summary['regime']} regime: consistency vs training step{status}"
    reached = {a: r.get("steps_done", summary["steps"]) for a, r in summary["results"].items()}
    schedule = f"{summary['steps']:,} steps" if status == "" else (
        f"{summary['steps']:,} steps planned, stopped at " + ", ".join(f"{a} {s:,}" for a, s in reached.items()))
    caption = (f"{summary['description']}. {len(seeds)} seeds ({', '.join(map(str, seeds))}), full batch, Adam, "
               f"{schedule}; band = min–max over seeds (GT) or seed pairs (PW); dashed = chance "
               "(random dictionaries of the same shapes); signed cosine.")
    return mcc_curves_figure(curves, summary.get("chance"), title, caption)
