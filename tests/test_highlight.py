"""Context HTML: text is escaped and shading follows the activation."""

from __future__ import annotations

import pytest

from saecore.highlight import context_html, token_span


def test_tokens_are_escaped():
    html = context_html(["<script>", "&"], [1.0, 0.0])
    assert "<script>" not in html and "&lt;script&gt;" in html and "&amp;" in html


def test_strongest_token_is_opaque_and_zero_is_clear():
    html = context_html(["a", "b"], [2.0, 0.0])
    assert "rgba(230,97,0,1.00)" in html and "rgba(230,97,0,0.00)" in html


def test_negative_activation_is_not_shaded():
    assert "0.00)" in token_span("x", -1.0, 1.0)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 tokens but 1 activations"):
        context_html(["a", "b"], [1.0])
