"""Home page: runs, families, unreadable paths and the PW-MCC summary; bad workspace paths show an error."""

from __future__ import annotations

import pytest

from app_helpers import assert_clean, figures, open_app, values
from saecore.consistency import compare_runs
from saecore.loaders import load_run
from saecore.overview import comparable_families
from saecore.workspace import scan


def _metric(at, label):
    return next(m.value for m in at.metric if m.label == label)


def test_lists_runs_families_and_unreadable_paths(generated_ws):
    at = open_app({"ws": str(generated_ws)})
    assert_clean(at)
    assert (_metric(at, "Runs"), _metric(at, "Families"), _metric(at, "Unreadable paths")) == ("6", "2", "1")
    assert any("broken" in str(df.value["path"].tolist()) for df in at.dataframe if "path" in df.value)


def test_summary_means_equal_saecore(generated_ws):
    at = open_app({"ws": str(generated_ws)})
    fig = figures(at)[0]
    shown = sorted(y for trace in fig["data"] if "family mean" in trace["name"] for y in values(trace["y"]))
    ws = scan(generated_ws)
    expected = sorted(compare_runs([load_run(m.path, name=m.name) for m in metas]).pw.mean
                      for metas in comparable_families(ws).values())
    assert shown == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("path", ["/etc", "data/../..", "no/such/folder"])
def test_bad_workspace_shows_an_error(path):
    at = open_app({"ws": path})
    assert_clean(at)
    assert at.error and "Cannot open workspace" in at.error[0].value


def test_typing_a_path_updates_the_url(generated_ws):
    at = open_app({"ws": "/etc"})
    at.text_input[0].set_value(str(generated_ws)).run()
    assert not at.error and at.query_params["ws"] == str(generated_ws)


def test_presentation_mode_hides_controls_and_keeps_the_url(generated_ws):
    at = open_app({"ws": str(generated_ws), "present": "1"})
    assert_clean(at)
    assert any("st-key-controls" in el.proto.body for el in at.get("html"))
    assert at.query_params["present"] == "1"
    next(b for b in at.button if b.label == "Exit presentation mode").click().run()
    assert "present" not in at.query_params
    assert not any("st-key-controls" in el.proto.body for el in at.get("html"))
    next(b for b in at.button if b.label == "Presentation mode").click().run()
    assert at.query_params["present"] == "1"


def test_report_and_downloads_are_offered(generated_ws):
    at = open_app({"ws": str(generated_ws)})
    labels = [el.proto.label for el in at.get("download_button")]
    assert {"PNG", "SVG", "CSV", "Download HTML report of this view"} <= set(labels)
