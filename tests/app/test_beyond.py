"""Beyond decoder cosine, in a real browser: encoder and activation agreement, explanation scores, the three views,
orphans and many-to-one partners; every number shown is checked against the library on the same files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from browser import CHROMIUM, open_page, query, settle, shot, workspace_server
from saecore.agreement import family_agreement
from saecore.consistency import compare_runs
from saecore.loaders import load_run
from saecore.orphans import find_orphans
from saecore.partners import find_partners
from saecore.workspace import scan

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium")

D_SAE = 64


@pytest.fixture(scope="module")
def server(tmp_path_factory, beyond_ws):
    with workspace_server(beyond_ws.parent, tmp_path_factory.mktemp("beyond-cache")) as url:
        yield url


@pytest.fixture(params=[(1400, 1000), (1920, 1080)], ids=["1400x1000", "1920x1080"])
def page(browser, request):
    pg = browser.new_page(viewport={"width": request.param[0], "height": request.param[1]})
    yield pg
    pg.close()


def _family(ws: Path, arch: str) -> tuple[str, list]:
    key, metas = next((k, v) for k, v in scan(ws).families.items() if v[0].architecture == arch and v[0].d_sae == D_SAE)
    return key, metas


def _metric(pg, label: str) -> str:
    box = pg.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return box.locator('[data-testid="stMetricValue"]').inner_text()


def _chart(pg, title: str):
    return pg.locator(".js-plotly-plot").filter(has_text=title)


def _present(pg, name: str, charts: bool = True) -> None:
    """Screenshot, then the same view in presentation mode (asserted to keep its charts), then back."""
    size = pg.viewport_size
    shot(pg, f"beyond-{name}-{size['width']}x{size['height']}", full_page=True)
    pg.get_by_role("button", name="Presentation mode").click()
    settle(pg, charts=charts)
    assert query(pg).get("present") == ["1"]
    shot(pg, f"beyond-{name}-present-{size['width']}x{size['height']}", full_page=True)
    pg.get_by_role("button", name="Exit presentation mode").click()
    settle(pg, charts=charts)


def test_consistency_shows_encoder_and_activation_agreement(page, server, beyond_ws):
    key, metas = _family(beyond_ws, "topk")
    open_page(page, server, "consistency", {"ws": str(beyond_ws), "family": key}, charts=True)
    expected = family_agreement([m.path for m in metas], beyond_ws / "heldout")
    assert _metric(page, "activation correlation") == f"{expected.pearson_mean:.3f}"
    assert _metric(page, "firing overlap (Jaccard)") == f"{expected.jaccard_mean:.3f}"
    assert float(_metric(page, "encoder PW-MCC")) > 0.3
    assert _chart(page, "Decoder, encoder and activation agreement").count() == 1
    assert _chart(page, "activation correlation of matched pairs").count() == 1
    assert page.get_by_text("900 held-out tokens").count() >= 1
    _present(page, "consistency")


def test_pair_view_shows_activation_agreement_and_explanation_scores(page, server, beyond_ws):
    key, metas = _family(beyond_ws, "topk")
    open_page(page, server, "pairs", {"ws": str(beyond_ws), "family": key, "f": "4"})
    agreement = family_agreement([m.path for m in metas], beyond_ws / "heldout").between(0, 1)
    one = agreement.of_feature(4)
    assert _metric(page, "activation correlation") == f"{one['pearson']:.3f}"
    assert _metric(page, "firing overlap (Jaccard)") == f"{one['jaccard']:.3f}"
    assert page.get_by_text(f"A fires on {one['fires_a']:,}, B on {one['fires_b']:,}").count() == 1
    assert page.get_by_text("Explanation scores: detection 0.90").count() >= 1
    _present(page, "pair", charts=False)


def test_semantics_restricts_to_well_scored_explanations_from_the_url(page, server, beyond_ws):
    key, metas = _family(beyond_ws, "topk")
    open_page(page, server, "semantics", {"ws": str(beyond_ws), "fams": key, "scorer": "detection",
                                          "minscore": "0.7"}, charts=True)
    match = compare_runs([load_run(m.path, name=m.name) for m in metas[:2]]).matches[0, 1]
    kept = int(sum(a < 48 and b < 48 and a % 2 == 0 and b % 2 == 0 for a, b in zip(match.rows, match.cols)))
    assert page.get_by_text("score ≥ 0.7 by detection").count() >= 1
    assert page.get_by_text(f"{kept:,} pairs").count() >= 1
    assert _chart(page, "Three views of each matched pair").count() == 1
    assert query(page)["scorer"] == ["detection"] and query(page)["minscore"] == ["0.7"]
    _present(page, "semantics")


def test_orphans_page_counts_match_the_library_and_the_threshold_is_in_the_url(page, server, beyond_ws):
    key, metas = _family(beyond_ws, "topk")
    open_page(page, server, "orphans", {"ws": str(beyond_ws), "family": key, "thr": "0.95"}, charts=True)
    report = find_orphans(compare_runs([load_run(m.path, name=m.name) for m in metas]), 0.95)
    total = sum(r.n_orphan for r in report.per_run)
    assert total > 0 and _metric(page, "orphan latents (all runs)") == f"{total:,}"
    assert query(page)["thr"] == ["0.95"]
    assert _chart(page, "best match in its least similar other seed").count() == 1
    assert _chart(page, "Orphan vs shared latents: activation frequency").count() == 1
    assert page.get_by_text(f"{report.per_run[0].n_orphan:,} orphans of {metas[0].name}").count() == 1
    _present(page, "orphans")


def test_partners_of_runs_with_different_widths(page, server, beyond_ws):
    small, wide = "topk_k8/seed0", "wide_k8/seed0"
    open_page(page, server, "pairs", {"ws": str(beyond_ws), "runs": [small, wide], "a": small, "b": wide,
                                      "view": "partners"}, charts=True)
    found = find_partners(load_run(beyond_ws / small, name=small), load_run(beyond_ws / wide, name=wide), k=3)
    facts = found.to_json()
    assert _metric(page, "mean top-1 cosine") == f"{facts['mean_cos'][0]:.3f}"
    assert _metric(page, "most latents sharing one partner") == str(facts["max_fan_in"])
    assert page.get_by_text(f"{small} has {D_SAE:,} latents, {wide} {2 * D_SAE:,} (different widths)").count() == 1
    assert _chart(page, "Many-to-one").count() == 1
    assert np.all(found.index[:, 0] >= 0)
    _present(page, "partners")


def test_selecting_an_orphan_follows_it_into_every_seed(page, server, beyond_ws):
    key, metas = _family(beyond_ws, "topk")
    open_page(page, server, "orphans", {"ws": str(beyond_ws), "family": key, "thr": "0.95"}, charts=True)
    report = find_orphans(compare_runs([load_run(m.path, name=m.name) for m in metas]), 0.95)
    table = report.per_run[0].table
    first = int(table[table["orphan"]].sort_values("best_min")["feature"].iloc[0])
    grid = page.locator('[class*="st-key-orphan_table"] [data-testid="stDataFrame"]')
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 18, box["y"] + 35 + 17)  # the first row's selector, under the 35 px header
    page.wait_for_url("**/pairs?**", timeout=60_000)
    settle(page)
    params = query(page)
    assert params["f"] == [str(first)] and params["view"] == ["seeds"] and params["a"] == [metas[0].name]
    assert page.get_by_text(f"Feature {first} of").count() >= 1
