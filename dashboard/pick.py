"""Shared selectors: a family (or a custom set of runs with the same d_in), the sign and the dead-row policy."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import data, page
from dashboard.state import bound, open_workspace, publish
from saecore.consistency import Comparison
from saecore.errors import SaecoreError
from saecore.overview import comparable_families, family_labels
from saecore.runs import Run, RunMeta
from saecore.viewstate import DEADS, SIGNS, ViewState
from saecore.workspace import Workspace

CUSTOM = "(choose runs)"


def keys_help(labels: dict[str, str]) -> str:
    """A tooltip giving each family's full key under its short label."""
    return "Full keys:\n\n" + "\n".join(f"- {label}: `{key}`" for key, label in labels.items())


def runs_selector(ws: Workspace, view: ViewState) -> tuple[ViewState, list[RunMeta], str]:
    """Pick a family with ≥ 2 seeds, or any runs: the updated view, the chosen runs' metadata and their name."""
    families = comparable_families(ws, final_only=False)
    labels = family_labels(families)
    options = list(families) + [CUSTOM]
    current = view.family if view.family in families else (CUSTOM if view.runs else options[0])
    family = bound(st.selectbox, "pick_family", current, label="Family (same configuration, different seeds)",
                   options=options, format_func=lambda k: labels.get(k, k), help=keys_help(labels))
    if family != CUSTOM:
        return view.replace(family=family, runs=()), families[family], labels[family]
    names = [r.name for r in ws.runs]
    chosen = bound(st.multiselect, "pick_runs", [n for n in view.runs if n in names],
                   label="Runs to compare (same d_in)", options=names)
    return view.replace(family=None, runs=tuple(chosen)), [ws.run(n) for n in chosen], f"{len(chosen)} chosen runs"


def sign_and_dead(view: ViewState) -> ViewState:
    """Signed / absolute cosine and what to do with zero-norm (dead) decoder rows."""
    c1, c2 = st.columns(2)
    sign = bound(c1.radio, "pick_sign", view.sign, label="Cosine", options=SIGNS, horizontal=True,
                 format_func=lambda s: "signed (as the authors' code)" if s == "signed" else "absolute |cos|")
    dead = bound(c2.radio, "pick_dead", view.dead, label="Dead (zero-norm) rows", options=DEADS, horizontal=True,
                 format_func=lambda d: "include (score 0)" if d == "include" else "exclude")
    return view.replace(sign=sign, dead=dead)


def chosen_runs(title: str, too_few: str) -> tuple[ViewState, Workspace, Path, list[Run], str]:
    """The start every comparison page shares: URL view, workspace, run choice, the loaded runs and their name
    for captions and chart titles (the family's short label, or the run count).

    Stops the page (after saying why) when the workspace cannot be opened or fewer than two runs load.
    """
    view = page.start(title)
    ws, root = open_workspace(view)
    if ws is None:
        publish(view)
        st.stop()
    with st.container(key="controls"):
        view, metas, label = runs_selector(ws, view)
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
    return view, ws, root, runs, label


def comparison_or_stop(view: ViewState, runs: list[Run]) -> Comparison:
    """The runs' comparison, or the page stops after saying why they cannot be matched."""
    try:
        return data.comparison(runs, view.sign, view.dead)
    except (SaecoreError, ValueError, RuntimeError, OSError) as exc:
        publish(view)
        st.error(f"These runs cannot be matched: {exc}")
        st.stop()
