"""Plotly figure builders shared by the dashboard pages, notebooks and reports."""
