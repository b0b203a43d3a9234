"""Tables as every page draws them: no index, missing values shown as '–' (never 'None')."""

from __future__ import annotations

import pandas as pd
import streamlit as st

MISSING = "–"


def table(df: pd.DataFrame, **kwargs):
    """st.dataframe with the dashboard's defaults; returns the selection state when on_select is given."""
    kwargs.setdefault("hide_index", True)
    kwargs.setdefault("placeholder", MISSING)
    return st.dataframe(df, **kwargs)


def selected_feature(state, features: list[int]) -> int | None:
    """The feature in the selected row of a single-row-selection table (None when nothing is selected)."""
    rows = list(state.selection.rows) if state is not None else []
    return int(features[rows[0]]) if rows and rows[0] < len(features) else None
