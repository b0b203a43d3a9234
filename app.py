"""saecore dashboard: `streamlit run app.py [-- --root /path/to/workspaces]`. Routes to the pages in pages/."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import streamlit as st

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # pages import the dashboard package beside this file

from dashboard import presentation  # noqa: E402  (needs the path above)

st.set_page_config(page_title="saecore: SAE feature consistency", page_icon="🧬", layout="wide")

PAGES = [
    ("pages/home.py", "Home", "🏠", "home"),
    ("pages/consistency.py", "Consistency", "📈", "consistency"),
    ("pages/pairs.py", "Feature pairs", "🔍", "pairs"),
    ("pages/semantics.py", "Consistency vs semantics", "💬", "semantics"),
    ("pages/orphans.py", "Orphans", "🧩", "orphans"),
    ("pages/explanations.py", "Explanations", "📝", "explanations"),
    ("pages/synthetic.py", "Synthetic lab", "🧪", "synthetic"),
]

pages = [st.Page(str(HERE / path), title=title, icon=icon, url_path=url, default=(url == "home"))
         for path, title, icon, url in PAGES if (HERE / path).is_file()]
present = presentation.active()
page = st.navigation(pages, position="top" if present else "sidebar")
presentation.draw_switch(present)
page.run()
