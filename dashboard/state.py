"""View state shared by the pages: the URL (query params), the open workspace and presentation mode."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import streamlit as st

from dashboard.data import base_dir, workspace
from saecore.access import AccessError, display_path, parse_roots, resolve_workspace
from saecore.errors import SaecoreError
from saecore.viewstate import ViewState, from_params, to_params
from saecore.workspace import Workspace

ROOTS_ENV = "SAECORE_WORKSPACE_ROOTS"  # extra roots (os.pathsep-separated), besides `-- --root PATH` at launch
SESSION_VIEW = "_saecore_view"


def roots() -> list[Path]:
    """Folders the dashboard may open: data/ under the app, --root arguments and $SAECORE_WORKSPACE_ROOTS."""
    extra = [r for r in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if r]
    argv = list(sys.argv[1:]) + [a for r in extra for a in ("--root", r)]
    return parse_roots(argv, base_dir())


def default_workspace() -> str:
    """data/demo when shipped, else data/."""
    return "data/demo" if (base_dir() / "data" / "demo").is_dir() else "data"


def current_view() -> ViewState:
    """The view in the URL; when navigation dropped the query params, the last view of this session."""
    view = from_params(st.query_params.get_all)
    if not st.query_params and SESSION_VIEW in st.session_state:
        view = st.session_state[SESSION_VIEW]
    if not view.workspace:
        view = view.replace(workspace=default_workspace())
    return view


def publish(view: ViewState) -> None:
    """Write the view to the URL (so the link restores it) and remember it for the other pages."""
    st.session_state[SESSION_VIEW] = view
    if from_params(st.query_params.get_all) != view:
        st.query_params.from_dict(to_params(view))


def open_workspace(view: ViewState) -> tuple[Workspace | None, Path | None]:
    """The scanned workspace of the view, or (None, None) after showing why it cannot be opened."""
    try:
        root = resolve_workspace(view.workspace, roots(), base_dir())
        return workspace(str(root)), root
    except AccessError as exc:
        st.error(f"Cannot open workspace: {exc}")
    except (SaecoreError, OSError) as exc:
        st.error(f"Cannot scan workspace {view.workspace}: {exc}")
    return None, None


def workspace_label(root: Path) -> str:
    return display_path(root, base_dir())


PRESENTATION_CSS = """
<style>
html, body, [data-testid="stAppViewContainer"] { font-size: 20px; }
[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"], .st-key-controls,
[data-testid="stDownloadButton"], [class*="st-key-share_"], .st-key-controls_runs { display: none !important; }
h1 { font-size: 2.6rem !important; } h2, h3 { font-size: 1.9rem !important; }
[data-testid="stMetricValue"] { font-size: 2.6rem !important; }
[data-testid="stCaptionContainer"] { font-size: 1.05rem !important; }
</style>
"""


def presentation_toggle(view: ViewState) -> ViewState:
    """Sidebar switch for presentation mode (large fonts, hidden controls); an exit button while it is on."""
    on = st.sidebar.toggle("Presentation mode", value=view.present, help="Larger fonts; controls and downloads hidden")
    if view.present:
        st.markdown(PRESENTATION_CSS, unsafe_allow_html=True)
        if st.button("Exit presentation mode", key="exit_present", type="tertiary"):
            on = False
    return view.replace(present=on)
