"""Common look of every figure: title, axis labels, legend and a caption inside the image (screenshots stand alone).

Layout rules that keep text from clipping or overlapping at any chart width: the title sits at the top of the
figure in a top margin sized from its fonts, the legend sits at the bottom of the figure (plotly reserves its
space below the axis titles), every axis grows its margin for its tick labels and title (automargin), long labels
are wrapped, and reference lines (chance level, thresholds) are named in the legend instead of written on the plot.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable
from typing import Any

import plotly.graph_objects as go

CHANCE_COLOR = "#7f7f7f"
THRESHOLD_COLOR = "#d62728"
CAPTION_COLOR = "#555"
DASHES = ["dash", "dot", "dashdot", "longdash", "longdashdot"]
ARCH_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]

FONT_SIZE = 13
TITLE_SIZE = 17
CAPTION_SIZE = 12
LINE_HEIGHT = 1.3  # line height of wrapped text, in font sizes
TITLE_WIDTH = 64  # characters per title line: fits a 1000 px chart even at presentation size
LEGEND_WIDTH = 36
TICK_WIDTH = 24
CAPTION_WIDTH = 130
PANEL_TITLE_WIDTH = 72  # characters per subplot-title line when there is a single panel
TITLE_GAP = 8  # pixels between the top of the figure and the title
LEGEND_ROW_PX = 950  # the narrowest usual chart, for estimating how many rows the legend takes
PRESENTATION_SCALE = 1.45

# Layout lengths in pixels that presentation() grows with the fonts.
_PIXEL_KEYS = frozenset({"xshift", "yshift", "standoff", "borderpad", "thickness", "tracegroupgap", "itemwidth",
                         "ticklen", "xpad", "ypad", "ticklabelstandoff"})
_MARGIN_KEYS = ("l", "r", "t", "b", "pad")
_PLOTLY_MARGIN = {"l": 80, "r": 80, "t": 100, "b": 80, "pad": 0}
_BREAK = re.compile(r"(?<=[\s/])")


def arch_color(architectures: list[str], arch: str) -> str:
    """A stable colour per architecture within one figure."""
    names = sorted(set(architectures))
    return ARCH_COLORS[names.index(arch) % len(ARCH_COLORS)] if arch in names else ARCH_COLORS[0]


def shorten(text: str, width: int) -> str:
    """The text cut to `width` characters, an ellipsis marking the cut."""
    return text if len(text) <= width else text[: max(width - 1, 0)].rstrip() + "…"


def _chunks(word: str, width: int) -> list[str]:
    """A word longer than a line cut into line-sized pieces."""
    return [word[i:i + width] for i in range(0, len(word), width)] or [""]


def _wrap_line(text: str, width: int) -> list[str]:
    """One paragraph broken into lines of at most `width` characters, at spaces or after '/'."""
    lines: list[str] = []
    line = ""
    for token in _BREAK.split(text):
        for piece in _chunks(token, width) if len(token.rstrip()) > width else [token]:
            if line and len(line.rstrip()) + len(piece.rstrip()) > width:
                lines.append(line.rstrip())
                line = ""
            line += piece
    return lines + [line.rstrip()]


def wrap_label(text: str, width: int, max_lines: int = 3) -> str:
    """A label broken into lines (`<br>`) of at most `width` characters, at spaces or after '/'; the rest elided.

    Run names such as `topk_k32/seed0/checkpoints/149504` have no spaces, so slashes are break points too.
    Line breaks already in the text are kept; `max_lines` applies to each of its paragraphs.
    """
    out = []
    for paragraph in str(text).split("<br>"):
        lines = _wrap_line(" ".join(paragraph.split()), width)
        if len(lines) > max_lines:
            lines = lines[:max_lines - 1] + [shorten(" ".join(lines[max_lines - 1:]), width)]
        out += lines
    return "<br>".join(out)


def line_count(text: str | None) -> int:
    """How many lines a plotly text takes (0 when empty)."""
    return str(text).count("<br>") + 1 if text else 0


def wrap_caption(caption: str, width: int = CAPTION_WIDTH) -> str:
    """A caption wrapped into `<br>`-separated lines."""
    return "<br>".join(textwrap.wrap(caption, width)) if caption else ""


def text_block(lines: int, size: float) -> float:
    """Height in pixels of `lines` lines of text at font `size`."""
    return lines * size * LINE_HEIGHT


def _panel_titles(fig: go.Figure) -> list[Any]:
    """Subplot titles: the annotations that make_subplots puts just above each panel."""
    return [a for a in fig.layout.annotations if a.yref == "paper" and a.y == 1.0 and a.yanchor == "bottom"]


def _wrap_panel_titles(fig: go.Figure) -> int:
    """Wrap subplot titles to their panel's width; returns the most lines any of them takes."""
    titles = _panel_titles(fig)
    if not titles:
        return 0
    width = max(24, PANEL_TITLE_WIDTH // len(titles))
    for ann in titles:
        ann.update(text=wrap_label(ann.text or "", width), font={"size": FONT_SIZE})
    return max(line_count(a.text) for a in titles)


def title_pad(title: str, size: float) -> float:
    """Space above a title anchored at the top of the figure.

    Plotly lifts a title of several lines by about 0.7 of its font size more than a one-line title; this puts
    the first line at the same place either way.
    """
    return TITLE_GAP + size * (1.05 if line_count(title) > 1 else 0.3)


def legend_height(names: Iterable[str], size: float = FONT_SIZE, row_px: float = LEGEND_ROW_PX) -> float:
    """Estimated height of a horizontal legend of these entries: lets the figure grow instead of the plot shrinking."""
    rows, used, tallest, total = 0, 0.0, 0, 0.0
    for name in names:
        lines = name.split("<br>")
        entry = 40 + 0.62 * size * max(len(line) for line in lines)
        if rows == 0 or used + entry > row_px:
            total += text_block(tallest, size)
            rows, used, tallest = rows + 1, 0.0, 0
        used += entry
        tallest = max(tallest, len(lines))
    return total + text_block(tallest, size) + 6 * rows


def _legend_names(fig: go.Figure) -> list[str]:
    """The names the legend will show."""
    return [t.name for t in fig.data if t.name and t.showlegend is not False]


def finish(fig: go.Figure, title: str, x_title: str, y_title: str, caption: str = "", height: int = 460) -> go.Figure:
    """Apply title, axis titles and legend; the caption is kept in layout.meta for `with_caption` (exports)."""
    for trace in fig.data:
        if trace.name:
            trace.name = wrap_label(trace.name, LEGEND_WIDTH)
    title = wrap_label(title, TITLE_WIDTH)
    panel_lines = _wrap_panel_titles(fig)
    top = TITLE_GAP + 0.1 * TITLE_SIZE + text_block(line_count(title), TITLE_SIZE) + 10
    if panel_lines:
        top += text_block(panel_lines, FONT_SIZE) + 4
    legend = legend_height(_legend_names(fig))
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left", "xref": "container", "y": 1, "yanchor": "top",
               "yref": "container", "pad": {"t": title_pad(title, TITLE_SIZE), "l": 12}, "font": {"size": TITLE_SIZE}},
        template="plotly_white", height=round(height + max(0.0, legend - text_block(1, FONT_SIZE))),
        margin={"l": 12, "r": 20, "t": round(top), "b": 8},
        legend={"title": {"text": ""}, "orientation": "h", "x": 0, "xanchor": "left", "xref": "container",
                "y": 0, "yanchor": "bottom", "yref": "container", "font": {"size": FONT_SIZE}},
        showlegend=True, font={"size": FONT_SIZE}, meta={"caption": caption},
    )
    fig.update_xaxes(title_text=x_title, automargin=True, title_standoff=10, ticklabelstandoff=4)
    fig.update_yaxes(title_text=y_title, automargin=True, title_standoff=10, ticklabelstandoff=4)
    return fig


