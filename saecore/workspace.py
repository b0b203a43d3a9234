"""Scanning a folder for runs and grouping them into families (same config, different seeds)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from saecore.errors import SaecoreError
from saecore.loaders import FORMATS, arrays, dictionary_learning, load_meta
from saecore.runs import FAMILY_FIELDS, RunMeta

SKIP_DIRS = {"__pycache__", "node_modules", "explanations", "features"}
STORE_MANIFEST = "manifest.json"  # written by saecore.activations beside its acts_*.npy shards


@dataclass(frozen=True)
class ScanError:
    """A path that looked like a run but could not be read."""

    path: str
    reason: str


@dataclass(frozen=True)
class StoredActivations:
    """A folder of stored residual activations inside a workspace: the tokens behaviour is measured on."""

    path: str
    model: str | None
    hook: str | None
    n_tokens: int
    d_model: int

    def serves(self, run: RunMeta) -> bool:
        """True when these activations are the run's input: same width, and same model and hook where both say."""
        same = lambda x, y: x is None or y is None or x == y  # noqa: E731
        return self.d_model == run.d_in and same(self.model, run.model) and same(self.hook, run.hook)


def _stored_activations(folder: Path) -> StoredActivations | None:
    """The activation store in `folder`, or None when it is not a finished one."""
    if not (folder / STORE_MANIFEST).is_file() or not any(folder.glob("acts_*.npy")):
        return None
    try:
        manifest = json.loads((folder / STORE_MANIFEST).read_text())
        if not manifest.get("complete"):
            return None
        n_tokens = int(manifest.get("total_tokens") or sum(s["n_tokens"] for s in manifest["shards"].values()))
        return StoredActivations(str(folder), manifest.get("model_name"), manifest.get("hook_name"), n_tokens,
                                 int(manifest["d_model"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass
class Workspace:
    """Every run found under a root, their families and the paths that failed."""

    root: str
    runs: list[RunMeta] = field(default_factory=list)
    errors: list[ScanError] = field(default_factory=list)
    family_fields: tuple[str, ...] = FAMILY_FIELDS
    activations: list[StoredActivations] = field(default_factory=list)

    def family_of(self, run: RunMeta) -> str:
        return run.family_key(self.family_fields)

    @property
    def families(self) -> dict[str, list[RunMeta]]:
        """Family key -> its runs, ordered by seed then name."""
        out: dict[str, list[RunMeta]] = {}
        for r in self.runs:
            out.setdefault(self.family_of(r), []).append(r)
        for runs in out.values():
            runs.sort(key=lambda r: (r.seed is None, r.seed if r.seed is not None else 0, r.name))
        return dict(sorted(out.items()))

    def activations_for(self, *runs: RunMeta) -> StoredActivations | None:
        """The stored activations that every given run reads (the largest such store), or None."""
        fits = [a for a in self.activations if all(a.serves(r) for r in runs)]
        return max(fits, key=lambda a: a.n_tokens, default=None)

    def run(self, name: str) -> RunMeta:
        for r in self.runs:
            if r.name == name:
                return r
        raise KeyError(f"no run named {name!r} in {self.root}")


def _candidates(root: Path, stores: list[StoredActivations] | None = None) -> list[Path]:
    """Paths under root that some format claims, without descending into claimed run folders.

    Folders of stored activations are not runs: they are appended to `stores` instead.
    """
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS)
        if (here / STORE_MANIFEST).is_file() and any(here.glob("acts_*.npy")):
            store = _stored_activations(here)
            if store is not None and stores is not None:
                stores.append(store)
            dirnames[:] = []
            continue
        folder_fmt = next((n for n, m in FORMATS.items() if n != arrays.NAME and m.matches(here)), None)
        if folder_fmt:
            found.append(here)
            if folder_fmt == dictionary_learning.NAME:
                found.extend(dictionary_learning.checkpoints(here))
            # SAELens keeps checkpoints/<n_tokens>/ inside the run: keep walking only there.
            dirnames[:] = [d for d in dirnames if d == "checkpoints"]
            continue
        if here.name == "checkpoints" and here.parent in found:
            continue
        for f in sorted(filenames):
            p = here / f
            if arrays.matches(p) and not f.startswith("."):
                found.append(p)
    return found


def _relative_name(meta: RunMeta, root: Path) -> str:
    try:
        rel = Path(meta.path).relative_to(root).as_posix()
    except ValueError:
        return meta.name
    if meta.step is not None and meta.format == dictionary_learning.NAME:
        return f"{Path(rel).parent.parent.as_posix()}@{meta.step}"
    return rel if rel != "." else meta.name


def scan(root: str | Path, family_fields: tuple[str, ...] = FAMILY_FIELDS, d_in: int | None = None, *,
         d_in_source: str = arrays.GIVEN_D_IN) -> Workspace:
    """Find every run below `root`; unreadable ones become ScanErrors instead of stopping the scan.

    `d_in` (described by `d_in_source`) is used for plain arrays that do not state theirs.
    """
    root = Path(root)
    if not root.is_dir():
        raise SaecoreError(f"{root}: not a folder")
    ws = Workspace(root=str(root), family_fields=family_fields)
    for path in _candidates(root, ws.activations):
        try:
            meta = load_meta(path, d_in=d_in, d_in_source=d_in_source)
        except (SaecoreError, OSError) as exc:
            reason = getattr(exc, "problem", str(exc))
            ws.errors.append(ScanError(str(path), reason))
            continue
        ws.runs.append(replace(meta, name=_relative_name(meta, root)))
    return ws
