"""Token-level HTML for activation contexts: each token shaded by the feature's activation, text escaped."""

from __future__ import annotations

import html
from collections.abc import Sequence

# RGB of the shading colour; opacity carries the activation strength.
SHADE_RGB = (230, 97, 0)


def token_span(token: str, activation: float, scale: float) -> str:
    """One escaped token in a span whose background opacity is activation / scale (0 when scale is 0)."""
    alpha = 0.0 if scale <= 0 else max(0.0, min(1.0, float(activation) / scale))
    r, g, b = SHADE_RGB
    text = html.escape(str(token)).replace("\n", "↵")
    return (f'<span title="{float(activation):.3g}" style="background: rgba({r},{g},{b},{alpha:.2f}); '
            f'border-radius: 2px; white-space: pre-wrap">{text}</span>')


def context_html(tokens: Sequence[str], activations: Sequence[float], scale: float | None = None) -> str:
    """A context as one line of shaded tokens; `scale` is the activation drawn fully opaque (default: its max)."""
    if len(tokens) != len(activations):
        raise ValueError(f"{len(tokens)} tokens but {len(activations)} activations")
    if scale is None:
        scale = max((float(a) for a in activations), default=0.0)
    spans = "".join(token_span(t, a, scale) for t, a in zip(tokens, activations))
    return (f'<div style="font-family: monospace; line-height: 1.7; margin-bottom: 0.4em; overflow-wrap: anywhere; '
            f'max-width: 100%">{spans}</div>')
