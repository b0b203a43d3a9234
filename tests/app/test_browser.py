"""The dashboard in a real browser: pages render their charts, a pair opens from the table; screenshots saved."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest

from browser import CHROMIUM, open_page, settle, shot, workspace_server

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium")


@pytest.fixture(scope="module")
def server(tmp_path_factory, generated_ws):
    with workspace_server(generated_ws.parent, tmp_path_factory.mktemp("browser-cache")) as url:
        yield url


@pytest.fixture(scope="module")
def page(server, browser):
    pg = browser.new_page(viewport={"width": 1400, "height": 4200})
    yield pg
    pg.close()


def _settle(pg, charts: bool = True, timeout: float = 90_000) -> None:
    settle(pg, charts, timeout)


def _open(pg, server: str, path: str, params: dict, charts: bool = True) -> None:
    open_page(pg, server, path, params, charts)


_shot = shot


def test_home_draws_the_family_summary(page, server, generated_ws):
    _open(page, server, "", {"ws": str(generated_ws)})
    titles = [t.text_content() for t in page.query_selector_all(".js-plotly-plot .gtitle")]
    assert any("PW-MCC per family" in t for t in titles)
    assert page.get_by_text("Unreadable paths").count() >= 1
    _shot(page, "home")
    with page.expect_download(timeout=90_000) as download:
        page.get_by_role("button", name="PNG").first.click()
    assert Path(download.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with page.expect_download(timeout=60_000) as report:
        page.get_by_role("button", name="Download HTML report of this view").click()
    html = Path(report.value.path()).read_text()
    assert "PW-MCC per family" in html and "Plotly.newPlot" in html


def test_consistency_page_draws_every_chart(page, server, generated_ws):
    _open(page, server, "consistency", {"ws": str(generated_ws)})
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 5", timeout=60_000)
    titles = " ".join(t.text_content() for t in page.query_selector_all(".js-plotly-plot .gtitle"))
    for expected in ("Pairwise MCC", "Per-feature match scores", "Shared fraction", "activation frequency"):
        assert expected in titles
    _shot(page, "consistency")


def test_selecting_a_table_row_opens_that_pair(page, server, generated_ws):
    _open(page, server, "pairs", {"ws": str(generated_ws)}, charts=False)
    page.wait_for_selector('[data-testid="stDataFrame"]', timeout=60_000)
    grid = page.query_selector_all('[data-testid="stDataFrame"]')[0]
    box = grid.bounding_box()
    # Glide grid: header row then 35 px rows; the leftmost column holds the row selectors. Pick the third row.
    page.mouse.click(box["x"] + 18, box["y"] + 35 + 35 * 2 + 17)
    _settle(page, charts=False)
    feature = urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query).get("f", [None])[0]
    assert feature is not None
    assert page.get_by_text(f"Feature {feature} of").count() >= 1
    _shot(page, "pairs")


def test_clicking_a_semantic_point_opens_that_pair(page, server, generated_ws):
    _open(page, server, "semantics", {"ws": str(generated_ws)})
    point = page.query_selector(".js-plotly-plot .scatterlayer .trace .points path")
    assert point is not None
    _shot(page, "semantics")
    box = point.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_timeout(300)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function("location.pathname.endsWith('/pairs')", timeout=30_000)
    _settle(page, charts=False)
    query = urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query)
    assert "f" in query and "a" in query and "b" in query
    assert page.get_by_text(f"Feature {query['f'][0]} of").count() >= 1
    _shot(page, "pairs-from-semantics")


def test_same_feature_across_seeds_and_presentation_mode(page, server, generated_ws):
    from saecore.overview import comparable_families
    from saecore.workspace import scan

    key = next(k for k, v in comparable_families(scan(generated_ws)).items() if v[0].architecture == "topk")
    _open(page, server, "pairs", {"ws": str(generated_ws), "family": key, "f": "3", "view": "seeds"}, charts=False)
    page.wait_for_selector("text=Reference", timeout=60_000)
    assert page.locator("span[title]").count() > 0  # shaded context tokens
    assert page.get_by_text("<script>").count() >= 1  # shown as text, not run
    _shot(page, "pairs-across-seeds")
    _open(page, server, "consistency", {"ws": str(generated_ws), "family": key, "present": "1"})
    assert not page.locator('[data-testid="stSidebar"]').is_visible()
    _shot(page, "consistency-presentation")


def test_html_report_renders_offline(page, tmp_path):
    import numpy as np

    from saecore.plots.consistency import score_histogram
    from saecore.report import Section, html_report

    path = tmp_path / "report.html"
    fig = score_histogram({"a ↔ b": np.linspace(0, 1, 50)}, chance=0.2, caption="runs a and b")
    path.write_text(html_report("Report", [Section("Scores", figure=fig, caption="runs a and b")]))
    blocked = []
    page.route("http*://**", lambda route: (blocked.append(route.request.url), route.abort()))
    page.goto(path.as_uri())
    page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
    page.unroute("http*://**")
    assert blocked == []


def test_explanations_page_shows_an_estimate(page, server, generated_ws):
    _open(page, server, "explanations", {"ws": str(generated_ws)}, charts=False)
    page.wait_for_selector("text=Estimate:", timeout=60_000)
    _shot(page, "explanations")
