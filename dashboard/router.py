"""Deep links on a fresh server: make sure pages always run through app.py's st.navigation router."""

from __future__ import annotations

import streamlit as st


def ensure_router() -> None:
    """Rerun through app.py when Streamlit ran a page file directly.

    Streamlit treats an app with a pages/ folder as a legacy multipage app until the first script run calls
    st.navigation; a first request to /<page> on a fresh server would then run the page without app.py
    (no page config, the wrong sidebar). Clearing that flag and rerunning routes the request properly.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()
