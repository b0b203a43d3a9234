"""Gemma Scope: params.npz (v1) or params.safetensors (+ optional config.json) under named folders."""

from __future__ import annotations

import re
from pathlib import Path

from saecore.errors import LoadError
from saecore.loaders.tensors import feature_major, pick, read_any, read_json
from saecore.runs import Run, RunMeta
from saecore.text import plural

NAME = "gemmascope"
FILES = ("params.npz", "params.safetensors")
CONFIG = "config.json"
LABEL = "Gemma Scope"
HINT = (f"a folder with {' or '.join(FILES)} (optionally {CONFIG}), "
        "named like layer_12/width_16k/average_l0_82")
WIDTH = re.compile(r"^width_(\d+)([km]?)$")
LAYER = re.compile(r"^layer_(\d+)$")
L0 = re.compile(r"^average_l0_(\d+)")
SEED = re.compile(r"_seed_(\d+)$")


def matches(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in FILES)


def _weights_file(path: Path) -> Path:
    for f in FILES:
        if (path / f).exists():
            return path / f
    raise LoadError(path, f"no {' or '.join(FILES)}")


def _from_folders(path: Path) -> dict:
    """Width, layer, L0 and seed are spelled in folder names like layer_12/width_16k/average_l0_82."""
    info: dict = {}
    for part in path.parts:
        if m := WIDTH.match(part):
            info["width"] = int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2)]
        elif m := LAYER.match(part):
            info["layer"] = int(m.group(1))
        elif m := L0.match(part):
            info["l0"] = int(m.group(1))
        if m := SEED.search(part):
            info["seed"] = int(m.group(1))
    return info


def _config_d_in(cfg: dict, cfg_name: str) -> tuple[int, str] | None:
    """d_in as an optional config.json states it, with where it was read; None when it states none."""
    for key in ("d_in", "d_model"):
        if key in cfg:
            return int(cfg[key]), f"{cfg_name} {key!r}"
    return None


def _shapes(path: Path) -> tuple[dict, int, int, str]:
    """The tensors, d_in, d_sae and where d_in was read (the config when there is one, else W_enc's shape)."""
    weights = _weights_file(path)
    tensors = read_any(weights)
    w_enc = pick(tensors, weights, "W_enc")
    w_dec = pick(tensors, weights, "W_dec")
    if w_enc.ndim != 2 or w_dec.ndim != 2 or tuple(w_enc.shape) != tuple(w_dec.shape[::-1]):
        raise LoadError(weights, f"W_enc {tuple(w_enc.shape)} and W_dec {tuple(w_dec.shape)} are not transposes "
                                 "of each other as Gemma Scope stores them")
    d_in, d_sae = int(w_enc.shape[0]), int(w_enc.shape[1])
    source = f"W_enc shape in {weights.name}"
    cfg_path = path / CONFIG
    if cfg_path.is_file():
        cfg = read_json(cfg_path)
        d_in, source = _config_d_in(cfg, CONFIG) or (d_in, source)
        d_sae = int(cfg.get("d_sae", cfg.get("width", d_sae)))
    return tensors, d_in, d_sae, source


def _meta(path: Path, d_in: int, d_sae: int, d_in_source: str) -> RunMeta:
    info = _from_folders(path)
    if "width" in info and info["width"] != d_sae:
        raise LoadError(_weights_file(path), f"folder says width {info['width']} but the weights have {plural(d_sae, 'feature')}")
    layer = info.get("layer")
    return RunMeta(
        name="/".join(path.parts[-3:]), path=str(path), format=NAME, d_in=d_in, d_sae=d_sae, d_in_source=d_in_source,
        architecture="jumprelu", target_l0=info.get("l0"), seed=info.get("seed"),
        hook=f"layer_{layer}" if layer is not None else None, model="gemma",
    )


def meta(path: Path) -> RunMeta:
    _, d_in, d_sae, source = _shapes(path)
    return _meta(path, d_in, d_sae, source)


def load(path: Path, with_encoder: bool = True) -> Run:
    tensors, d_in, d_sae, source = _shapes(path)
    m = _meta(path, d_in, d_sae, source)
    weights = _weights_file(path)
    decoder = feature_major(pick(tensors, weights, "W_dec"), d_in, weights, "W_dec", "features_first", d_sae)
    encoder = None
    if with_encoder:
        encoder = feature_major(pick(tensors, weights, "W_enc"), d_in, weights, "W_enc", "inputs_first", d_sae)
    return Run(m, decoder, encoder)
