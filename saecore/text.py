"""Small text-formatting helpers shared by the command line and the dashboard, so both word things alike."""

from __future__ import annotations


def shape_text(d_in: int, d_sae: int) -> str:
    """An SAE's shape as 'd_in × d_sae' with thousands separators, e.g. '576 × 1,536'."""
    return f"{d_in:,} × {d_sae:,}"


def plural(n: int, word: str, plural: str | None = None) -> str:
    """A count with its noun in the right number: '1 run', '3 runs', '1 index', '2 indices'."""
    return f"{n:,} {word if n == 1 else plural or word + 's'}"
