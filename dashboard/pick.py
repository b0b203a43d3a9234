"""Shared selectors: a family (or a custom set of runs with the same d_in), the sign and the dead-row policy."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import data, share
from dashboard.router import ensure_router
from dashboard.state import current_view, open_workspace, presentation_toggle, publish
from saecore.overview import comparable_families
from saecore.runs import Run, RunMeta
from saecore.viewstate import DEADS, SIGNS, ViewState
from saecore.workspace import Workspace

CUSTOM = "(choose runs)"


def _index(options: list, value, default: int = 0) -> int:
    return options.index(value) if value in options else default


def runs_selector(ws: Workspace, view: ViewState) -> tuple[ViewState, list[RunMeta]]:
    """Pick a family with ≥ 2 seeds, or any runs; returns the updated view and the chosen runs' metadata."""
    families = comparable_families(ws, final_only=False)
    options = list(families) + [CUSTOM]
    current = view.family if view.family in families else (CUSTOM if view.runs else options[0])
    family = st.selectbox("Family (same configuration, different seeds)", options, index=_index(options, current),
                          help="Or choose any runs that share d_in with the last entry")
    if family != CUSTOM:
        return view.replace(family=family, runs=()), families[family]
    names = [r.name for r in ws.runs]
    chosen = st.multiselect("Runs to compare (same d_in)", names, default=[n for n in view.runs if n in names])
    return view.replace(family=None, runs=tuple(chosen)), [ws.run(n) for n in chosen]


def sign_and_dead(view: ViewState) -> ViewState:
    """Signed / absolute cosine and what to do with zero-norm (dead) decoder rows."""
    c1, c2 = st.columns(2)
    sign = c1.radio("Cosine", SIGNS, index=_index(list(SIGNS), view.sign), horizontal=True,
                    format_func=lambda s: "signed (as the authors' code)" if s == "signed" else "absolute |cos|")
    dead = c2.radio("Dead (zero-norm) rows", DEADS, index=_index(list(DEADS), view.dead), horizontal=True,
                    format_func=lambda d: "include (score 0)" if d == "include" else "exclude")
    return view.replace(sign=sign, dead=dead)


def chosen_runs(title: str, too_few: str) -> tuple[ViewState, Workspace, Path, list[Run]]:
    """The start every comparison page shares: URL view, workspace, run choice and the loaded runs.

    Stops the page (after saying why) when the workspace cannot be opened or fewer than two runs load.
    """
    ensure_router()
    view = presentation_toggle(current_view())
    share.begin_report()
    st.title(title)
    ws, root = open_workspace(view)
    if ws is None:
        publish(view)
        st.stop()
    with st.container(key="controls"):
        view, metas = runs_selector(ws, view)
        view = sign_and_dead(view)
    publish(view)
    if len(metas) < 2:
        st.info(too_few)
        st.stop()
    runs, problems = data.runs(metas, str(root))
    for p in problems:
        st.error(f"Cannot load run {p}")
    if len(runs) < 2:
        st.stop()
    return view, ws, root, runs
