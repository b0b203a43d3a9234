"""Shared set-up: offline model hubs, one cache folder for the session, and the import path of the repo."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One cache for the whole session (converted models are reused); tests that check caching pass their own folder.
os.environ["SAECORE_CACHE_DIR"] = os.environ.get("SAECORE_TEST_CACHE_DIR") or tempfile.mkdtemp(prefix="saecore-test-cache-")
