"""A real Streamlit server on 127.0.0.1 and headless Chromium driving it (shared by the browser tests)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# Every string the page draws on a canvas (the data grids draw their cells there, not in the DOM).
RECORD_CANVAS_TEXT = """
(() => {
  window.__drawnText = [];
  const fill = CanvasRenderingContext2D.prototype.fillText;
  CanvasRenderingContext2D.prototype.fillText = function (text, ...rest) {
    window.__drawnText.push(String(text));
    return fill.call(this, text, ...rest);
  };
})();
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(env: dict[str, str]) -> Iterator[str]:
    """Run app.py on a free local port until the block ends; yields its base URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"], cwd=ROOT, env={**os.environ, **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=1)
            break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError("streamlit server did not start: " + proc.stdout.read().decode(errors="replace")[-2000:])
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def workspace_server(roots: Path, cache: Path) -> Iterator[str]:
    """The dashboard allowed to open folders under `roots`, with its own cache folder."""
    with streamlit_server({"SAECORE_WORKSPACE_ROOTS": str(roots), "SAECORE_CACHE_DIR": str(cache)}) as url:
        yield url


def settle(pg, charts: bool = False, timeout: float = 90_000) -> None:
    """Wait until the script finished (and, optionally, a plotly chart is drawn)."""
    pg.wait_for_timeout(300)
    pg.wait_for_selector('.stApp[data-test-script-state="notRunning"]', timeout=timeout)
    if charts:
        pg.wait_for_selector(".js-plotly-plot .main-svg", timeout=timeout)
    pg.wait_for_timeout(500)


def open_page(pg, server: str, path: str, params: dict, charts: bool = False) -> None:
    pg.goto(f"{server}/{path}?{urllib.parse.urlencode(params, doseq=True)}")
    settle(pg, charts)


def query(pg) -> dict[str, list[str]]:
    """The page's current query parameters."""
    return urllib.parse.parse_qs(urllib.parse.urlparse(pg.url).query)


def shot(pg, name: str, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)
