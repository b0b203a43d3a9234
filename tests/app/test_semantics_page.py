"""Consistency vs semantics page: correlations equal saecore's; a clicked point opens the pair page."""

from __future__ import annotations

import pytest

from app_helpers import assert_clean, figures, open_app
from saecore.consistency import compare_runs
from saecore.explanations import read_explanations
from saecore.loaders import load_run
from saecore.overview import comparable_families
from saecore.semantic import Embedder, compare_explanations
from saecore.workspace import scan

PAGE = "pages/semantics.py"


def test_correlations_equal_saecore(generated_ws):
    key, metas = next((k, v) for k, v in comparable_families(scan(generated_ws)).items() if v[0].architecture == "topk")
    at = open_app({"ws": str(generated_ws), "family": key}, PAGE)
    assert_clean(at)
    runs = [load_run(m.path, name=m.name) for m in metas]
    match = compare_runs(runs).matches[0, 1]
    expected = compare_explanations(match, read_explanations(metas[0].path), read_explanations(metas[1].path),
                                    embedder=Embedder())
    table = next(df.value for df in at.dataframe if "Pearson r" in df.value)
    assert table["Pearson r"].iloc[0] == expected.pearson.text()
    assert float(table["Pearson r"].iloc[0].split()[0]) == pytest.approx(expected.pearson.value, abs=5e-4)
    assert table["pairs explained on both sides"].iloc[0] == f"{expected.n_pairs:,} of {expected.n_matched:,}"
    titles = [f["layout"]["title"]["text"] for f in figures(at)]
    assert titles == ["Decoder match score vs explanation similarity", "Explanation similarity by match-score bin (5 log-spaced bins)"]


def test_workspace_without_explanations_says_so(tmp_path, monkeypatch):
    from workspaces import make_workspace

    root = make_workspace(tmp_path / "plain", d_in=8, d_sae=16, seeds=2)
    monkeypatch.setenv("SAECORE_WORKSPACE_ROOTS", str(tmp_path))
    at = open_app({"ws": str(root)}, PAGE)
    assert_clean(at)
    assert any("No family has two runs with explanations" in i.value for i in at.info)