def retitle(fig: go.Figure, title: str) -> go.Figure:
    """A copy with another title (e.g. naming the family shown); the top margin and height follow its line count."""
    out = go.Figure(fig)
    old = out.layout.title.text or ""
    new = wrap_label(title, TITLE_WIDTH)
    size = out.layout.title.font.size or TITLE_SIZE
    grow = round(text_block(line_count(new) - line_count(old), size))
    top = out.layout.margin.t if out.layout.margin.t is not None else _PLOTLY_MARGIN["t"]
    out.update_layout(title={"text": new, "pad": {"t": title_pad(new, size)}}, margin={"t": top + grow},
                      height=(out.layout.height or 450) + grow)
    return out


def caption_of(fig: go.Figure) -> str:
    """The caption kept in the figure's layout.meta ('' when none)."""
    meta = fig.layout.meta
    return str(meta.get("caption", "")) if isinstance(meta, dict) else ""


def scale_of(fig: go.Figure) -> float:
    """How much `presentation` enlarged this figure (1 for a figure drawn at normal size)."""
    meta = fig.layout.meta
    return float(meta.get("scale", 1.0)) if isinstance(meta, dict) else 1.0


def with_caption(fig: go.Figure, caption: str | None = None) -> go.Figure:
    """A copy of the figure with its caption written under the title, so an exported image stands alone."""
    out = go.Figure(fig)
    scale = scale_of(fig)
    # An enlarged figure is exported proportionally wider (export.figure_image), so lines keep their length.
    lines = wrap_caption(caption if caption is not None else caption_of(fig), CAPTION_WIDTH)
    if not lines:
        return out
    size = CAPTION_SIZE * scale
    extra = round(text_block(line_count(lines), size) + 8 * scale)
    top = out.layout.margin.t if out.layout.margin.t is not None else _PLOTLY_MARGIN["t"]
    out.update_layout(height=(out.layout.height or 450) + extra, margin={"t": top + extra},
                      title={"subtitle": {"text": lines, "font": {"size": size, "color": CAPTION_COLOR}}})
    return out


