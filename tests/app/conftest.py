"""App tests: a generated workspace (and the shipped demo when present), allowed as a root, with fresh caches."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import streamlit as st

from saecore.explanations import store_explanations
from app_helpers import feature_data
from saecore.features import write_feature_data
from workspaces import make_workspace

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo"


@pytest.fixture(scope="session")
def generated_ws(tmp_path_factory) -> Path:
    """Two SAELens families × 3 seeds (seeds 0 and 1 with explanations for 48 features), plus one corrupt folder."""
    base = tmp_path_factory.mktemp("app-ws")
    root = make_workspace(base / "ws", d_in=16, d_sae=64)
    words = ["cats", "dogs", "numbers", "code", "French", "names", "dates", "music", "food", "sports", "weather"]
    for family in ("topk_k8", "relu_l1"):
        for seed in range(2):
            texts = [f"{words[(i * (seed + 1)) % len(words)]} and <b>{words[i % 7]}</b>" for i in range(48)]
            store_explanations(root / family / f"seed{seed}", pd.DataFrame({
                "feature": range(48), "explanation": texts, "explainer": "test-explainer", "source": "conftest"}))
    for seed in range(2):
        write_feature_data(root / "topk_k8" / f"seed{seed}", feature_data(64, seed))
    bad = root / "broken" / "seed0"
    bad.mkdir(parents=True)
    (bad / "cfg.json").write_text("{not json")
    (bad / "sae_weights.safetensors").write_bytes(b"garbage")
    return root


@pytest.fixture(autouse=True)
def app_env(generated_ws, monkeypatch):
    """Let the app open the generated workspace; start every test with empty Streamlit data caches."""
    monkeypatch.setenv("SAECORE_WORKSPACE_ROOTS", str(generated_ws.parent))
    st.cache_data.clear()
    yield


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium for one test module (the browser tests skip themselves when it is not installed)."""
    from playwright.sync_api import sync_playwright

    from browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
