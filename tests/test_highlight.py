"""Context HTML: text is escaped and shading follows the activation."""

from __future__ import annotations

import re
from html.parser import HTMLParser

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


class _Layout(HTMLParser):
    """Each text run of the HTML with whether it sits inside a no-wrap group (where no line break can occur)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[bool] = []
        self.runs: list[tuple[str, bool]] = []
        self.groups: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "wbr":
            self.runs.append(("", False))
            return
        nowrap = "white-space: nowrap" in (dict(attrs).get("style") or "")
        if nowrap:
            self.groups.append("")
        self.stack.append(nowrap)

    def handle_endtag(self, tag) -> None:
        self.stack.pop()

    def handle_data(self, data) -> None:
        inside = any(self.stack)
        self.runs.append((data, inside))
        if inside:
            self.groups[-1] += data


def layout(html: str) -> _Layout:
    parser = _Layout()
    parser.feed(html)
    return parser


def test_a_word_split_over_tokens_stays_in_one_no_wrap_group():
    page = layout(context_html(["The", " fortun", "es", " favour"], [0.0, 1.0, 2.0, 0.5]))
    assert page.groups == ["The", "fortunes", "favour"]
    assert "".join(text for text, _ in page.runs) == "The fortunes favour"


def test_line_breaks_can_only_fall_on_whitespace():
    tokens = ["Once", " upon", " a", " tim", "e,", "  the", "\n", "end", " of", " it", "."]
    page = layout(context_html(tokens, [float(i) for i in range(len(tokens))]))
    outside = "".join(text for text, inside in page.runs if not inside)
    assert outside.replace("↵", "").isspace()
    assert "↵" in outside  # a newline is shown, outside any word, where the line may break
    assert page.groups == ["Once", "upon", "a", "time,", "the", "end", "of", "it."]
    assert all(not any(ch.isspace() for ch in g) for g in page.groups)


def test_every_token_keeps_its_activation_as_a_title():
    html = context_html(["The", " fortun", "es"], [0.0, 1.5, 2.25])
    assert re.findall(r'title="([^"]+)"', html) == ["0", "1.5", "1.5", "2.25"]  # " fortun" is a space and a word part
    assert "inline-block" not in html
