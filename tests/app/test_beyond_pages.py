"""The views beyond decoder cosine under AppTest: numbers equal the library's, URL keys restore, missing data says why."""

from __future__ import annotations

import pytest

from app_helpers import assert_clean, figures, open_app
from saecore.agreement import compare_encoders, family_agreement
from saecore.consistency import compare_runs
from saecore.loaders import load_run
from saecore.orphans import find_orphans
from saecore.workspace import scan


@pytest.fixture(autouse=True)
def beyond_root(beyond_ws, monkeypatch):
    monkeypatch.setenv("SAECORE_WORKSPACE_ROOTS", str(beyond_ws.parent))


def _family(ws, arch: str):
    return next((k, v) for k, v in scan(ws).families.items() if v[0].architecture == arch and v[0].d_sae == 64)


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_consistency_agreement_numbers_equal_the_library(beyond_ws):
    key, metas = _family(beyond_ws, "topk")
    at = open_app({"ws": str(beyond_ws), "family": key}, "pages/consistency.py")
    assert_clean(at)
    paths = [m.path for m in metas]
    agreement = family_agreement(paths, beyond_ws / "heldout")
    encoders = [compare_encoders(paths[i], paths[j]) for i, j in ((0, 1), (0, 2), (1, 2))]
    metrics = _metrics(at)
    assert metrics["activation correlation"] == f"{agreement.pearson_mean:.3f}"
    assert metrics["encoder PW-MCC"] == f"{sum(e.encoder_pw_mcc for e in encoders) / 3:.3f}"
    assert metrics["shared in both (> 0.7)"] == f"{sum(e.shared_both for e in encoders) / 3:.1%}"
    titles = [f["layout"]["title"]["text"] for f in figures(at)]
    assert any(t.startswith("Decoder, encoder and activation agreement") for t in titles)


def test_consistency_without_stored_activations_says_what_is_needed(generated_ws, monkeypatch):
    monkeypatch.setenv("SAECORE_WORKSPACE_ROOTS", str(generated_ws.parent))
    key, _ = _family(generated_ws, "topk")
    at = open_app({"ws": str(generated_ws), "family": key}, "pages/consistency.py")
    assert_clean(at)
    assert _metrics(at)["activation correlation"] == "–"
    assert any("needs stored activations" in i.value for i in at.info)


def test_orphans_threshold_from_the_url_and_counts(beyond_ws):
    key, metas = _family(beyond_ws, "standard")
    at = open_app({"ws": str(beyond_ws), "family": key, "thr": "0.9"}, "pages/orphans.py")
    assert_clean(at)
    report = find_orphans(compare_runs([load_run(m.path, name=m.name) for m in metas]), 0.9)
    assert _metrics(at)["orphan latents (all runs)"] == f"{sum(r.n_orphan for r in report.per_run):,}"
    assert at.slider[0].value == pytest.approx(0.9)
    at.slider[0].set_value(0.3).run()
    low = find_orphans(compare_runs([load_run(m.path, name=m.name) for m in metas]), 0.3)
    assert _metrics(at)["orphan latents (all runs)"] == f"{sum(r.n_orphan for r in low.per_run):,}"
    assert at.query_params["thr"] in ("0.3", ["0.3"])


def test_semantics_score_filter_without_scores_says_so(beyond_ws):
    key, _ = _family(beyond_ws, "topk")
    at = open_app({"ws": str(beyond_ws), "fams": key, "scorer": "fuzzing", "minscore": "0.5"}, "pages/semantics.py")
    assert_clean(at)
    assert any("no fuzzing scores" in i.value for i in at.info)
    at = open_app({"ws": str(beyond_ws), "fams": key, "scorer": "detection", "minscore": "0.5"}, "pages/semantics.py")
    assert_clean(at)
    assert any("score ≥ 0.5 by detection" in c.value for c in at.caption)


def test_pairs_partners_view_of_different_widths(beyond_ws):
    at = open_app({"ws": str(beyond_ws), "runs": ["topk_k8/seed0", "wide_k8/seed0"], "view": "partners"},
                  "pages/pairs.py")
    assert_clean(at)
    assert {"mean top-1 cosine", "top-1 is the 1-to-1 match", "most latents sharing one partner"} <= set(_metrics(at))
    assert any("(different widths)" in m.value for m in at.markdown)


def test_explanations_page_lists_mean_scores_per_run(beyond_ws):
    at = open_app({"ws": str(beyond_ws)}, "pages/explanations.py")
    assert_clean(at)
    runs = at.dataframe[0].value.set_index("run")
    assert runs.loc["topk_k8/seed0", "detection"] == "0.650 (48)"  # 24 features at 0.9, 24 at 0.4
    assert runs.loc["relu_l1/seed0", "detection"] == "–"
