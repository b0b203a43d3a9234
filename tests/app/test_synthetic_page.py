"""The Synthetic lab page: committed results shown as stored, and a new (tiny) experiment run from the form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "pages" / "synthetic.py")
COMMITTED = ROOT / "data" / "synthetic" / "matched" / "result.json"


def run_page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.skipif(not COMMITTED.exists(), reason="no committed synthetic results")
def test_committed_results_are_shown_as_stored():
    at = run_page()
    summary = json.loads(COMMITTED.read_text())
    table = at.dataframe[0].value.set_index("architecture")
    for arch, r in summary["results"].items():
        assert table.loc[arch, "GT-MCC"] == pytest.approx(r["gt_mcc_mean"], abs=1e-12)
        assert table.loc[arch, "PW-MCC"] == pytest.approx(r["pw_mcc_mean"], abs=1e-12)
        assert table.loc[arch, "L0"] == pytest.approx(r["l0_mean"], abs=1e-12)
    assert table.loc["topk", "GT-MCC (paper)"] == pytest.approx(0.9675)
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert "matched regime" in spec["layout"]["title"]["text"]


def _train(steps: int, seeds: int, archs: list[str] | None = None):
    """Fill the experiment form (300 samples) and press Train."""
    at = run_page()
    at.number_input(key="syn_n_matched").set_value(300)
    at.number_input(key="syn_steps").set_value(steps)
    at.number_input(key="syn_seeds").set_value(seeds)
    if archs is not None:
        at.multiselect(key="syn_archs").set_value(archs)
    next(b for b in at.button if b.proto.label == "Train").click()
    at.run()
    return at


def test_new_experiment_runs_from_the_form(tmp_path, monkeypatch):
    monkeypatch.setenv("SAECORE_CACHE_DIR", str(tmp_path))
    at = _train(steps=20, seeds=2)
    assert not at.exception, [e.value for e in at.exception]
    tables = [t.value for t in at.dataframe]
    new = tables[-1].set_index("architecture")
    assert set(new.index) == {"topk", "standard"}
    assert (new["step"] == 20).all()
    assert list(tmp_path.glob("synthetic/*/final.json"))
    assert not [b for b in at.button if b.proto.label == "Stop"]  # gone once training has finished


def test_stop_button_is_cleared_when_a_setting_cannot_run(tmp_path, monkeypatch):
    monkeypatch.setenv("SAECORE_CACHE_DIR", str(tmp_path))
    at = _train(steps=10, seeds=1, archs=[])
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error if e.value.startswith("Cannot run this setting")]
    assert not [b for b in at.button if b.proto.label == "Stop"]


def test_every_committed_regime_can_be_shown():
    folders = sorted(p for p in (ROOT / "data" / "synthetic").glob("*") if (p / "result.json").exists())
    if not folders:
        pytest.skip("no committed synthetic results")
    at = run_page()
    for folder in folders:
        at.selectbox(key="synthetic_committed_regime").set_value(folder.name).run()
        assert not at.exception, [e.value for e in at.exception]
        summary = json.loads((folder / "result.json").read_text())
        table = at.dataframe[0].value.set_index("architecture")
        assert set(table.index) == set(summary["results"])
