"""Text helpers: one shape format and grammatical counts wherever they are printed."""

from __future__ import annotations

import pytest

from saecore.runs import RunMeta
from saecore.text import arch_text, plural, setting_text, shape_text, sparsity_text


@pytest.mark.parametrize(("d_in", "d_sae", "expected"), [
    (576, 1536, "576 × 1,536"),
    (2304, 16384, "2,304 × 16,384"),
    (8, 8, "8 × 8"),
])
def test_shape_text_puts_d_in_first_with_thousands_separators(d_in, d_sae, expected):
    assert shape_text(d_in, d_sae) == expected


def test_run_meta_shape_uses_shape_text():
    meta = RunMeta(name="r", path="/r", format="saelens", d_in=768, d_sae=24576)
    assert meta.shape == shape_text(768, 24576) == "768 × 24,576"


@pytest.mark.parametrize(("n", "args", "expected"), [
    (0, ("run",), "0 runs"),
    (1, ("run",), "1 run"),
    (2, ("run",), "2 runs"),
    (1, ("index", "indices"), "1 index"),
    (3, ("index", "indices"), "3 indices"),
    (1, ("family", "families"), "1 family"),
    (5, ("family", "families"), "5 families"),
    (1536, ("pair",), "1,536 pairs"),
])
def test_plural_agrees_with_the_count(n, args, expected):
    assert plural(n, *args) == expected


def test_settings_are_written_as_people_name_them():
    assert setting_text("topk", "k=32") == "TopK k=32"
    assert setting_text("standard", "l1=0.1") == "ReLU + L1 λ=0.1"
    assert setting_text("jumprelu", "l0=40") == "JumpReLU target L0=40"
    assert setting_text("newarch", "-") == "newarch"
    assert (arch_text("batchtopk"), sparsity_text("-")) == ("BatchTopK", "")
