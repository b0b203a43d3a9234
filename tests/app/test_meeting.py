"""Meeting-ready dashboard, in a real browser: edits, presentation mode, no 'None', URLs, labels, empty folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from browser import (CHROMIUM, RECORD_CANVAS_TEXT, open_page, query, settle, shot,
                     workspace_server)
from saecore.consistency import compare_runs
from saecore.loaders import load_run
from saecore.metrics import match_for
from saecore.overview import comparable_families, family_labels
from saecore.workspace import scan
from workspaces import related_decoders, write_dictionary_learning

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium")


@pytest.fixture(scope="module")
def extra_ws(generated_ws) -> dict[str, Path]:
    """Beside the generated workspace: an empty folder and a family whose seeds share one checkpoint."""
    base = generated_ws.parent
    empty = base / "empty-folder"
    (empty / "notes").mkdir(parents=True, exist_ok=True)
    (empty / "notes" / "readme.txt").write_text("not a run")
    ckpt = base / "one-checkpoint"
    for seed, dec in enumerate(related_decoders(2, 32, 8, seed=5)):
        write_dictionary_learning(ckpt / f"trainer_{seed}", dec, seed=seed, checkpoints={100: dec + 0.1})
    return {"empty": empty, "one_checkpoint": ckpt}


@pytest.fixture(scope="module")
def server(tmp_path_factory, generated_ws, extra_ws):
    with workspace_server(generated_ws.parent, tmp_path_factory.mktemp("meeting-cache")) as url:
        yield url


@pytest.fixture
def page(browser):
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    pg.add_init_script(RECORD_CANVAS_TEXT)
    yield pg
    pg.close()


def _topk(ws: Path) -> str:
    return next(k for k, v in comparable_families(scan(ws)).items() if v[0].architecture == "topk")


def _metric(pg, label: str) -> str:
    box = pg.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return box.locator('[data-testid="stMetricValue"]').inner_text()


def _type_path(pg, text: str) -> None:
    field = pg.get_by_label("Workspace folder", exact=True)
    field.fill(text)
    field.press("Enter")
    settle(pg)


def test_every_workspace_edit_takes_effect(page, server, generated_ws):
    open_page(page, server, "", {"ws": str(generated_ws)})
    assert _metric(page, "Runs") == "6"
    sub = generated_ws / "topk_k8"
    for path, runs in ((sub, "3"), (generated_ws, "6"), (sub, "3"), (generated_ws / "relu_l1" / "seed0", "1")):
        _type_path(page, str(path))
        assert query(page)["ws"] == [str(path)]
        assert _metric(page, "Runs") == runs, f"after typing {path}"
        assert page.get_by_label("Workspace folder", exact=True).input_value() == str(path)


def _font_px(pg, selector: str) -> float:
    return pg.evaluate(f"parseFloat(getComputedStyle(document.querySelector('{selector}')).fontSize)")


def _chart_title_px(pg) -> float:
    return pg.evaluate("parseFloat(document.querySelector('.js-plotly-plot .gtitle').style.fontSize)")


def _presenting(pg) -> bool:
    return not pg.locator('[data-testid="stSidebar"]').is_visible()


def test_presentation_mode_switches_fully_in_one_click(page, server, generated_ws):
    open_page(page, server, "consistency", {"ws": str(generated_ws), "family": _topk(generated_ws)}, charts=True)
    h1, chart_title = _font_px(page, "h1"), _chart_title_px(page)
    assert not _presenting(page) and page.locator(".st-key-controls").is_visible()

    page.get_by_role("button", name="Presentation mode").click()
    settle(page, charts=True)
    assert _presenting(page) and query(page).get("present") == ["1"]
    assert not page.locator(".st-key-controls").is_visible()
    png = page.get_by_role("button", name="PNG", exact=True)
    assert png.count() == 0 or not png.first.is_visible()
    assert _font_px(page, "h1") > 1.2 * h1 and _chart_title_px(page) > 1.2 * chart_title
    shot(page, "meeting-presentation-consistency", full_page=False)

    page.get_by_role("link", name="Synthetic lab").click()  # navigation stays reachable, the mode stays on
    settle(page, charts=True)
    assert page.get_by_role("heading", name="Synthetic lab").count() >= 1
    assert _presenting(page) and _font_px(page, "h1") > 1.2 * h1
    assert page.get_by_role("button", name="Exit presentation mode").is_visible()

    page.get_by_role("button", name="Exit presentation mode").click()
    settle(page, charts=True)
    assert not _presenting(page) and "present" not in query(page)
    assert _font_px(page, "h1") == pytest.approx(h1)


def test_presentation_mode_enlarges_table_text_and_rows_stay_clickable(page, server, generated_ws):
    """Data grids draw on a canvas, so presentation mode zooms them: their rows grow, they keep the page's
    width, and a click on a row still opens that row's pair."""
    params = {"ws": str(generated_ws), "family": _topk(generated_ws)}
    grid = page.locator('[data-testid="stDataFrame"]').first
    open_page(page, server, "pairs", params)
    grid.wait_for(timeout=60_000)
    normal = grid.bounding_box()
    open_page(page, server, "pairs", {**params, "present": "1"})
    grid.wait_for(timeout=60_000)
    page.wait_for_timeout(500)
    box = grid.bounding_box()
    main = page.locator('[data-testid="stMainBlockContainer"]').bounding_box()
    zoom = float(grid.evaluate("e => getComputedStyle(e.closest('[data-testid=stElementContainer]')).zoom"))
    assert zoom == pytest.approx(1.3)
    assert box["height"] == pytest.approx(normal["height"] * zoom, rel=0.02)
    assert box["x"] + box["width"] <= main["x"] + main["width"] + 1
    shot(page, "meeting-presentation-pairs-table", full_page=False)
    metas = comparable_families(scan(generated_ws))[_topk(generated_ws)]
    order = match_for(compare_runs([load_run(m.path, name=m.name) for m in metas]).matches, 0, 1).pairs()
    third = int(order["feature_a"].iloc[2])
    # Header and rows are 35 px before the zoom; the leftmost column holds the row selectors.
    page.mouse.click(box["x"] + 18 * zoom, box["y"] + (35 + 35 * 2 + 17) * zoom)
    settle(page)
    assert query(page)["f"] == [str(third)]
    assert page.get_by_text(f"Feature {third} of").count() >= 1


