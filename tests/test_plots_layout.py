"""Figure layout helpers: presentation scaling, label wrapping, reference lines in the legend, captions in exports."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from saecore.plots.consistency import frequency_bins_figure, score_histogram, shared_fraction_figure
from saecore.plots.semantic import bins_frame, binned_figure
from saecore.plots.style import (FONT_SIZE, TITLE_SIZE, finish, line_count, presentation, retitle, scale_of,
                                 with_caption, wrap_label)

LONG_PAIR = "topk_k32/seed0/checkpoints/149504 ↔ topk_k32/seed1/checkpoints/149504"


def _font_sizes(node, path: str = "") -> dict[str, float]:
    """Every explicitly set font size in a plotly spec, by its path."""
    out: dict[str, float] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}"
            if key.endswith("font") and isinstance(value, dict) and isinstance(value.get("size"), (int, float)):
                out[here] = value["size"]
            else:
                out.update(_font_sizes(value, here))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            out.update(_font_sizes(value, f"{path}[{i}]"))
    return out


def _figure() -> go.Figure:
    """A captioned figure with a font set in every place presentation() must reach."""
    fig = go.Figure(go.Bar(x=["a", "b"], y=[1, 2], name=LONG_PAIR, text=["n=1", "n=2"], textfont={"size": 11}))
    fig.add_trace(go.Heatmap(z=[[0, 1]], colorbar={"title": {"text": "PW-MCC", "font": {"size": 12}},
                                                    "tickfont": {"size": 10}}))
    fig.add_annotation(text="note", x=0, y=1, font={"size": 9}, yshift=10)
    fig = finish(fig, "A title", "x", "y", caption="runs a and b")
    fig.update_xaxes(tickfont={"size": 11})
    return fig


def test_presentation_scales_every_font_and_grows_the_figure():
    fig = _figure()
    before = fig.to_plotly_json()
    big = presentation(fig, 1.5)
    sizes, big_sizes = _font_sizes(before), _font_sizes(big.to_plotly_json())
    assert sizes.keys() == big_sizes.keys()
    for path in (".layout.font", ".layout.title.font", ".layout.legend.font", ".layout.xaxis.tickfont",
                 ".layout.annotations[0].font", ".data[0].textfont", ".data[1].colorbar.tickfont",
                 ".data[1].colorbar.title.font"):
        assert big_sizes[path] == pytest.approx(1.5 * sizes[path]), path
    assert big.layout.height == pytest.approx(1.5 * fig.layout.height)
    for side in ("l", "r", "t", "b"):
        assert getattr(big.layout.margin, side) == pytest.approx(1.5 * getattr(fig.layout.margin, side))
    assert big.layout.annotations[0].yshift == 15
    assert big.layout.title.pad.t == pytest.approx(1.5 * fig.layout.title.pad.t)
    assert scale_of(big) == 1.5 and scale_of(fig) == 1.0 and big.layout.meta["caption"] == "runs a and b"
    assert fig.to_plotly_json() == before  # the original is untouched
    assert big.data[0].x == ("a", "b") and big.data[0].y == (1, 2)  # data untouched


def test_presentation_of_a_figure_without_explicit_fonts_scales_the_default():
    big = presentation(go.Figure(go.Scatter(x=[0, 1], y=[0, 1])), 2.0)
    assert big.layout.font.size == 24 and big.layout.height == 900


def test_captioned_export_grows_with_the_presentation_scale():
    fig = finish(go.Figure(go.Scatter(x=[0], y=[0], name="a")), "T", "x", "y", caption="word " * 60)
    small, big = with_caption(fig), with_caption(presentation(fig, 1.5))
    assert "word" in small.layout.title.subtitle.text
    assert big.layout.title.subtitle.font.size == pytest.approx(1.5 * small.layout.title.subtitle.font.size)
    assert small.layout.height > fig.layout.height and small.layout.margin.t > fig.layout.margin.t
    assert with_caption(fig, "").layout.height == fig.layout.height


@pytest.mark.parametrize("text,width", [(LONG_PAIR, 36), ("saelens/topk/k=32/576x1536/smollm2-135m-instruct/"
                                                          "blocks.10.hook_resid_post/final", 24), ("short", 10)])
def test_wrapped_labels_keep_their_text_within_the_width(text, width):
    wrapped = wrap_label(text, width, max_lines=10)
    lines = wrapped.split("<br>")
    assert all(len(line) <= width for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")


def test_wrapped_labels_break_after_slashes_and_elide_past_the_last_line():
    assert wrap_label("topk_k32/seed0/checkpoints/149504", 16) == "topk_k32/seed0/<br>checkpoints/<br>149504"
    cut = wrap_label("one two three four five six", 9, max_lines=2)
    assert cut.split("<br>")[0] == "one two" and cut.endswith("…") and len(cut.split("<br>")[1]) <= 9
    assert wrap_label("first<br>second part", 6) == "first<br>second<br>part"


def test_reference_lines_are_named_in_the_legend_not_written_on_the_plot():
    fig = shared_fraction_figure({LONG_PAIR: pd.DataFrame({"threshold": [0, 1], "shared_fraction": [1, 0]})},
                                 chance=0.66)
    assert len(fig.layout.annotations) == 0
    names = [t.name.replace("<br>", " ") for t in fig.data]
    assert names[0].replace(" ", "") == LONG_PAIR.replace(" ", "")  # the data trace comes first
    assert "chance MCC 0.660" in names and any(n.startswith("shared threshold 0.7") for n in names)
    assert max(len(line) for t in fig.data for line in t.name.split("<br>")) <= 36


def test_frequency_bars_keep_their_counts_and_the_chance_line_off_them():
    rng = np.random.default_rng(0)
    from saecore.metrics import frequency_bins

    bins = frequency_bins(10 ** rng.uniform(-5, -1, 200), rng.uniform(0, 1, 200))
    fig = frequency_bins_figure(bins, chance=0.2)
    assert list(fig.data[0].text) == [f"n={int(c)}" for c in bins["count"]]
    assert [s.y0 for s in fig.layout.shapes] == [0.2] and len(fig.layout.annotations) == 0
    assert all("<br>" in t for t in fig.layout.xaxis.ticktext)


def test_binned_panels_carry_their_baseline_in_the_panel_title():
    tables = {f"{LONG_PAIR} {i}": bins_frame([0.01, 0.1, 1], [3, 4], [0.2, 0.4]) for i in range(2)}
    fig = binned_figure(tables, {label: 0.12 + 0.01 * i for i, label in enumerate(tables)})
    titles = [a.text for a in fig.layout.annotations]
    assert "random pairs 0.12" in titles[0] and "random pairs 0.13" in titles[1]
    assert [t.name for t in fig.data[2:]] == ["random unmatched pairs (mean)"]
    assert [s.y0 for s in fig.layout.shapes] == pytest.approx([0.12, 0.13])
    assert fig.layout.margin.t > 3 * FONT_SIZE + TITLE_SIZE  # room for the title and the three-line panel titles


def test_figures_put_the_legend_below_and_let_axes_grow_their_margins():
    fig = score_histogram({LONG_PAIR: np.linspace(0, 1, 20)}, chance=0.1)
    assert fig.layout.legend.yref == "container" and fig.layout.legend.y == 0 and fig.layout.legend.orientation == "h"
    assert fig.layout.xaxis.automargin is True and fig.layout.yaxis.automargin is True
    assert fig.layout.title.yref == "container" and fig.layout.title.yanchor == "top"


def test_retitle_grows_the_top_margin_with_the_title_lines():
    fig = score_histogram({"a ↔ b": np.linspace(0, 1, 50)}, 0.2)
    long = retitle(fig, "Per-feature match scores: TopK k=32 · 16,384 latents · gemma-2-2b · step 149,504 · seeds 0–4")
    lines = line_count(long.layout.title.text)
    assert lines == 2 and line_count(fig.layout.title.text) == 1
    assert long.layout.margin.t - fig.layout.margin.t == long.layout.height - fig.layout.height > TITLE_SIZE
    assert fig.layout.title.text == "Per-feature match scores"  # the original is untouched
