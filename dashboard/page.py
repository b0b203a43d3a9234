"""The start every page shares: routing, the URL's view (with presentation mode), the report and the title."""

from __future__ import annotations

import streamlit as st

from dashboard import share
from dashboard.router import ensure_router
from dashboard.state import current_view
from saecore.viewstate import ViewState


def start(title: str, intro: str = "") -> ViewState:
    """Begin a page: the view to draw, an empty report for it, and its title and one-line introduction."""
    ensure_router()
    view = current_view()
    share.begin_report()
    st.title(title)
    if intro:
        st.markdown(intro)
    return view
