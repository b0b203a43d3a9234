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


def load_run(path: str | Path, d_in: int | None = None, name: str | None = None, with_encoder: bool = True, *,
             d_in_source: str = arrays.GIVEN_D_IN) -> Run:
    """Load one run from any supported format; `d_in` is needed only for plain arrays.

    with_encoder=False skips orienting and checking the encoder, which matching never reads.
    `d_in_source` says where a given d_in came from (e.g. "--d-in"), for messages that name it.
    """
    path = Path(path)
    fmt = detect(path)
    run = arrays.load(path, d_in, d_in_source) if fmt == arrays.NAME else FORMATS[fmt].load(path, with_encoder)
    if d_in is not None and fmt != arrays.NAME and run.d_in != d_in:
        raise LoadError(path, f"d_in is {run.d_in} (from {run.meta.d_in_source}), but {d_in} was asked for "
                              f"({d_in_source})")
    return run.renamed(name) if name else run


def load_meta(path: str | Path, d_in: int | None = None, *, d_in_source: str = arrays.GIVEN_D_IN) -> RunMeta:
    """Metadata only (cheap for formats whose config states the shapes)."""
    path = Path(path)
    fmt = detect(path)
    return arrays.meta(path, d_in, d_in_source) if fmt == arrays.NAME else FORMATS[fmt].meta(path)


def format_hints() -> list[tuple[str, str]]:
    """(format name, the files its loader looks for) per supported format, in detection order, for "no runs" help."""
    return [(module.LABEL, module.HINT) for module in FORMATS.values()]


def no_runs_message(folder: str | Path) -> str:
    """What to tell someone whose folder holds no run: where we looked and what each loader looks for."""
    lines = [f"No SAE runs found in {folder}. The loaders look for:"]
    lines += [f"  {label}: {hint}" for label, hint in format_hints()]
    return "\n".join(lines)


__all__ = ["FORMATS", "detect", "format_hints", "load_run", "load_meta", "no_runs_message"]
