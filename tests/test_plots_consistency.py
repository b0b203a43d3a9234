"""Consistency figures carry title, axis labels, caption and chance level; report HTML is self-contained."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from saecore.metrics import frequency_bins
from saecore.plots.consistency import (contribution_figure, family_summary_figure, frequency_bins_figure,
                                       pwmcc_matrix_figure, score_histogram)
from saecore.plots.style import with_caption
from saecore.report import Section, html_report


def _annotations(fig) -> str:
    return " ".join(a.text for a in with_caption(fig).layout.annotations)


def _labels(fig) -> str:
    """Every text a reader sees besides the axes: caption, annotations and legend entries (reference lines)."""
    captioned = with_caption(fig)
    names = " ".join(t.name for t in fig.data if t.name)
    return f"{captioned.layout.title.subtitle.text or ''} {_annotations(fig)} {names}".replace("<br>", " ")


def test_summary_figure_has_labels_caption_and_chance():
    df = pd.DataFrame({"family": ["f"] * 3, "architecture": ["topk"] * 3, "sparsity": ["k=8"] * 3,
                       "sparsity_value": [8.0] * 3, "run_a": ["a", "a", "b"], "run_b": ["b", "c", "c"],
                       "pw_mcc": [0.8, 0.7, 0.9]})
    fig = family_summary_figure(df, {"16×8": 0.41}, caption="runs a, b, c")
    assert fig.layout.title.text and fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
    assert "runs a, b, c" in _labels(fig) and "chance 16×8 0.410" in _labels(fig)
    assert any(shape.y0 == pytest.approx(0.41) and shape.line.dash == "dash" for shape in fig.layout.shapes)
    assert fig.data[1].y[0] == pytest.approx(0.8)


def test_histogram_marks_chance_and_threshold():
    fig = score_histogram({"a ↔ b": np.array([0.1, 0.9, np.nan])}, chance=0.3)
    text = _labels(fig)
    assert "chance MCC 0.300" in text and "shared threshold 0.7" in text
    assert sorted(shape.x0 for shape in fig.layout.shapes) == pytest.approx([0.3, 0.7])
    assert len(fig.data[0].x) == 2


def test_matrix_figure_writes_values():
    fig = pwmcc_matrix_figure(["a", "b"], np.array([[1, 0.5], [0.5, 1]]), chance=0.2, caption="x")
    assert fig.data[0].text[0][1] == "0.500" and "0.200" in _labels(fig)


def test_frequency_figures_use_the_bins_table():
    rng = np.random.default_rng(0)
    bins = frequency_bins(10 ** rng.uniform(-5, -1, 200), rng.uniform(0, 1, 200))
    fig = frequency_bins_figure(bins, chance=0.2)
    assert list(fig.data[0].y) == list(bins["mean"])
    fig2 = contribution_figure(bins)
    assert fig2.data[1].y[-1] == bins["cumulative"].iloc[-1]


def test_contribution_figure_draws_no_chance_line():
    rng = np.random.default_rng(0)
    bins = frequency_bins(10 ** rng.uniform(-5, -1, 200), rng.uniform(0, 1, 200))
    fig = contribution_figure(bins, caption="bins of run a")
    assert len(fig.layout.shapes) == 0 and len(fig.layout.annotations) == 0
    assert not any("chance" in (t.name or "") for t in fig.data)
    assert "chance" not in _labels(fig) and "bins of run a" in _labels(fig)
    with pytest.raises(TypeError):
        contribution_figure(bins, 0.2, "caption")  # the chance parameter is gone


def test_report_is_offline_and_escapes_text():
    fig = score_histogram({"p": np.array([0.5])})
    html = html_report("A <b> title", [Section("s", figure=fig, table=pd.DataFrame({"x": ["<i>"]}), caption="c&d")])
    assert "A &lt;b&gt; title" in html and "&lt;i&gt;" in html and "c&amp;d" in html
    assert "cdn.plot.ly" not in html.split("</script>", 1)[1] and "Plotly.newPlot" in html


def test_png_export_includes_the_caption_and_is_a_png():
    from saecore.plots.export import figure_image

    fig = score_histogram({"p": np.array([0.5, 0.6])}, caption="runs a and b")
    png = figure_image(fig, "png")
    svg = figure_image(fig, "svg").decode()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and "runs a and b" in svg
