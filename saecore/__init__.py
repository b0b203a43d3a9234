"""saecore: load SAE runs, match their features exactly, and measure how consistent they are."""

from __future__ import annotations

import os

# Model hubs are never reached: everything loads from local paths.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from saecore.errors import InputError, LoadError, SaecoreError  # noqa: E402
from saecore.loaders import detect, load_meta, load_run  # noqa: E402
from saecore.matching import Match, match_decoders, match_runs  # noqa: E402
from saecore.runs import Run, RunMeta  # noqa: E402
from saecore.workspace import Workspace, scan  # noqa: E402

__all__ = [
    "InputError", "LoadError", "SaecoreError", "detect", "load_meta", "load_run", "Match", "match_decoders",
    "match_runs", "Run", "RunMeta", "Workspace", "scan",
]
