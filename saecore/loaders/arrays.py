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


def matches(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in SUFFIXES


def sidecar(path: Path) -> Path:
    """`decoder.npy` may carry its facts in `decoder.npy.json` ({"d_in": 768, "seed": 1, ...})."""
    return path.with_name(path.name + ".json")


def _stated(path: Path) -> dict:
    info: dict = {}
    if sidecar(path).is_file():
        info.update(json.loads(sidecar(path).read_text()))
    if path.suffix == ".safetensors":
        for k, v in safetensors_metadata(path).items():
            info.setdefault(k, v)
    return info


def _decoder_tensor(path: Path, tensors: dict[str, torch.Tensor]) -> tuple[str, torch.Tensor]:
    for n in DECODER_NAMES:
        if n in tensors:
            return n or "array", tensors[n]
    two_d = {k: v for k, v in tensors.items() if v.ndim == 2}
    if len(two_d) != 1:
        raise LoadError(path, f"expected exactly one 2-D decoder (or one named W_dec), found {len(two_d)}: "
                              f"{', '.join(sorted(two_d)) or 'none'}")
    return next(iter(two_d.items()))


def load(path: Path, d_in: int | None = None) -> Run:
    tensors = read_any(path)
    key, matrix = _decoder_tensor(path, tensors)
    info = _stated(path)
    d_in = d_in or (int(info["d_in"]) if "d_in" in info else None)
    if d_in is None:
        raise LoadError(path, f"a plain array {tuple(matrix.shape)} does not say which axis is d_in; "
                              f"give d_in (--d-in, or a {sidecar(path).name} with {{\"d_in\": N}})")
    decoder = feature_major(matrix, d_in, path, key, "features_first")
    seed = info.get("seed")
    meta = RunMeta(
        name=path.stem, path=str(path), format=NAME, d_in=d_in, d_sae=int(decoder.shape[0]),
        architecture=str(info.get("architecture", "unknown")),
        k=int(info["k"]) if info.get("k") is not None else None,
        seed=int(seed) if seed is not None else None,
        model=info.get("model"), hook=info.get("hook"),
    )
    return Run(meta, decoder)


def meta(path: Path, d_in: int | None = None) -> RunMeta:
    return load(path, d_in).meta
