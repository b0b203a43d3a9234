"""Static images of figures (PNG/SVG) through kaleido, whose render server is started once, lazily."""

from __future__ import annotations

import threading
import warnings

import plotly.graph_objects as go

from saecore.plots.style import scale_of, with_caption

FORMATS = {"png": "image/png", "svg": "image/svg+xml"}
EXPORT_WIDTH = 1000  # pixels; a figure enlarged by style.presentation is exported proportionally wider
_lock = threading.Lock()
_server_started = False


def _ensure_server() -> None:
    """Start kaleido's shared render server on first use: later images take ~0.2 s instead of ~2.5 s."""
    global _server_started
    with _lock:
        if _server_started:
            return
        import kaleido

        try:
            kaleido.start_sync_server(silence_warnings=True)
        except (RuntimeError, OSError):
            pass  # falls back to one render process per image: slower, same result
        _server_started = True


def figure_image(fig: go.Figure, fmt: str = "png", scale: float = 2.0) -> bytes:
    """The figure rendered as PNG or SVG bytes (same layout as on screen, caption included).

    A figure from `style.presentation` keeps its proportions: the image is as much wider as its fonts are bigger.
    """
    if fmt not in FORMATS:
        raise ValueError(f"image format must be one of {tuple(FORMATS)}, got {fmt!r}")
    _ensure_server()
    width = fig.layout.width or round(EXPORT_WIDTH * scale_of(fig))
    fig = with_caption(fig)
    height = fig.layout.height or 500
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The kopts argument is ignored")
        return fig.to_image(format=fmt, width=width, height=height, scale=scale if fmt == "png" else 1)
