"""Runs the real app.py from a folder without pages/, so AppTest always uses st.navigation (never legacy pages/)."""

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parents[3] / "app.py"), run_name="__main__")