def _drawn(pg) -> list[str]:
    return pg.evaluate("window.__drawnText")


def test_no_cell_says_none_and_the_first_pair_is_explained(page, server, generated_ws):
    open_page(page, server, "", {"ws": str(generated_ws)})
    page.wait_for_function("window.__drawnText.length > 20")
    assert "None" not in _drawn(page)
    open_page(page, server, "pairs", {"ws": str(generated_ws), "family": _topk(generated_ws)})
    page.wait_for_function("window.__drawnText.length > 20")
    assert "None" not in _drawn(page)
    quotes = page.locator('[data-testid="stMarkdownContainer"] blockquote')
    assert quotes.count() >= 2, "the default pair should show an explanation on both sides"


def _choice(pg, label: str) -> str:
    """The option shown in a select box."""
    return pg.get_by_role("combobox", name=label, exact=True).input_value()


def _reopen(browser, url: str, ready: str):
    """The same address in a fresh tab (a new session, as a colleague opening a shared link), once `ready` shows."""
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    pg.goto(url)
    pg.wait_for_selector(f"text={ready}", timeout=90_000)
    settle(pg)
    return pg


def _unexplained_pair(ws: Path) -> int:
    """A feature of seed 0 whose matched partner in seed 1 is unexplained too (conftest explains features 0-47)."""
    metas = comparable_families(scan(ws))[_topk(ws)]
    match = match_for(compare_runs([load_run(m.path, name=m.name) for m in metas]).matches, 0, 1)
    return next(f for f in range(48, len(match.partner_a)) if match.partner_a[f] >= 48)


def test_pair_filters_and_the_open_pair_come_back_from_the_url(page, browser, server, generated_ws):
    hidden = _unexplained_pair(generated_ws)
    open_page(page, server, "pairs", {"ws": str(generated_ws), "family": _topk(generated_ws), "f": str(hidden)})
    page.get_by_text("Has explanation").click()  # the open pair is filtered out: the first shown pair opens instead
    settle(page)
    params = query(page)
    assert params["explained"] == ["1"] and params["f"] != [str(hidden)]
    search = page.get_by_label("Search explanations", exact=True)
    search.fill("dogs")
    search.press("Enter")
    settle(page)
    page.get_by_role("combobox", name="Order", exact=True).click()
    page.get_by_role("option", name="feature of run A").click()
    settle(page)
    params = query(page)
    assert params["q"] == ["dogs"] and params["order"] == ["feature"]
    caption = page.get_by_text("matched pairs of").first.inner_text()
    shared = page.url

    other = _reopen(browser, shared, "matched pairs of")
    try:
        # The widgets take their URL values in the new session's first run; under load the browser may draw
        # them a moment after the script reports done, so wait (up to 30 s) for the values rather than read once.
        expect(other.get_by_label("Search explanations", exact=True)).to_have_value("dogs", timeout=30_000)
        expect(other.get_by_role("checkbox", name="Has explanation")).to_be_checked(timeout=30_000)
        assert other.get_by_text("matched pairs of").first.inner_text() == caption
        assert query(other)["f"] == params["f"]
        assert other.get_by_text(f"Feature {params['f'][0]} of").count() >= 1
    finally:
        other.close()


