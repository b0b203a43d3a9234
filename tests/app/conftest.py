"""App tests: a generated workspace (and the shipped demo when present), allowed as a root, with fresh caches."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import streamlit as st

from saecore.explanations import store_explanations
from app_helpers import feature_data
from saecore.features import write_feature_data
from saecore.loaders import load_run
from saecore.scoring import SCORE_COLUMNS, store_scores
from workspaces import make_workspace, related_decoders, write_saelens, write_store

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


BEYOND_D_IN, BEYOND_D_SAE = 16, 64
WORDS = ["cats", "dogs", "numbers", "code", "French", "names", "dates", "music", "food", "sports", "weather"]


def _scores(n: int, seed: int) -> pd.DataFrame:
    """Detection scores of features 0..n-1: alternately high (0.9) and low (0.4), so a 0.7 filter keeps the even ones."""
    rows = [{"feature": f, "method": "detection", "score": 0.9 if f % 2 == 0 else 0.4, "n_examples": 10, "n_failed": 0,
             "explainer": "test-explainer", "explanation_hash": "", "source": "llm:test", "negatives": "store",
             "scored_at": "2026-12-06T00:00:00+00:00"} for f in range(n)]
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


@pytest.fixture(scope="session")
def beyond_ws(tmp_path_factory) -> Path:
    """Two families × 3 seeds with held-out activations, explanations and scores, and one run of twice the width."""
    base = tmp_path_factory.mktemp("beyond")
    root = make_workspace(base / "ws", d_in=BEYOND_D_IN, d_sae=BEYOND_D_SAE)
    write_store(root / "heldout", n=900, d=BEYOND_D_IN, model="tiny-model", hook="blocks.4.hook_resid_post")
    for seed in range(2):
        run = root / "topk_k8" / f"seed{seed}"
        store_explanations(run, pd.DataFrame({
            "feature": range(48), "explanation": [f"{WORDS[(i * (seed + 1)) % 11]} and {WORDS[i % 7]}" for i in range(48)],
            "explainer": "test-explainer", "source": "test"}))
        store_scores(run, _scores(48, seed))
    wide = related_decoders(1, 2 * BEYOND_D_SAE, BEYOND_D_IN, seed=9)[0]
    wide[:BEYOND_D_SAE] = load_run(root / "topk_k8" / "seed0").decoder + 0.05 * wide[:BEYOND_D_SAE]
    write_saelens(root / "wide_k8" / "seed0", wide, seed=0)
    return root