def reference_line(fig: go.Figure, value: float | None, label: str, axis: str = "y", color: str = CHANCE_COLOR,
                   dash: str = "dash", row: int | None = None, col: int | None = None) -> None:
    """A dashed line at a reference value, named in the legend (a label written on the plot would cover data)."""
    if value is None or value != value:
        return
    add = fig.add_hline if axis == "y" else fig.add_vline
    where = {"row": row, "col": col} if row is not None else {}
    add(value, line_dash=dash, line_color=color, line_width=1.5, **where)
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=label, hoverinfo="skip",
                             line={"color": color, "dash": dash, "width": 1.5}))


def mark_chance(fig: go.Figure, value: float | None, axis: str = "y", label: str = "chance",
                dash: str = "dash") -> None:
    """A dashed line at the chance level (random dictionaries of the same shapes), named with its value."""
    if value is not None and value == value:
        reference_line(fig, value, f"{label} {value:.3f}", axis, dash=dash)


def mark_threshold(fig: go.Figure, value: float, label: str) -> None:
    """A dotted vertical line at a threshold, named in the legend."""
    reference_line(fig, value, label, "x", THRESHOLD_COLOR, "dot")


def _scaled_font(font: dict, scale: float) -> dict:
    """A font spec with its size (one number or one per point) multiplied."""
    size = font.get("size")
    if isinstance(size, (int, float)):
        return {**font, "size": size * scale}
    if isinstance(size, (list, tuple)):
        return {**font, "size": [s * scale if isinstance(s, (int, float)) else s for s in size]}
    return font


def _scaled(node: Any, scale: float) -> Any:
    """The plotly spec with every font size and layout length in pixels multiplied (data values untouched)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if isinstance(value, dict) and key.endswith("font"):
                out[key] = _scaled_font(value, scale)
            elif key in _PIXEL_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = round(value * scale)
            elif key == "pad" and isinstance(value, dict):
                out[key] = {k: v * scale if isinstance(v, (int, float)) else v for k, v in value.items()}
            else:
                out[key] = _scaled(value, scale)
        return out
    if isinstance(node, (list, tuple)):
        return [_scaled(v, scale) for v in node]
    return node


def presentation(fig: go.Figure, scale: float = PRESENTATION_SCALE) -> go.Figure:
    """A copy drawn `scale` times bigger: every font, the height, the margins and pixel offsets grow together.

    Text keeps its place relative to the plot, so a figure that does not clip or overlap at normal size does not
    at presentation size either (on a chart about `scale` times wider).
    """
    spec = fig.to_plotly_json()
    layout = dict(spec.get("layout", {}))
    layout["font"] = {**layout.get("font", {}), "size": (layout.get("font", {}).get("size") or 12)}
    layout["margin"] = {k: (layout.get("margin", {}).get(k, _PLOTLY_MARGIN[k]) or 0) * scale for k in _MARGIN_KEYS}
    layout["height"] = (layout.get("height") or 450) * scale
    if layout.get("width"):
        layout["width"] = layout["width"] * scale
    meta = layout.get("meta") if isinstance(layout.get("meta"), dict) else {}
    layout["meta"] = {**meta, "scale": scale_of(fig) * scale}
    scaled_layout = _scaled({k: v for k, v in layout.items() if k not in ("margin", "meta", "template")}, scale)
    scaled_layout.update(margin=layout["margin"], meta=layout["meta"])
    if "template" in layout:
        scaled_layout["template"] = layout["template"]
    return go.Figure({"data": _scaled(spec.get("data", []), scale), "layout": scaled_layout})

