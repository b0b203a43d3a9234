"""Charts with their caption and downloads (PNG, SVG, CSV), and an offline HTML report of the current view."""

from __future__ import annotations

import re

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard.state import PRESENT
from saecore.plots.export import figure_image
from saecore.plots.style import presentation, retitle
from saecore.report import Section, html_report

_SECTIONS = "_saecore_report_sections"
SLUG_LENGTH = 60


def begin_report() -> None:
    """Start collecting this page run's figures and tables for its HTML report."""
    st.session_state[_SECTIONS] = []


def add_section(section: Section) -> None:
    st.session_state.setdefault(_SECTIONS, []).append(section)


def slug(text: str, limit: int = SLUG_LENGTH) -> str:
    """A file name from a title: lowercase words joined by hyphens, cut after a whole word to at most `limit`."""
    full = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    if len(full) <= limit:
        return full or "figure"
    cut = full[:limit + 1].rsplit("-", 1)[0] if "-" in full[:limit + 1] else full[:limit]
    return cut.strip("-") or "figure"


def presenting() -> bool:
    """Whether this session shows the dashboard in presentation mode (bigger figures for a meeting screen)."""
    return bool(st.session_state.get(PRESENT, False))


def chart(fig: go.Figure, data: pd.DataFrame | None, caption: str, key: str, on_select: str = "ignore",
          subject: str = ""):
    """Draw a figure with its caption and download buttons; returns the selection event when on_select='rerun'.

    `subject` (e.g. the family's short label) is added to the title, so a screenshot or export says what it shows.
    """
    if subject:
        fig = retitle(fig, f"{fig.layout.title.text or key}: {subject}")
    title = (fig.layout.title.text or key).replace("<br>", " ")
    report_fig = fig
    if presenting():
        fig = presentation(fig)
    kwargs = {"on_select": on_select, "selection_mode": ("points",)} if on_select != "ignore" else {}
    # theme=None: the figure looks exactly like its PNG/SVG export and the HTML report.
    event = st.plotly_chart(fig, key=key, config={"displaylogo": False}, theme=None, **kwargs)
    st.caption(caption)
    name = slug(title)
    with st.container(key=f"share_{key}", horizontal=True):
        st.download_button("PNG", lambda: figure_image(fig, "png"), file_name=f"{name}.png", mime="image/png",
                           key=f"png_{key}", on_click="ignore", icon="🖼️")
        st.download_button("SVG", lambda: figure_image(fig, "svg"), file_name=f"{name}.svg", mime="image/svg+xml",
                           key=f"svg_{key}", on_click="ignore")
        if data is not None:
            st.download_button("CSV", lambda: data.to_csv(index=False), file_name=f"{name}.csv", mime="text/csv",
                               key=f"csv_{key}", on_click="ignore", icon="📄")
    add_section(Section(title=title, figure=report_fig, caption=caption))
    return event


def table_section(title: str, table: pd.DataFrame, caption: str = "") -> None:
    add_section(Section(title=title, table=table, caption=caption))


def key_numbers(title: str, numbers: dict[str, str], caption: str = "") -> None:
    """Add the view's key numbers (label -> formatted value, in this order) to its HTML report."""
    add_section(Section(title=title, metrics=dict(numbers), caption=caption))


def report_button(title: str, subtitle: str, key: str = "report") -> None:
    """Download an HTML file of everything this page drew (opens offline)."""
    sections = list(st.session_state.get(_SECTIONS, []))
    st.download_button("Download HTML report of this view", lambda: html_report(title, sections, subtitle),
                       file_name=f"{slug(title)}.html", mime="text/html", key=key, on_click="ignore", icon="📑",
                       disabled=not sections)
