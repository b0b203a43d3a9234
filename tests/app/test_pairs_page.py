"""Feature pairs page: a URL restores a pair exactly; numbers equal saecore's; navigation walks the filtered list."""

from __future__ import annotations

from app_helpers import assert_clean, open_app
from saecore.consistency import compare_runs
from saecore.loaders import load_run
from saecore.metrics import match_for
from saecore.overview import comparable_families
from saecore.pairs import candidates, pair_of
from saecore.workspace import scan

PAGE = "pages/pairs.py"


def _topk(ws_root):
    return next((k, v) for k, v in comparable_families(scan(ws_root)).items() if v[0].architecture == "topk")


def _metric(at, prefix):
    return next(m.value for m in at.metric if m.label.startswith(prefix))


def test_url_restores_the_pair_and_its_score(generated_ws):
    key, metas = _topk(generated_ws)
    a, b = metas[2].name, metas[0].name
    at = open_app({"ws": str(generated_ws), "family": key, "a": a, "b": b, "f": "7"}, PAGE)
    assert_clean(at)
    assert (at.selectbox[1].value, at.selectbox[2].value, at.number_input[0].value) == (a, b, 7)
    runs = [load_run(m.path, name=m.name) for m in metas]
    comp = compare_runs(runs)
    partner, score = pair_of(match_for(comp.matches, 2, 0), 7)
    assert _metric(at, "matched decoder") == f"{score:.4f}"
    proof = next(c for c in at.caption if "Chance MCC" in c.value)
    assert ":green-badge[:material/verified: exact optimum]" in proof.value
    assert proof.help.startswith("Exact matching of the pair: scipy's assignment on the dense float64")
    assert any(f"**feature** `{partner}`" in md.value for md in at.markdown)
    cand = candidates(runs[2], 7, runs[0], k=5)
    shown = next(df.value for df in at.dataframe if "rank" in df.value)
    assert shown["feature"].tolist() == cand["feature"].tolist()


def test_next_button_moves_along_the_filtered_list(generated_ws):
    key, metas = _topk(generated_ws)
    at = open_app({"ws": str(generated_ws), "family": key}, PAGE)
    first = at.number_input[0].value
    next_button = next(b for b in at.button if b.label.startswith("Next"))
    next_button.click().run()
    assert_clean(at)
    second = at.number_input[0].value
    comp = compare_runs([load_run(m.path, name=m.name) for m in metas])
    order = match_for(comp.matches, 0, 1).pairs()["feature_a"].tolist()
    explained = [f for f in order if f < 48]  # conftest explains features 0-47 of seeds 0 and 1
    assert first == explained[0]  # the page opens on a pair explained on both sides
    assert second == order[order.index(first) + 1]
    assert at.query_params["f"] == str(second)


def test_same_feature_across_all_runs(generated_ws):
    key, metas = _topk(generated_ws)
    at = open_app({"ws": str(generated_ws), "family": key, "f": "3", "view": "seeds"}, PAGE)
    assert_clean(at)
    headings = [md.value for md in at.markdown if md.value.startswith("#### ")]
    assert len(headings) == len(metas) and headings[0] == "#### Reference"


def test_out_of_range_feature_falls_back_to_the_best_pair(generated_ws):
    key, _ = _topk(generated_ws)
    at = open_app({"ws": str(generated_ws), "family": key, "f": "99999"}, PAGE)
    assert_clean(at)
    assert 0 <= at.number_input[0].value < 64


def test_dead_feature_excluded_shows_no_partner(tmp_path, monkeypatch):
    from workspaces import related_decoders, write_saelens

    root = tmp_path / "dead"
    decs = related_decoders(2, 16, 8)
    decs[0][5] = 0.0
    for s, d in enumerate(decs):
        write_saelens(root / f"seed{s}", d, seed=s)
    monkeypatch.setenv("SAECORE_WORKSPACE_ROOTS", str(tmp_path))
    at = open_app({"ws": str(root), "f": "5", "dead": "exclude"}, PAGE)
    assert_clean(at)
    assert _metric(at, "matched decoder") == "unmatched"
    assert any("No matched feature" in i.value for i in at.info)
    home = open_app({"ws": str(root)})
    assert any("1 zero-norm decoder rows" in str(df.value.get("warnings", "").tolist()) for df in home.dataframe)
