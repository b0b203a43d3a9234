"""Which folders the dashboard may open: only those inside configured workspace roots (no `..` or symlink escapes)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from saecore.errors import SaecoreError

DEFAULT_ROOT = "data"


class AccessError(SaecoreError, PermissionError):
    """A requested path lies outside every allowed workspace root (or does not exist)."""


def parse_roots(argv: Sequence[str], base: str | Path) -> list[Path]:
    """Workspace roots from launch arguments (`--root PATH`, repeatable) plus the default `data/` under base."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--root", action="append", default=[])
    known, _ = parser.parse_known_args(list(argv))
    base = Path(base)
    roots = [base / DEFAULT_ROOT] + [Path(r) if Path(r).is_absolute() else base / r for r in known.root]
    out: list[Path] = []
    for r in roots:
        resolved = r.resolve()
        if resolved not in out:
            out.append(resolved)
    return out


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def resolve_inside(requested: str | Path, roots: Sequence[Path], base: str | Path) -> Path:
    """The real path (file or folder) for a requested path, or AccessError if it escapes every root or is missing.

    Relative paths are taken from `base` (the app folder). Symlinks are followed before the
    check, so a link pointing out of a root is refused like a `..` escape.
    """
    text = str(requested).strip()
    if not text:
        raise AccessError("no path given")
    if "\x00" in text:
        raise AccessError(f"{text!r}: invalid path")
    path = Path(os.path.expanduser(text))
    if not path.is_absolute():
        path = Path(base) / path
    real = path.resolve()
    allowed = [Path(r).resolve() for r in roots]
    if not any(_inside(real, r) for r in allowed):
        listing = ", ".join(str(r) for r in allowed) or "none configured"
        raise AccessError(f"{text}: outside the allowed workspace roots ({listing})")
    if not real.exists():
        raise AccessError(f"{text}: no such file or folder")
    return real


def resolve_workspace(requested: str | Path, roots: Sequence[Path], base: str | Path) -> Path:
    """The real workspace folder for a requested path (see resolve_inside); files are refused."""
    if not str(requested).strip():
        raise AccessError("no workspace path given")
    real = resolve_inside(requested, roots, base)
    if not real.is_dir():
        raise AccessError(f"{requested}: not a folder")
    return real


def check_inside(path: str | Path, root: str | Path) -> Path:
    """Refuse a run path (or any file directly in it) that resolves outside the workspace root."""
    root_real = Path(root).resolve()
    p = Path(path)
    targets = [p] + (sorted(p.iterdir()) if p.is_dir() else [])
    for t in targets:
        if not _inside(t.resolve(), root_real):
            raise AccessError(f"{t}: points outside the workspace {root_real}")
    return p.resolve()


def display_path(path: str | Path, base: str | Path) -> str:
    """A path as shown in the field: relative to base when inside it, else absolute."""
    real, b = Path(path).resolve(), Path(base).resolve()
    return real.relative_to(b).as_posix() if _inside(real, b) else str(real)
