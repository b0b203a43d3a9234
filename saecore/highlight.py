"""Token-level HTML for activation contexts: each token shaded by the feature's activation, text escaped.

Lines wrap only at whitespace: the non-space parts of consecutive tokens ("The", " fortun", "es") are glued into
one no-wrap group per word, and whitespace sits between the groups, where the line may break.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

# RGB of the shading colour; opacity carries the activation strength.
SHADE_RGB = (230, 97, 0)
WORD_OPEN = '<span style="white-space: nowrap">'
_PIECES = re.compile(r"\s+|\S+")


def token_span(token: str, activation: float, scale: float) -> str:
    """One escaped token (or part of one) in a span shaded by activation / scale (clear when scale is 0).

    A newline shows as ↵ followed by a break opportunity, so a context stays one paragraph.
    """
    alpha = 0.0 if scale <= 0 else max(0.0, min(1.0, float(activation) / scale))
    r, g, b = SHADE_RGB
    text = html.escape(str(token)).replace("\n", "↵<wbr>")
    return (f'<span title="{float(activation):.3g}" style="background: rgba({r},{g},{b},{alpha:.2f}); '
            f'border-radius: 2px">{text}</span>')


def token_pieces(token: str) -> list[tuple[str, bool]]:
    """A token split into runs of whitespace and of other characters, each flagged True when it is whitespace."""
    pieces = [(p, p.isspace()) for p in _PIECES.findall(str(token))]
    return pieces or [("", False)]


def word_groups(tokens: Sequence[str]) -> list[list[tuple[int, str]]]:
    """(token index, piece) runs: each word is one run, each whitespace piece a run of its own.

    A token that does not start with whitespace continues the previous token's word.
    """
    groups: list[list[tuple[int, str]]] = []
    word: list[tuple[int, str]] = []
    for i, token in enumerate(tokens):
        for piece, is_space in token_pieces(token):
            if not is_space:
                word.append((i, piece))
                continue
            if word:
                groups.append(word)
                word = []
            groups.append([(i, piece)])
    if word:
        groups.append(word)
    return groups


def context_html(tokens: Sequence[str], activations: Sequence[float], scale: float | None = None) -> str:
    """A context as shaded tokens wrapping only between words; `scale` is drawn fully opaque (default: the max)."""
    if len(tokens) != len(activations):
        raise ValueError(f"{len(tokens)} tokens but {len(activations)} activations")
    if scale is None:
        scale = max((float(a) for a in activations), default=0.0)
    parts = []
    for group in word_groups([str(t) for t in tokens]):
        spans = "".join(token_span(piece, activations[i], scale) for i, piece in group)
        is_space = len(group) == 1 and group[0][1].isspace()
        parts.append(spans if is_space else f"{WORD_OPEN}{spans}</span>")
    return (f'<div style="font-family: monospace; line-height: 1.7; margin-bottom: 0.4em; white-space: pre-wrap; '
            f'word-break: normal; overflow-wrap: normal; overflow-x: auto; max-width: 100%">{"".join(parts)}</div>')
