"""Reading tensor files safely and turning stored matrices into checked, feature-major float32."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from saecore.errors import LoadError
from saecore.text import plural


def load_json(path: Path) -> object:
    """Parse any JSON file, naming the file when it is missing or not valid JSON."""
    if not path.is_file():
        raise LoadError(path, "file is missing")
    try:
        return json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LoadError(path, f"not valid JSON ({exc})") from None


def read_json(path: Path) -> dict:
    """Parse a JSON config (an object), naming the file on any failure."""
    data = load_json(path)
    if not isinstance(data, dict):
        raise LoadError(path, f"expected a JSON object, got {type(data).__name__}")
    return data


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors file (bf16/fp16 kept; cast later)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise LoadError(path, "file is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise LoadError(path, f"corrupt or truncated safetensors file ({exc})") from exc


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The free-form string metadata stored in a .safetensors header."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise LoadError(path, f"corrupt or truncated safetensors file ({exc})") from exc


def read_torch(path: Path) -> dict[str, torch.Tensor]:
    """A torch file of tensors only: arbitrary pickled objects are refused, never executed."""
    if not path.is_file():
        raise LoadError(path, "file is missing")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise LoadError(path, "holds pickled Python objects, not only tensors; refusing to unpickle it "
                              "(save a plain state dict of tensors)") from exc
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise LoadError(path, f"corrupt or truncated torch file ({exc})") from exc
    if isinstance(obj, torch.Tensor):
        return {"": obj}
    if not isinstance(obj, dict):
        raise LoadError(path, f"expected a state dict of tensors, got {type(obj).__name__}")
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def read_numpy(path: Path) -> dict[str, torch.Tensor]:
    """Arrays of a .npy or .npz file, without allowing pickled object arrays."""
    if not path.is_file():
        raise LoadError(path, "file is missing")
    try:
        loaded = np.load(str(path), allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            arrays = {"": loaded}
        else:
            with loaded:
                arrays = {k: loaded[k] for k in loaded.files}
    except ValueError as exc:
        raise LoadError(path, f"unreadable numpy file ({exc})") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise LoadError(path, f"corrupt or truncated numpy file ({exc})") from exc
    out = {}
    for k, a in arrays.items():
        if a.dtype.kind not in "fiu":
            raise LoadError(path, f"array {k!r} has dtype {a.dtype}, expected numbers")
        out[k] = torch.from_numpy(np.ascontiguousarray(a))
    return out


def read_any(path: Path) -> dict[str, torch.Tensor]:
    """Dispatch on the file ending."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return read_safetensors(path)
    if suffix in (".pt", ".pth", ".bin"):
        return read_torch(path)
    if suffix in (".npy", ".npz"):
        return read_numpy(path)
    raise LoadError(path, f"unsupported file type {suffix!r} (expected .safetensors, .pt, .npy or .npz)")


def pick(tensors: dict[str, torch.Tensor], path: Path, *names: str, required: bool = True) -> torch.Tensor | None:
    """The first tensor present under any of `names` (case-insensitive)."""
    lower = {k.lower(): k for k in tensors}
    for n in names:
        if n.lower() in lower:
            return tensors[lower[n.lower()]]
    if required:
        raise LoadError(path, f"no tensor named {' or '.join(names)} (found: {', '.join(sorted(tensors)) or 'none'})")
    return None


def feature_major(matrix: torch.Tensor, d_in: int, path: Path, what: str, stored_as: str = "features_first",
                  d_sae: int | None = None) -> torch.Tensor:
    """Orient a stored matrix to (d_sae, d_in) float32 by the axis whose length is d_in; check values.

    `stored_as` is the layout the format documents ('features_first' or 'inputs_first'); it only
    decides the square case, where the shape alone cannot.
    """
    if matrix.ndim != 2:
        raise LoadError(path, f"{what} should be 2-D, got shape {tuple(matrix.shape)}")
    rows, cols = matrix.shape
    if rows == d_in and cols == d_in:
        out = matrix if stored_as == "features_first" else matrix.T
    elif cols == d_in:
        out = matrix
    elif rows == d_in:
        out = matrix.T
    else:
        raise LoadError(path, f"{what} has shape {tuple(matrix.shape)}, but neither axis equals d_in={d_in} from the config")
    if d_sae is not None and out.shape[0] != d_sae:
        raise LoadError(path, f"{what} has {plural(out.shape[0], 'feature')} after orienting by d_in={d_in}, "
                              f"but the config says d_sae={d_sae}")
    out = out.to(torch.float32).contiguous()
    bad = ~torch.isfinite(out).all(dim=1)
    if bool(bad.any()):
        idx = torch.nonzero(bad).flatten()[:5].tolist()
        raise LoadError(path, f"{what} contains NaN or Inf in {plural(int(bad.sum()), 'row')} (first: {idx})")
    return out


def as_int(value, path: Path, key: str) -> int:
    """A config value that must be a positive integer."""
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise LoadError(path, f"config key {key!r} should be an integer, got {value!r}") from None
    if out <= 0 or out != value and not isinstance(value, str):
        raise LoadError(path, f"config key {key!r} should be a positive integer, got {value!r}")
    return out
