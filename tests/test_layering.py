"""The library stays free of Streamlit: pages call saecore, never the other way round."""

from __future__ import annotations

import re
from pathlib import Path

SAECORE = Path(__file__).resolve().parents[1] / "saecore"


def test_saecore_never_imports_streamlit():
    offenders = [str(p.relative_to(SAECORE)) for p in SAECORE.rglob("*.py")
                 if re.search(r"^\s*(import|from)\s+streamlit\b", p.read_text(), re.MULTILINE)]
    assert offenders == []
