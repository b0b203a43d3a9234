"""Screenshots of every dashboard page on the shipped demo, normal and presentation mode (docs/screenshots/).

Usage: `make screenshots` (or `.venv/bin/python docs/screenshots.py [--sizes 1400x1000,1920x1080] [--out DIR]`).
The images are quantised to 256 colours so they stay small enough to keep in the repository.
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "app"))

from browser import CHROMIUM, CHROMIUM_ARGS, settle, streamlit_server  # noqa: E402

# (file stem, page path, extra query parameters): each page as a presenter would open it on the demo.
PAGES = [
    ("home", "", {}),
    ("consistency", "consistency", {"family": "saelens/topk/k=32/576x1536/smollm2-135m-instruct/"
                                              "blocks.10.hook_resid_post/final"}),
    ("pairs", "pairs", {"family": "saelens/topk/k=32/576x1536/smollm2-135m-instruct/blocks.10.hook_resid_post/final"}),
    ("semantics", "semantics", {}),
    ("orphans", "orphans", {"family": "saelens/topk/k=32/576x1536/smollm2-135m-instruct/blocks.10.hook_resid_post/final"}),
    ("partners", "pairs", {"runs": ["topk_k32/seed0", "standard_l1_0.1/seed0"], "view": "partners"}),
    ("explanations", "explanations", {}),
    ("synthetic", "synthetic", {}),
]


def capture(out: Path, sizes: list[tuple[int, int]], full_page: bool = False, only: set[str] | None = None) -> list[Path]:
    """One PNG per page, size and mode; returns the files written."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written = []
    with streamlit_server({"HF_HUB_OFFLINE": "1"}) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for width, height in sizes:
            pg = browser.new_page(viewport={"width": width, "height": height})
            for present in (False, True):
                for stem, path, extra in PAGES:
                    if only and stem not in only:
                        continue
                    params = {"ws": "data/demo", **extra, **({"present": "1"} if present else {})}
                    pg.goto(f"{url}/{path}?{urllib.parse.urlencode(params, doseq=True)}")
                    settle(pg, timeout=300_000)
                    pg.wait_for_timeout(1500)  # charts finish their first layout
                    file = out / f"{stem}-{'present' if present else 'normal'}-{width}x{height}.png"
                    pg.screenshot(path=str(file), full_page=full_page)
                    Image.open(file).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(file, optimize=True)
                    written.append(file)
                    print(f"{file}  {file.stat().st_size / 1024:.0f} KB", flush=True)
            pg.close()
        browser.close()
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1400x1000", help="comma-separated WIDTHxHEIGHT list")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--full-page", action="store_true", help="the whole page, not only the first screen")
    parser.add_argument("--pages", default="", help="comma-separated page names (default: all)")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    capture(args.out, sizes, args.full_page, {p for p in args.pages.split(",") if p} or None)


if __name__ == "__main__":
    main()
