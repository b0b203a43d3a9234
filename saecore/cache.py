"""Content-addressed on-disk cache of results, written atomically (temp file + rename)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

CACHE_ENV = "SAECORE_CACHE_DIR"
# Bump when the meaning of a cached result changes, so stale entries are never reused.
CACHE_VERSION = "1"
_UMASK = os.umask(0)
os.umask(_UMASK)


def default_cache_dir() -> Path:
    """$SAECORE_CACHE_DIR, else ~/.cache/saecore."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "saecore")


def content_key(*parts: object) -> str:
    """A stable hash of JSON-serialisable parts (fingerprints, options, versions)."""
    blob = json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str).encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Write to a temp file in the same folder, then rename over `path`: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give results the usual permissions
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    return _atomic(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> Path:
    return _atomic(path, lambda p: p.write_text(text))


def atomic_write_json(path: Path, obj: object) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str))


def atomic_write_parquet(path: Path, df: "pd.DataFrame", meta: dict | None = None) -> Path:
    """A Parquet file with optional JSON metadata stored in its schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    if meta is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"saecore": json.dumps(meta).encode()})
    return _atomic(path, lambda p: pq.write_table(table, p))


def read_parquet(path: Path) -> tuple["pd.DataFrame", dict]:
    """A Parquet file written by atomic_write_parquet and its metadata."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(b"saecore")
    return table.to_pandas(), (json.loads(raw) if raw else {})


_NPZ_META = "__meta__"


def atomic_write_npz(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Numpy arrays and JSON metadata in one uncompressed .npz (read back without pandas or pickle)."""
    def write(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, **arrays, **{_NPZ_META: np.array(json.dumps(meta))})

    return _atomic(path, write)


def read_npz(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and metadata written by atomic_write_npz; ValueError when the file is not one."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from exc
    if _NPZ_META not in arrays:
        raise ValueError(f"{path}: no metadata entry")
    return arrays, json.loads(str(arrays.pop(_NPZ_META)))
