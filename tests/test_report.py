"""HTML reports: key numbers beside the charts, plotly.js only when needed and only once; file names cut at words."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from saecore.plots.consistency import score_histogram
from saecore.report import Section, html_report, metrics_html

# A piece of plotly.js itself (its licence banner), so counting it counts embedded copies of the library.
PLOTLY_MARK = get_plotlyjs()[:120]


def test_report_without_figures_is_small_and_has_no_plotly():
    table = pd.DataFrame({"bin": range(5), "mean": np.linspace(0, 1, 5)})
    page = html_report("Overview", [Section("Key numbers", metrics={"PW-MCC": "0.403 ± 0.001"}),
                                    Section("Bins", table=table)])
    assert len(page.encode()) < 50_000
    assert PLOTLY_MARK not in page and "<script" not in page
    assert "0.403 ± 0.001" in page


def test_report_with_two_figures_embeds_plotly_once():
    figs = [score_histogram({f"pair {i}": np.linspace(0, 1, 30)}, chance=0.2) for i in range(2)]
    page = html_report("Scores", [Section(f"Scores {i}", figure=f) for i, f in enumerate(figs)])
    assert page.count(PLOTLY_MARK) == 1
    assert page.count("Plotly.newPlot") == 2
    assert page.index(PLOTLY_MARK) < page.index("Plotly.newPlot")


def test_metrics_are_rendered_in_order_and_escaped():
    numbers = {"PW-MCC": "0.403 ± 0.001", "chance": "0.134", "<b>pairs</b>": "3 & more"}
    block = metrics_html(numbers)
    assert block.index("PW-MCC") < block.index("chance") < block.index("pairs")
    assert "&lt;b&gt;pairs&lt;/b&gt;" in block and "3 &amp; more" in block and "<b>" not in block
    assert block.count('class="metric"') == 3
    assert metrics_html({}) == ""
    page = html_report("R", [Section("Numbers", metrics=numbers, caption="seeds 0–2")])
    assert block in page and page.index("<h2>Numbers</h2>") < page.index(block) < page.index("seeds 0–2")


def test_sections_without_metrics_render_no_metric_boxes():
    page = html_report("R", [Section("Table", table=pd.DataFrame({"x": [1]}))])
    assert 'class="metrics"' not in page


@pytest.mark.parametrize("title,expected", [
    ("Consistency of saelens/topk/k=32/576x1536/smollm2-135m-instruct/blocks.10.hook_resid_post/final",
     "consistency-of-saelens-topk-k-32-576x1536-smollm2-135m"),
    ("Pairwise MCC between runs", "pairwise-mcc-between-runs"),
    ("", "figure"),
    ("x" * 80, "x" * 60),
])
def test_slug_cuts_at_a_word_boundary(title, expected):
    from dashboard.share import slug

    assert slug(title) == expected
    assert len(slug(title)) <= 60


def test_slug_never_ends_inside_a_word():
    from dashboard.share import slug

    title = "Explanation similarity by match-score bin for the family with a rather long name"
    name = slug(title)
    words = title.lower().replace("-", " ").split()
    assert name.split("-") == words[: len(name.split("-"))]
