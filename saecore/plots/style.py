"""Common look of every figure: title, axis labels, legend and a caption inside the image (screenshots stand alone)."""

from __future__ import annotations

import textwrap

import plotly.graph_objects as go

CHANCE_COLOR = "#7f7f7f"
THRESHOLD_COLOR = "#d62728"
ARCH_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def arch_color(architectures: list[str], arch: str) -> str:
    """A stable colour per architecture within one figure."""
    names = sorted(set(architectures))
    return ARCH_COLORS[names.index(arch) % len(ARCH_COLORS)] if arch in names else ARCH_COLORS[0]


def wrap_caption(caption: str, width: int = 130) -> str:
    return "<br>".join(textwrap.wrap(caption, width)) if caption else ""


def finish(fig: go.Figure, title: str, x_title: str, y_title: str, caption: str = "", height: int = 460) -> go.Figure:
    """Apply title, axis titles and legend; the caption is kept in layout.meta for `with_caption` (exports)."""
    fig.update_layout(
        title={"text": title, "x": 0.01, "xanchor": "left"},
        template="plotly_white", height=height,
        margin={"l": 70, "r": 30, "t": 70, "b": 70},
        legend={"title": {"text": ""}, "orientation": "v"}, showlegend=True,
        font={"size": 13},
        meta={"caption": caption},
    )
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title)
    return fig


def caption_of(fig: go.Figure) -> str:
    meta = fig.layout.meta
    return str(meta.get("caption", "")) if isinstance(meta, dict) else ""


def with_caption(fig: go.Figure, caption: str | None = None) -> go.Figure:
    """A copy of the figure with its caption written under the plot, so an exported image stands alone."""
    out = go.Figure(fig)
    lines = wrap_caption(caption if caption is not None else caption_of(fig))
    if not lines:
        return out
    n_lines = lines.count("<br>") + 1
    base = out.layout.margin.b if out.layout.margin.b is not None else 70
    bottom = base + 17 * n_lines + 12
    height = (out.layout.height or 460) + 17 * n_lines + 12
    out.update_layout(height=height, margin={"b": bottom})
    out.add_annotation(text=lines, xref="paper", yref="paper", x=0, y=0, yshift=-(bottom - 6),
                       xanchor="left", yanchor="bottom", showarrow=False, align="left",
                       font={"size": 12, "color": "#444"})
    return out


def mark_chance(fig: go.Figure, value: float | None, axis: str = "y", label: str = "chance") -> None:
    """A dashed line at the chance level (random dictionaries of the same shapes), labelled on the plot."""
    if value is None or value != value:
        return
    add = fig.add_hline if axis == "y" else fig.add_vline
    position = "top left" if axis == "y" else "top right"
    add(value, line_dash="dash", line_color=CHANCE_COLOR, annotation_text=f"{label} {value:.3f}",
        annotation_position=position, annotation_font_color=CHANCE_COLOR)


def mark_threshold(fig: go.Figure, value: float, label: str) -> None:
    """A vertical line at a threshold, labelled on the plot."""
    fig.add_vline(value, line_dash="dot", line_color=THRESHOLD_COLOR, annotation_text=label,
                  annotation_position="top right", annotation_font_color=THRESHOLD_COLOR)
