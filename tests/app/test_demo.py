"""Every page on the shipped demo workspace (skipped until data/demo exists): no exceptions, charts drawn."""

from __future__ import annotations

import pytest

from app_helpers import ROOT, assert_clean, figures, open_app
from saecore.consistency import compare_runs
from saecore.loaders import load_run
from saecore.overview import comparable_families
from saecore.workspace import scan

DEMO = ROOT / "data" / "demo"
pytestmark = pytest.mark.skipif(not DEMO.is_dir(), reason="data/demo is not built")


@pytest.fixture(scope="module")
def demo_family():
    families = comparable_families(scan(DEMO))
    assert families, "the demo workspace has no family with two seeds"
    return next(iter(families.items()))


def test_home_opens_the_demo_by_default():
    at = open_app({})
    assert_clean(at)
    assert at.text_input[0].value == "data/demo"
    assert any(f["layout"]["title"]["text"].startswith("PW-MCC per family") for f in figures(at))


def test_consistency_numbers_match_saecore(demo_family):
    key, metas = demo_family
    at = open_app({"family": key}, "pages/consistency.py")
    assert_clean(at)
    pw = compare_runs([load_run(m.path, name=m.name) for m in metas]).pw
    assert next(m.value for m in at.metric if m.label.startswith("PW-MCC")) == f"{pw.mean:.4f}"


@pytest.mark.parametrize("page", ["pages/pairs.py", "pages/semantics.py", "pages/explanations.py"])
def test_other_pages_render(page, demo_family):
    key, _ = demo_family
    at = open_app({"family": key}, page)
    assert_clean(at)
    assert not at.error