def test_reference_run_and_semantics_families_come_back_from_the_url(page, browser, server, generated_ws):
    ws = scan(generated_ws)
    key = _topk(generated_ws)
    second = comparable_families(ws)[key][1].name
    open_page(page, server, "consistency", {"ws": str(generated_ws), "family": key, "ref": second}, charts=True)
    assert _choice(page, "Reference run (its features are binned by how often they fire)") == second

    labels = family_labels(comparable_families(ws))
    open_page(page, server, "semantics", {"ws": str(generated_ws), "fams": key}, charts=True)
    chosen = page.locator('[data-testid="stMultiSelect"]').first.inner_text()
    assert labels[key] in chosen and all(v not in chosen for k, v in labels.items() if k != key)


def test_families_have_short_labels_and_no_lone_training_point(page, server, generated_ws, extra_ws):
    key = _topk(generated_ws)
    label = family_labels(comparable_families(scan(generated_ws)))[key]
    assert key not in label and "TopK k=8" in label
    open_page(page, server, "consistency", {"ws": str(generated_ws), "family": key}, charts=True)
    assert _choice(page, "Family (same configuration, different seeds)") == label
    assert page.get_by_text(label).count() >= 2  # selector and captions
    titles = " ".join(page.locator(".js-plotly-plot .annotation-text").all_inner_texts())
    contribution = page.locator(".js-plotly-plot").filter(has_text="Contribution of each frequency bin")
    assert "chance" not in " ".join(contribution.locator(".annotation-text").all_inner_texts()), titles

    ckpt = extra_ws["one_checkpoint"]
    final = next(k for k, v in comparable_families(scan(ckpt)).items())
    open_page(page, server, "consistency", {"ws": str(ckpt), "family": final}, charts=True)
    assert page.get_by_text("PW-MCC during training").count() == 0


def test_a_folder_without_runs_says_what_the_loaders_look_for(page, server, extra_ws):
    open_page(page, server, "", {"ws": str(extra_ws["empty"])})
    message = page.get_by_text("No SAE runs found in").first
    assert message.is_visible()
    body = page.locator('[data-testid="stAlertContainer"]').first.inner_text()
    for name in ("SAELens", "sparsify", "dictionary_learning", "Gemma Scope"):
        assert name in body
    assert page.locator('[data-testid="stDataFrame"]').count() == 0


DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"


@pytest.mark.skipif(not DEMO.is_dir(), reason="needs the shipped demo workspace")
@pytest.mark.parametrize("present", [False, True])
def test_tables_fit_the_screen_on_the_demo(page, server, present):
    """No data grid scrolls sideways at 1400 px: every column is in view, in either mode."""
    for path in ("", "consistency", "pairs", "semantics", "orphans", "explanations"):
        open_page(page, server, path, {"ws": "data/demo", **({"present": "1"} if present else {})})
        page.wait_for_selector('[data-testid="stDataFrame"] .dvn-scroller', timeout=120_000)
        page.wait_for_timeout(1000)
        widths = page.evaluate("""() => Array.from(document.querySelectorAll('[data-testid="stDataFrame"] .dvn-scroller'))
                                  .map(s => [s.scrollWidth, s.clientWidth])""")
        assert widths and all(scroll <= client + 1 for scroll, client in widths), (path, widths)


def test_selecting_a_runner_up_candidate_opens_its_own_pair(page, server, generated_ws):
    from saecore.pairs import candidates, partner_in_a

    metas = comparable_families(scan(generated_ws))[_topk(generated_ws)]
    runs = [load_run(m.path, name=m.name) for m in metas]
    match = match_for(compare_runs(runs).matches, 0, 1)
    feature = 5
    second = int(candidates(runs[0], feature, runs[1], k=5)["feature"].iloc[1])
    expected = partner_in_a(match, second)
    open_page(page, server, "pairs", {"ws": str(generated_ws), "family": _topk(generated_ws), "f": str(feature)})
    grid = page.locator(f'[class*="st-key-candidates_b_0_1_{feature}"] [data-testid="stDataFrame"]')
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    # Glide grid: a 35 px header, then 35 px rows; the leftmost column holds the row selectors. Pick rank 2.
    page.mouse.click(box["x"] + 18, box["y"] + 35 + 35 + 17)
    settle(page)
    assert query(page)["f"] == [str(expected)]
    assert page.get_by_text(f"Feature {expected} of").count() >= 1
