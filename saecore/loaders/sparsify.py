"""EleutherAI sparsify folders: cfg.json + sae.safetensors, optionally under seed<N>/."""

from __future__ import annotations

import re
from pathlib import Path

from saecore.errors import LoadError
from saecore.loaders.tensors import as_int, feature_major, pick, read_json, read_safetensors
from saecore.runs import Run, RunMeta

NAME = "sparsify"
CONFIG = "cfg.json"
WEIGHTS = "sae.safetensors"
RUN_CONFIG = "config.json"
SEED_DIR = re.compile(r"^seed[_-]?(\d+)$")
LABEL = "sparsify"
HINT = f"a folder with {WEIGHTS} and {CONFIG}, often <hookpoint>/seed<N>/ under a run folder with {RUN_CONFIG}"


def matches(path: Path) -> bool:
    return path.is_dir() and (path / WEIGHTS).exists()


def _seed_and_hook(path: Path) -> tuple[int | None, str, Path]:
    """seed<N>/ folders sit under the hookpoint folder; the run folder is above the hookpoint."""
    m = SEED_DIR.match(path.name)
    if m:
        return int(m.group(1)), path.parent.name, path.parent.parent
    return None, path.name, path.parent


def meta(path: Path) -> RunMeta:
    cfg_path = path / CONFIG
    cfg = read_json(cfg_path)
    if "d_in" not in cfg:
        raise LoadError(cfg_path, "config has no 'd_in'")
    d_in = as_int(cfg["d_in"], cfg_path, "d_in")
    d_sae = cfg.get("num_latents") or 0
    if not d_sae:
        if not cfg.get("expansion_factor"):
            raise LoadError(cfg_path, "config has neither 'num_latents' nor 'expansion_factor'")
        d_sae = d_in * int(cfg["expansion_factor"])
    seed, hook, run_dir = _seed_and_hook(path)
    run_cfg = read_json(run_dir / RUN_CONFIG) if (run_dir / RUN_CONFIG).is_file() else {}
    if seed is None:
        seeds = run_cfg.get("init_seeds") or ([run_cfg["seed"]] if "seed" in run_cfg else [])
        seed = int(seeds[0]) if len(seeds) == 1 else None
    arch = str(cfg.get("activation", "topk"))
    if cfg.get("transcode"):
        arch += "-transcoder"
    return RunMeta(
        name=path.name if seed is None else f"{hook}/seed{seed}", path=str(path), format=NAME,
        d_in=d_in, d_sae=as_int(d_sae, cfg_path, "num_latents"), architecture=arch, d_in_source=f"{CONFIG} 'd_in'",
        k=int(cfg["k"]) if cfg.get("k") else None, seed=seed, hook=hook,
        model=run_cfg.get("model"),
    )


def load(path: Path, with_encoder: bool = True) -> Run:
    m = meta(path)
    weights = path / WEIGHTS
    tensors = read_safetensors(weights)
    decoder = feature_major(pick(tensors, weights, "W_dec"), m.d_in, weights, "W_dec", "features_first", m.d_sae)
    enc = pick(tensors, weights, "encoder.weight", required=False) if with_encoder else None
    encoder = None if enc is None else feature_major(enc, m.d_in, weights, "encoder.weight", "features_first", m.d_sae)
    return Run(m, decoder, encoder)
