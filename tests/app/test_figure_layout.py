"""Every figure drawn in a real browser at two chart widths, normal and presentation size: no text clipped or overlapping."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

CHROMIUM = "/usr/bin/chromium"
WIDTHS = (1000, 1700)
TOLERANCE = 1.0

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium")

RUNS = [f"topk_k32/seed{s}/checkpoints/149504" for s in range(3)]
SETTING = "ReLU + L1 λ=0.1 · 16,384 latents"
FAMILY = "saelens/topk/k=32/576x1536/smollm2-135m-instruct/blocks.10.hook_resid_post/final"


def _pair(a: str, b: str) -> str:
    return f"{a} ↔ {b}"


def _summary() -> pd.DataFrame:
    """Three families (two architectures, long family keys) with three seed pairs each."""
    rows = []
    specs = [("topk", "k=32", 32.0, [0.41, 0.40, 0.42]), ("topk", "k=64", 64.0, [0.47, 0.45, 0.46]),
             ("relu", "l1=0.0008", 0.0008, [0.33, 0.35, 0.34])]
    for arch, sparsity, value, scores in specs:
        for i, score in enumerate(scores):
            rows.append({"family": FAMILY.replace("topk/k=32", f"{arch}/{sparsity}"), "architecture": arch,
                         "sparsity": sparsity, "sparsity_value": value, "run_a": RUNS[i], "run_b": RUNS[(i + 1) % 3],
                         "pw_mcc": score})
    return pd.DataFrame(rows)


def _bins() -> pd.DataFrame:
    from saecore.metrics import frequency_bins

    rng = np.random.default_rng(0)
    freq = np.concatenate([10 ** rng.uniform(-6, -1, 1500), np.zeros(36)])
    scores = np.clip(0.2 + 0.1 * (np.log10(np.maximum(freq, 1e-7)) + 6) + rng.normal(0, 0.1, len(freq)), -0.2, 1)
    return frequency_bins(freq, scores)


def _semantic_inputs() -> tuple[dict, dict, dict]:
    from saecore.plots.semantic import bins_frame

    rng = np.random.default_rng(1)
    labels = [_pair(RUNS[0], RUNS[1]), _pair(RUNS[0], RUNS[2])]
    pairs, tables, baselines = {}, {}, {}
    for i, label in enumerate(labels):
        score = rng.uniform(0.01, 1, 300)
        sim = np.clip(0.1 + 0.5 * score + rng.normal(0, 0.1, 300), -0.1, 1)
        pairs[label] = pd.DataFrame({"feature_a": np.arange(300), "feature_b": rng.permutation(300), "score": score,
                                     "similarity": sim, "explanation_a": ["numbers in code"] * 300,
                                     "explanation_b": ["digits <b>and</b> code"] * 300})
        edges = np.geomspace(0.01, 1, 6)
        counts = np.histogram(score, edges)[0]
        means = [float(sim[(score >= lo) & (score < hi)].mean()) for lo, hi in zip(edges[:-1], edges[1:])]
        tables[label] = bins_frame(edges, counts, means)
        baselines[label] = 0.12 + 0.01 * i
    return pairs, tables, baselines


def _synthetic_inputs() -> tuple[dict, pd.DataFrame]:
    rows = []
    for arch, top in (("topk", 0.9), ("relu", 0.7), ("batchtopk", 0.8)):
        for metric in ("gt_mcc", "pw_mcc"):
            for member in range(3):
                for step in (0, 500, 1000, 2000, 4000):
                    rows.append({"arch": arch, "step": step, "metric": metric, "member": member,
                                 "value": top * (1 - np.exp(-step / 1000)) + 0.02 * member})
    results = {a: {"steps_done": 4000} for a in ("topk", "relu", "batchtopk")}
    summary = {"seeds": [0, 1, 2], "completed": False, "regime": "matched", "steps": 8000, "results": results,
               "description": "A 64-feature ground truth in 32 dimensions, 3 seeds",
               "chance": {"gt_mcc": 0.21, "pw_mcc": 0.23}}
    return summary, pd.DataFrame(rows)


def all_figures() -> dict[str, go.Figure]:
    """One figure of every type, from realistic inputs with long run names, pair labels and family keys."""
    from saecore.plots.agreement import (agreement_scatter, best_score_histogram, encoder_decoder_figure,
                                         fan_in_figure, orphan_figure, three_axes_figure)
    from saecore.plots.consistency import (contribution_figure, family_summary_figure, frequency_bins_figure,
                                           pwmcc_matrix_figure, score_histogram, shared_fraction_figure, steps_figure)
    from saecore.plots.semantic import binned_figure, semantic_scatter
    from saecore.plots.style import retitle
    from saecore.plots.synthetic import experiment_figure

    rng = np.random.default_rng(2)
    pairs = [_pair(RUNS[0], RUNS[1]), _pair(RUNS[0], RUNS[2]), _pair(RUNS[1], RUNS[2])]
    scores = {p: np.clip(rng.normal(0.4, 0.25, 1536), -1, 1) for p in pairs}
    thresholds = np.linspace(0, 1, 101)
    curves = {p: pd.DataFrame({"threshold": thresholds, "shared_fraction": np.clip(1 - thresholds ** 0.5 * (1 + 0.1 * i), 0, 1)})
              for i, p in enumerate(pairs)}
    matrix = np.array([[1, 0.403, 0.398], [0.403, 1, 0.41], [0.398, 0.41, 1]])
    steps = pd.DataFrame({"step": np.repeat([1024, 8192, 65536, 149504], 3), "pw_mcc": rng.uniform(0.2, 0.45, 12)})
    bins = _bins()
    sem_pairs, tables, baselines = _semantic_inputs()
    summary, synth_curves = _synthetic_inputs()
    chances = {"(1536 latents, d_in 576)": 0.134, "(3072 latents, d_in 576)": 0.141}
    return {
        "family_summary": family_summary_figure(_summary(), chances),
        "pwmcc_matrix": pwmcc_matrix_figure(RUNS, matrix, 0.134),
        "retitled_histogram": retitle(score_histogram(scores, 0.134), "Per-feature match scores: ReLU + L1 λ=0.1 · "
                                      "16,384 latents · smollm2-135m-instruct · step 149,504 · seeds 0–4"),
        "score_histogram": score_histogram(scores, 0.134, "abs"),
        "shared_fraction": shared_fraction_figure(curves, 0.66, "abs"),
        "frequency_bins": frequency_bins_figure(bins, 0.134, "abs"),
        "contribution": contribution_figure(bins),
        "steps": steps_figure(steps, 0.134),
        "semantic_scatter": semantic_scatter(sem_pairs, baselines),
        "binned": binned_figure(tables, baselines),
        "synthetic": experiment_figure(summary, synth_curves),
        **_beyond_figures(pairs, rng, agreement_scatter, encoder_decoder_figure, three_axes_figure, orphan_figure,
                          best_score_histogram, fan_in_figure),
    }


def _beyond_figures(pairs, rng, agreement_scatter, encoder_decoder_figure, three_axes_figure, orphan_figure,
                    best_score_histogram, fan_in_figure) -> dict[str, go.Figure]:
    """Activation agreement, encoder vs decoder, the three views, orphans and many-to-one, with long labels."""
    from saecore.plots.agreement import AGREEMENT_MEASURES

    def frame(n: int) -> pd.DataFrame:
        x = np.clip(rng.normal(0.5, 0.3, n), -1, 1)
        return pd.DataFrame({"feature_a": np.arange(n), "feature_b": rng.permutation(n), "decoder_score": x,
                             "score": x, "pearson": (r := np.clip(x + rng.normal(0, 0.2, n), -1, 1)), "activation_r": r,
                             "similarity": rng.uniform(0, 1, n)})

    table = pd.DataFrame([{"pair": p, **{c: rng.uniform(0, 1) for c in AGREEMENT_MEASURES}} for p in pairs])
    runs = {name: {"orphan": 10 ** rng.uniform(-5, -2, 40), "shared": 10 ** rng.uniform(-4, -1, 400)} for name in RUNS}
    best = {name: rng.uniform(0, 1, 1536) for name in RUNS}
    return {
        "agreement_scatter": agreement_scatter({p: frame(300) for p in pairs}),
        "encoder_decoder": encoder_decoder_figure(table),
        "three_axes": three_axes_figure({f"{SETTING}: seeds 0 ↔ 1": frame(200), f"{SETTING} (L1): seeds 0 ↔ 1": frame(200)}),
        "orphans": orphan_figure(runs, "firing fraction", log=True),
        "best_scores": best_score_histogram(best, 0.7),
        "fan_in": fan_in_figure(rng.poisson(1.0, 3072)),
    }


CAPTION = ("Features of topk_k32/seed0/checkpoints/149504 in 5 equal-width bins of log10 firing fraction (from feature "
           "statistics); per-feature score = mean matched |cos| against the other 2 runs of the family. Dashed: chance MCC.")


def views(fig: go.Figure) -> list[tuple[str, go.Figure, tuple[int, ...]]]:
    """The figure as the dashboard draws it (normal, presentation) and as exported with its caption."""
    from saecore.plots.style import presentation, with_caption

    big = presentation(fig)
    return [("normal", fig, WIDTHS), ("presentation", big, WIDTHS),
            ("export", with_caption(fig, CAPTION), (1000,)), ("presentation export", with_caption(big, CAPTION), (1450,))]


# Boxes of every visible text of the chart, each tagged with the group it belongs to (ticks: per axis).
COLLECT = """
async ([spec, width]) => {
  const div = document.getElementById('chart');
  Plotly.purge(div);
  div.style.width = width + 'px';
  await Plotly.newPlot(div, spec.data, spec.layout, {displaylogo: false});
  const root = div.querySelector('.svg-container').getBoundingClientRect();
  const items = [];
  const add = (group, el) => {
    const r = el.getBoundingClientRect();
    const text = (el.textContent || '').trim();
    if (r.width < 0.5 || r.height < 0.5 || !text) return;
    items.push({group, text: text.slice(0, 50), x0: r.left, y0: r.top, x1: r.right, y1: r.bottom});
  };
  div.querySelectorAll('text.gtitle').forEach(e => add('title', e));
  div.querySelectorAll('text.gtitle-subtitle').forEach(e => add('subtitle', e));
  div.querySelectorAll('text').forEach(e => {
    const c = e.getAttribute('class') || '';
    if (/^[xy]\\d*title$/.test(c)) add(c, e);
  });
  div.querySelectorAll('text.legendtext').forEach(e => add('legend', e));
  div.querySelectorAll('g.annotation').forEach((g, i) => g.querySelectorAll('text').forEach(e => add('annotation' + i, e)));
  div.querySelectorAll('g').forEach(g => {
    const c = g.getAttribute('class') || '';
    if (/^[xy]\\d*tick$/.test(c)) g.querySelectorAll(':scope > text').forEach(e => add(c, e));
  });
  div.querySelectorAll('text.bartext').forEach(e => add('bartext', e));
  div.querySelectorAll('g.colorbar text').forEach(e => add('colorbar', e));
  return {root: {x0: root.left, y0: root.top, x1: root.right, y1: root.bottom}, items};
}
"""


def _overlap(a: dict, b: dict) -> bool:
    return (min(a["x1"], b["x1"]) - max(a["x0"], b["x0"]) > TOLERANCE
            and min(a["y1"], b["y1"]) - max(a["y0"], b["y0"]) > TOLERANCE)


def _outside(box: dict, root: dict) -> bool:
    return (box["x0"] < root["x0"] - TOLERANCE or box["y0"] < root["y0"] - TOLERANCE
            or box["x1"] > root["x1"] + TOLERANCE or box["y1"] > root["y1"] + TOLERANCE)


def layout_problems(found: dict) -> list[str]:
    """Texts running outside the chart and pairs of texts from different groups that overlap."""
    items, root = found["items"], found["root"]
    problems = [f"outside: {b['group']} {b['text']!r}" for b in items if _outside(b, root)]
    for i, a in enumerate(items):
        for b in items[i + 1:]:
            if a["group"] != b["group"] and _overlap(a, b):
                problems.append(f"overlap: {a['group']} {a['text']!r} / {b['group']} {b['text']!r}")
    return problems


def test_problems_are_detected():
    root = {"x0": 0, "y0": 0, "x1": 100, "y1": 100}
    box = {"group": "title", "text": "t", "x0": 10, "y0": 10, "x1": 50, "y1": 20}
    other = {"group": "legend", "text": "l", "x0": 40, "y0": 15, "x1": 120, "y1": 30}
    same = {**other, "group": "title"}
    assert layout_problems({"root": root, "items": [box, other]}) == [
        "outside: legend 'l'", "overlap: title 't' / legend 'l'"]
    assert layout_problems({"root": root, "items": [box, same]}) == ["outside: title 'l'"]


@pytest.fixture(scope="module")
def chart_page(tmp_path_factory):
    from playwright.sync_api import sync_playwright
    from plotly.offline import get_plotlyjs

    page_file = tmp_path_factory.mktemp("layout") / "charts.html"
    page_file.write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8"><script>{get_plotlyjs()}</script></head>'
                         '<body style="margin:0"><div id="chart"></div></body></html>')
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": max(WIDTHS) + 100, "height": 1400})
        page.goto(page_file.as_uri())
        page.wait_for_function("typeof Plotly !== 'undefined'")
        yield page
        browser.close()


def test_no_text_is_clipped_or_overlapping(chart_page):
    failures = []
    for name, fig in all_figures().items():
        for mode, shown, widths in views(fig):
            spec = json.loads(shown.to_json())
            for width in widths:
                found = chart_page.evaluate(COLLECT, [spec, width])
                assert found["items"], f"{name}: no text found"
                failures += [f"{name} [{mode}, {width}px] {p}" for p in layout_problems(found)]
    assert not failures, f"{len(failures)} layout problems:\n" + "\n".join(failures)
