"""Presentation mode for meetings: one click switches fonts, charts, tables and navigation together."""

from __future__ import annotations

import streamlit as st

from dashboard.state import PRESENT, current_view

CSS = """
<style>
[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"], [data-testid="stExpandSidebarButton"],
[class*="st-key-controls"], [data-testid="stDownloadButton"], [class*="st-key-share_"] {
  display: none !important;
}
[data-testid="stMainBlockContainer"] { padding-top: 4.5rem; }
[data-testid="stMarkdownContainer"] p, [data-testid="stMarkdownContainer"] li,
[data-testid="stAlertContainer"] p { font-size: 1.3rem !important; line-height: 1.5; }
h1 { font-size: 3.6rem !important; } h2 { font-size: 2.4rem !important; } h3 { font-size: 1.9rem !important; }
h4 { font-size: 1.6rem !important; }
[data-testid="stMetricValue"] p { font-size: 2.8rem !important; line-height: 1.2; }
[data-testid="stMetricLabel"] p { font-size: 1.2rem !important; }
[data-testid="stCaptionContainer"], [data-testid="stCaptionContainer"] p { font-size: 1.1rem !important; }
[data-testid="stWidgetLabel"] p { font-size: 1.15rem !important; }
.stMarkdownBadge { font-size: 1.1rem !important; }
/* Data grids draw on a canvas that font sizes do not reach: zoom each one, at the width it had. */
[data-testid="stElementContainer"]:has(> [data-testid="stFullScreenFrame"] > [data-testid="stDataFrame"]) {
  zoom: 1.3; width: calc(100% / 1.3) !important;
}
</style>
"""


def active() -> bool:
    """Whether this run draws the presentation view (the URL's `present`, then this session's clicks)."""
    return current_view().present


def _set(on: bool) -> None:
    st.session_state[PRESENT] = on


def draw_switch(present: bool) -> None:
    """The switch: a sidebar button to start, an exit button on the page while presenting (plus the styles)."""
    if present:
        st.html(CSS)
        with st.container(key="present_exit", horizontal=True, horizontal_alignment="right"):
            st.button("Exit presentation mode", key="exit_present", icon=":material/close_fullscreen:",
                      type="tertiary", on_click=_set, args=(False,))
    else:
        st.sidebar.button("Presentation mode", key="start_present", icon=":material/slideshow:",
                          help="Larger fonts and charts, controls and downloads hidden, pages in a top bar",
                          on_click=_set, args=(True,))
