"""Consistency page: numbers equal saecore's, the URL restores the family, bad runs show errors."""

from __future__ import annotations


import numpy as np

from app_helpers import assert_clean, figures, open_app, values
from saecore.consistency import compare_runs
from saecore.loaders import load_run
from saecore.metrics import frequency_bins
from saecore.overview import comparable_families
from saecore.workspace import scan
from workspaces import related_decoders, write_saelens

PAGE = "pages/consistency.py"


def _family(ws_root, arch):
    return next((k, v) for k, v in comparable_families(scan(ws_root)).items() if v[0].architecture == arch)


def test_metrics_and_charts_equal_saecore(generated_ws):
    key, metas = _family(generated_ws, "topk")
    at = open_app({"ws": str(generated_ws), "family": key}, PAGE)
    assert_clean(at)
    comp = compare_runs([load_run(m.path, name=m.name) for m in metas])
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["PW-MCC (mean over pairs)"] == f"{comp.pw.mean:.4f}"
    assert metrics["std over pairs"] == f"{comp.pw.std:.4f}"
    figs = {f["layout"]["title"]["text"].replace("<br>", " ").split(": ")[0]: f for f in figures(at)}  # titles end ": family"
    np.testing.assert_allclose(values(figs["Pairwise MCC between runs"]["data"][0]["z"]), comp.pw.matrix())
    bins = frequency_bins(comp.runs[0].frequencies, comp.feature_consistency(0)["mean_score"].to_numpy())
    shown = figs["Consistency by activation frequency"]["data"][0]["y"]
    np.testing.assert_allclose(values(shown), bins["mean"].to_numpy())
    assert at.selectbox[0].value == key
    assert any(f"Exact matching of all {len(comp.matches)} pairs: scipy's assignment on the dense float64" in c.value
               for c in at.caption)


def test_abs_sign_from_the_url(generated_ws):
    key, metas = _family(generated_ws, "standard")
    at = open_app({"ws": str(generated_ws), "family": key, "sign": "abs"}, PAGE)
    comp = compare_runs([load_run(m.path, name=m.name) for m in metas], sign="abs")
    assert next(m.value for m in at.metric if m.label.startswith("PW-MCC")) == f"{comp.pw.mean:.4f}"
    assert at.radio[0].value == "abs"


def test_runs_with_different_d_in_show_an_error(tmp_path, monkeypatch):
    root = tmp_path / "mixed"
    write_saelens(root / "small", related_decoders(1, 16, 8)[0], seed=0)
    write_saelens(root / "large", related_decoders(1, 16, 12)[0], seed=1)
    monkeypatch.setenv("SAECORE_WORKSPACE_ROOTS", str(tmp_path))
    at = open_app({"ws": str(root), "runs": ["small", "large"]}, PAGE)
    assert_clean(at)
    assert any("cannot be compared" in e.value and "d_in" in e.value for e in at.error)


def test_corrupt_run_shows_an_error(tmp_path, monkeypatch):
    root = tmp_path / "corrupt"
    for s, dec in enumerate(related_decoders(3, 16, 8)):
        write_saelens(root / f"seed{s}", dec, seed=s)
    (root / "seed2" / "sae_weights.safetensors").write_bytes(b"not a tensor file")
    monkeypatch.setenv("SAECORE_WORKSPACE_ROOTS", str(tmp_path))
    at = open_app({"ws": str(root)}, PAGE)
    assert_clean(at)
    assert any("seed2" in e.value for e in at.error)
    assert any(m.label.startswith("PW-MCC") for m in at.metric)  # the two good seeds are still compared


def test_checkpoints_give_pw_mcc_per_step(tmp_path, monkeypatch):
    root = tmp_path / "ckpt"
    finals = related_decoders(2, 16, 8, noise=0.1, seed=4)
    early = related_decoders(2, 16, 8, noise=1.0, seed=5)
    for s in range(2):
        write_saelens(root / f"seed{s}", finals[s], seed=s)
        write_saelens(root / f"seed{s}" / "checkpoints" / "1000", early[s], seed=s)
        write_saelens(root / f"seed{s}" / "checkpoints" / "5000", finals[s], seed=s)
    monkeypatch.setenv("SAECORE_WORKSPACE_ROOTS", str(tmp_path))
    at = open_app({"ws": str(root)}, PAGE)
    assert_clean(at)
    fig = next(f for f in figures(at) if f["layout"]["title"]["text"].startswith("PW-MCC during training"))
    mean_trace = next(t for t in fig["data"] if t["name"].startswith("mean"))
    expected = [compare_runs([load_run(root / f"seed{s}" / "checkpoints" / str(step)) for s in range(2)]).pw.mean
                for step in (1000, 5000)]
    np.testing.assert_allclose(values(mean_trace["y"]), expected)
    np.testing.assert_array_equal(values(mean_trace["x"]), [1000, 5000])


def test_solve_badge_is_orange_when_a_matching_is_not_proven():
    from dashboard.panels import solve_badge
    from saecore.matching import summarize_solves

    unproven = summarize_solves([{"method": "certified", "certified": False, "device": "cpu"}])
    assert solve_badge(unproven) == ":orange-badge[:material/warning: not proven optimal]"
    assert solve_badge(summarize_solves([{"method": "dense", "certified": True}])).startswith(":green-badge[")
