"""Plain arrays: one decoder in a .safetensors, .pt, .npy or .npz file; d_in given or stated."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from saecore.errors import LoadError
from saecore.loaders.tensors import feature_major, read_any, safetensors_metadata
from saecore.runs import Run, RunMeta

NAME = "arrays"
SUFFIXES = (".safetensors", ".pt", ".pth", ".npy", ".npz")
DECODER_NAMES = ("W_dec", "w_dec", "decoder", "decoder.weight", "dictionary", "")
# How a d_in passed in by the caller is described, unless the caller says where it came from.
GIVEN_D_IN = "the d_in given"
LABEL = "plain arrays"


def matches(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in SUFFIXES


def sidecar(path: Path) -> Path:
    """`decoder.npy` may carry its facts in `decoder.npy.json` ({"d_in": 768, "seed": 1, ...})."""
    return path.with_name(path.name + ".json")


HINT = (f"one decoder matrix in a {', '.join(SUFFIXES[:-1])} or {SUFFIXES[-1]} file, with d_in given or stated in a "
        f"{sidecar(Path('<file>')).name} sidecar ({{\"d_in\": N}}) or the safetensors header")

def _stated(path: Path) -> tuple[dict, str | None]:
    """What the sidecar and the safetensors header state (the sidecar wins), and which of them stated d_in."""
    side = json.loads(sidecar(path).read_text()) if sidecar(path).is_file() else {}
    header = safetensors_metadata(path) if path.suffix == ".safetensors" else {}
    source = (f"sidecar {sidecar(path).name}" if "d_in" in side
              else f"{path.name} header metadata" if "d_in" in header else None)
    return {**header, **side}, source


def _decoder_tensor(path: Path, tensors: dict[str, torch.Tensor]) -> tuple[str, torch.Tensor]:
    for n in DECODER_NAMES:
        if n in tensors:
            return n or "array", tensors[n]
    two_d = {k: v for k, v in tensors.items() if v.ndim == 2}
    if len(two_d) != 1:
        raise LoadError(path, f"expected exactly one 2-D decoder (or one named W_dec), found {len(two_d)}: "
                              f"{', '.join(sorted(two_d)) or 'none'}")
    return next(iter(two_d.items()))


def load(path: Path, d_in: int | None = None, d_in_source: str = GIVEN_D_IN) -> Run:
    """The run of one decoder file; a given d_in (described by `d_in_source`) overrides a stated one."""
    tensors = read_any(path)
    key, matrix = _decoder_tensor(path, tensors)
    info, stated_source = _stated(path)
    if not d_in and "d_in" in info:
        d_in, d_in_source = int(info["d_in"]), stated_source
    if not d_in:
        raise LoadError(path, f"a plain array {tuple(matrix.shape)} does not say which axis is d_in; "
                              f"give d_in (--d-in, or a {sidecar(path).name} with {{\"d_in\": N}})")
    decoder = feature_major(matrix, d_in, path, key, "features_first")
    seed = info.get("seed")
    meta = RunMeta(
        name=path.stem, path=str(path), format=NAME, d_in=d_in, d_sae=int(decoder.shape[0]), d_in_source=d_in_source,
        architecture=str(info.get("architecture", "unknown")),
        k=int(info["k"]) if info.get("k") is not None else None,
        seed=int(seed) if seed is not None else None,
        model=info.get("model"), hook=info.get("hook"),
    )
    return Run(meta, decoder)


def meta(path: Path, d_in: int | None = None, d_in_source: str = GIVEN_D_IN) -> RunMeta:
    return load(path, d_in, d_in_source).meta
