"""View state shared by the pages: the URL (query params), widgets bound to it, the open workspace."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Any

import streamlit as st

from dashboard.data import base_dir, workspace
from saecore.access import AccessError, display_path, parse_roots, resolve_workspace
from saecore.errors import SaecoreError
from saecore.viewstate import ViewState, from_params, to_params
from saecore.workspace import Workspace

ROOTS_ENV = "SAECORE_WORKSPACE_ROOTS"  # extra roots (os.pathsep-separated), besides `-- --root PATH` at launch
SESSION_VIEW = "_saecore_view"
PRESENT = "_saecore_present"  # this session's presentation mode (the URL's `present` seeds it)
_BOUND = "_saecore_bound_"  # prefix: the value a bound widget last published to the URL


def roots() -> list[Path]:
    """Folders the dashboard may open: data/ under the app, --root arguments and $SAECORE_WORKSPACE_ROOTS."""
    extra = [r for r in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if r]
    argv = list(sys.argv[1:]) + [a for r in extra for a in ("--root", r)]
    return parse_roots(argv, base_dir())


def default_workspace() -> str:
    """data/demo when shipped, else data/."""
    return "data/demo" if (base_dir() / "data" / "demo").is_dir() else "data"


def url_view() -> ViewState:
    """The view in the URL; when navigation dropped the query params, the last view of this session."""
    view = from_params(st.query_params.get_all)
    if not st.query_params and SESSION_VIEW in st.session_state:
        view = st.session_state[SESSION_VIEW]
    if not view.workspace:
        view = view.replace(workspace=default_workspace())
    return view


def current_view() -> ViewState:
    """The URL's view with this session's presentation mode (which one click switches, before the page runs)."""
    view = url_view()
    return view.replace(present=bind(PRESENT, view.present))


def bind(key: str, url_value: Any) -> Any:
    """Seed the session value `key` (a widget key) from the URL, unless the user changed it since it was published.

    A keyed widget keeps its own state across reruns; the URL wins only when it differs from what this
    session last wrote there (a shared link, the back button, a jump from another page).
    """
    mark = _BOUND + key
    if key not in st.session_state or st.session_state.get(mark, url_value) != url_value:
        st.session_state[key] = url_value
    st.session_state[mark] = url_value
    return st.session_state[key]


def published(key: str, value: Any) -> Any:
    """Record what a bound widget publishes this run (so the next run's URL counts as this session's own)."""
    st.session_state[_BOUND + key] = value
    return value


def bound(widget: Callable[..., Any], key: str, url_value: Any, **kwargs) -> Any:
    """Draw a keyed widget whose value follows the URL (see `bind`); returns its value."""
    bind(key, url_value)
    return published(key, widget(key=key, **kwargs))


def publish(view: ViewState) -> None:
    """Write the view to the URL (so the link restores it) and remember it for the other pages."""
    st.session_state[SESSION_VIEW] = view
    published(PRESENT, view.present)
    if from_params(st.query_params.get_all) != view:
        st.query_params.from_dict(to_params(view))


def open_workspace(view: ViewState) -> tuple[Workspace | None, Path | None]:
    """The scanned workspace of the view, or (None, None) after showing why it cannot be opened."""
    try:
        root = resolve_workspace(view.workspace, roots(), base_dir())
        ws = workspace(str(root))
    except AccessError as exc:
        st.error(f"Cannot open workspace: {exc}")
        return None, None
    except (SaecoreError, OSError) as exc:
        st.error(f"Cannot scan workspace {view.workspace}: {exc}")
        return None, None
    if not ws.runs and not ws.errors:
        no_runs(root)
        return None, None
    return ws, root


def no_runs(root: Path) -> None:
    """Say that a folder holds no runs, and what the loaders would have recognised."""
    from saecore.loaders import format_hints

    lines = "\n".join(f"- **{name}**: {what}" for name, what in format_hints())
    st.warning(f"No SAE runs found in `{workspace_label(root)}`. Here is what the loaders look for "
               f"(in the folder itself or any folder below it):\n\n{lines}")


def workspace_label(root: Path) -> str:
    return display_path(root, base_dir())
