"""Auto-detecting loaders for every supported on-disk format, as a registry keyed by format name."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from saecore.errors import LoadError
from saecore.loaders import arrays, dictionary_learning, gemmascope, saelens, sparsify
from saecore.runs import Run, RunMeta

# Folder formats in detection order; plain arrays come last (any single tensor file matches).
FORMATS: dict[str, ModuleType] = {
    m.NAME: m for m in (saelens, sparsify, dictionary_learning, gemmascope, arrays)
}


def detect(path: str | Path) -> str:
    """The name of the format that can read `path`, or a LoadError saying why none can."""
    path = Path(path)
    if not path.exists():
        raise LoadError(path, "no such file or folder")
    for name, module in FORMATS.items():
        if module.matches(path):
            return name
    if path.is_dir():
        listing = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "empty folder"
        raise LoadError(path, f"no SAE run found here (unknown format; contents: {listing})")
    raise LoadError(path, f"unknown format for file {path.name!r}")


def load_run(path: str | Path, d_in: int | None = None, name: str | None = None, with_encoder: bool = True) -> Run:
    """Load one run from any supported format; `d_in` is needed only for plain arrays.

    with_encoder=False skips orienting and checking the encoder, which matching never reads.
    """
    path = Path(path)
    fmt = detect(path)
    run = arrays.load(path, d_in) if fmt == arrays.NAME else FORMATS[fmt].load(path, with_encoder)
    if d_in is not None and fmt != arrays.NAME and run.d_in != d_in:
        raise LoadError(path, f"d_in is {run.d_in}, but {d_in} was asked for")
    return run.renamed(name) if name else run


def load_meta(path: str | Path, d_in: int | None = None) -> RunMeta:
    """Metadata only (cheap for formats whose config states the shapes)."""
    path = Path(path)
    fmt = detect(path)
    return arrays.meta(path, d_in) if fmt == arrays.NAME else FORMATS[fmt].meta(path)


__all__ = ["FORMATS", "detect", "load_run", "load_meta"]
