"""Streamlit glue for the pages: cached saecore calls, URL state and sharing widgets (the only place importing streamlit)."""
