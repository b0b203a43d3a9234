"""SAELens folders: cfg.json + sae_weights.safetensors (+ sparsity.safetensors, runner_cfg.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from saecore.errors import LoadError
from saecore.loaders.tensors import as_int, feature_major, pick, read_json, read_safetensors
from saecore.runs import Run, RunMeta

NAME = "saelens"
CONFIG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"
SPARSITY = "sparsity.safetensors"
RUNNER_CONFIG = "runner_cfg.json"
EXTRA_META = "saecore_meta.json"
LABEL = "SAELens"
HINT = (f"a folder with {WEIGHTS} and {CONFIG} (optionally {SPARSITY}, {RUNNER_CONFIG}); "
        "checkpoints/<tokens>/ folders inside it are runs too")


def matches(path: Path) -> bool:
    return path.is_dir() and (path / WEIGHTS).exists()


def _architecture(cfg: dict) -> str:
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    trained = meta.get("training_architecture") or cfg.get("training_architecture")
    if trained:
        return str(trained)
    if cfg.get("architecture"):
        return str(cfg["architecture"])
    act = str(cfg.get("activation_fn_str") or cfg.get("activation_fn") or "relu").lower()
    return "topk" if act == "topk" else "standard" if act == "relu" else act


def _checkpoint_step(path: Path) -> int | None:
    """Checkpoint folders are checkpoints/<n_tokens>/ under the run."""
    if path.parent.name == "checkpoints" and path.name.isdigit():
        return int(path.name)
    return None


def meta(path: Path) -> RunMeta:
    cfg_path = path / CONFIG
    cfg = read_json(cfg_path)
    nested = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    for key in ("d_in", "d_sae"):
        if key not in cfg:
            raise LoadError(cfg_path, f"config has no {key!r}")
    d_in_key = "d_out" if "d_out" in cfg else "d_in"
    d_in = as_int(cfg[d_in_key], cfg_path, d_in_key)
    d_sae = as_int(cfg["d_sae"], cfg_path, "d_sae")
    runner = read_json(path / RUNNER_CONFIG) if (path / RUNNER_CONFIG).is_file() else {}
    extra = read_json(path / EXTRA_META) if (path / EXTRA_META).is_file() else {}
    kwargs = cfg.get("activation_fn_kwargs") or {}
    k = cfg.get("k", kwargs.get("k"))
    seed = runner.get("seed", extra.get("seed", cfg.get("seed")))
    step = _checkpoint_step(path)
    if step is None and extra.get("checkpoint"):
        step = extra.get("tokens_seen")
    return RunMeta(
        name=path.name, path=str(path), format=NAME, d_in=d_in, d_sae=d_sae, d_in_source=f"{CONFIG} {d_in_key!r}",
        architecture=_architecture(cfg),
        k=int(k) if k is not None else None,
        l1_coefficient=runner.get("l1_coefficient", extra.get("l1_coefficient")),
        target_l0=extra.get("target_l0"),
        l0_coefficient=runner.get("l0_coefficient", extra.get("l0_coefficient")),
        seed=int(seed) if seed is not None else None,
        step=int(step) if step is not None else None,
        model=nested.get("model_name") or cfg.get("model_name"),
        hook=nested.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point"),
        extra={"sae_lens_version": nested.get("sae_lens_version") or cfg.get("sae_lens_version") or "legacy",
               **{k: v for k, v in extra.items() if isinstance(v, (int, float, str))}},
    )


def load(path: Path, with_encoder: bool = True) -> Run:
    m = meta(path)
    weights = path / WEIGHTS
    tensors = read_safetensors(weights)
    decoder = feature_major(pick(tensors, weights, "W_dec"), m.d_in, weights, "W_dec", "features_first", m.d_sae)
    w_enc = pick(tensors, weights, "W_enc", required=False)
    encoder = None
    if with_encoder and w_enc is not None and "d_out" not in json.loads((path / CONFIG).read_text()):
        encoder = feature_major(w_enc, m.d_in, weights, "W_enc", "inputs_first", m.d_sae)
    return Run(m, decoder, encoder, read_frequencies(path / SPARSITY, m.d_sae))


def read_frequencies(path: Path, d_sae: int) -> np.ndarray | None:
    """sparsity.safetensors stores log10(firing fraction + 1e-10); return the fraction."""
    if not path.is_file():
        return None
    log_freq = pick(read_safetensors(path), path, "sparsity", "log_feature_sparsity")
    if log_freq.shape != (d_sae,):
        raise LoadError(path, f"sparsity has shape {tuple(log_freq.shape)}, expected ({d_sae},)")
    freq = np.power(10.0, log_freq.to(torch.float64).numpy()) - 1e-10
    return np.clip(freq, 0.0, 1.0)
