"""Writers that lay out SAE runs exactly as each library stores them, for tests (real files, real layouts)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file


def related_decoders(n_runs: int, d_sae: int, d_in: int, noise: float = 0.2, seed: int = 0) -> list[torch.Tensor]:
    """Decoders that share a base dictionary plus per-run noise and a random row order: like seeds of one SAE."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(d_sae, d_in, generator=gen)
    out = []
    for _ in range(n_runs):
        perm = torch.randperm(d_sae, generator=gen)
        out.append((base + noise * torch.randn(d_sae, d_in, generator=gen))[perm].contiguous())
    return out


def write_saelens(folder: Path, decoder: torch.Tensor, *, architecture: str = "topk", k: int | None = 8, seed: int | None = 0,
                  legacy: bool = False, frequencies: np.ndarray | None = None, hook: str = "blocks.4.hook_resid_post",
                  model: str = "tiny-model", dtype: torch.dtype = torch.float32) -> Path:
    """An SAELens folder: cfg.json (≥6 nested or legacy flat), sae_weights.safetensors, optional sparsity and runner cfg."""
    folder.mkdir(parents=True, exist_ok=True)
    d_sae, d_in = decoder.shape
    if legacy:
        cfg = {"d_in": d_in, "d_sae": d_sae, "hook_point": hook, "model_name": model, "hook_layer": 4,
               "activation_fn_str": "topk" if architecture == "topk" else "relu",
               "activation_fn_kwargs": {"k": k} if architecture == "topk" else {}, "normalize_activations": False}
    else:
        cfg = {"architecture": architecture, "d_in": d_in, "d_sae": d_sae, "dtype": "float32",
               "apply_b_dec_to_input": True, "normalize_activations": "none",
               "metadata": {"model_name": model, "hook_name": hook, "sae_lens_version": "6.5.0"}}
        if k is not None:
            cfg["k"] = k
    (folder / "cfg.json").write_text(json.dumps(cfg))
    gen = torch.Generator().manual_seed(1)
    tensors = {"W_dec": decoder.to(dtype), "W_enc": (decoder.T + 0.01 * torch.randn(d_in, d_sae, generator=gen)).to(dtype),
               "b_dec": torch.zeros(d_in, dtype=dtype), "b_enc": torch.zeros(d_sae, dtype=dtype)}
    save_file({k_: v.contiguous() for k_, v in tensors.items()}, str(folder / "sae_weights.safetensors"))
    if seed is not None:
        (folder / "runner_cfg.json").write_text(json.dumps({"seed": seed, "l1_coefficient": None}))
    if frequencies is not None:
        log = torch.as_tensor(np.log10(frequencies + 1e-10), dtype=torch.float32)
        save_file({"sparsity": log}, str(folder / "sparsity.safetensors"))
    return folder


def write_sparsify(run_dir: Path, hookpoint: str, decoders: dict[int, torch.Tensor], k: int = 8,
                   dtype: torch.dtype = torch.bfloat16) -> list[Path]:
    """A sparsify save dir: <run>/<hookpoint>/seed<N>/{cfg.json, sae.safetensors} and run-level config.json."""
    paths = []
    (run_dir).mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps({"init_seeds": sorted(decoders), "hookpoints": [hookpoint],
                                                      "model": "tiny-model"}))
    for seed, dec in decoders.items():
        folder = run_dir / hookpoint / f"seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        d_sae, d_in = dec.shape
        (folder / "cfg.json").write_text(json.dumps({"activation": "topk", "k": k, "num_latents": d_sae,
                                                     "expansion_factor": 32, "d_in": d_in, "multi_topk": False,
                                                     "skip_connection": False, "transcode": False}))
        save_file({"encoder.weight": dec.to(dtype).contiguous(), "encoder.bias": torch.zeros(d_sae, dtype=dtype),
                   "W_dec": dec.to(dtype).contiguous(), "b_dec": torch.zeros(d_in, dtype=dtype)},
                  str(folder / "sae.safetensors"))
        paths.append(folder)
    return paths


def write_dictionary_learning(folder: Path, decoder: torch.Tensor, *, dict_class: str = "AutoEncoderTopK", seed: int = 0,
                              k: int = 8, checkpoints: dict[int, torch.Tensor] | None = None) -> Path:
    """trainer_<i>/ae.pt + config.json; nn.Linear classes store decoder.weight as (d_in, d_sae)."""
    folder.mkdir(parents=True, exist_ok=True)
    d_sae, d_in = decoder.shape
    trainer = {"dict_class": dict_class, "trainer_class": "TopKTrainer", "activation_dim": d_in, "dict_size": d_sae,
               "seed": seed, "k": k, "lr": 1e-3, "steps": 100, "layer": 3, "lm_name": "tiny-model",
               "submodule_name": "resid_post_layer_3"}
    (folder / "config.json").write_text(json.dumps({"trainer": trainer, "buffer": {"d_submodule": d_in}}))

    def state(dec: torch.Tensor) -> dict:
        if dict_class in ("JumpReluAutoEncoder", "MatryoshkaBatchTopKSAE"):
            return {"W_dec": dec.clone(), "W_enc": dec.T.clone(), "b_dec": torch.zeros(d_in), "threshold": torch.zeros(d_sae)}
        return {"decoder.weight": dec.T.clone(), "encoder.weight": dec.clone(), "encoder.bias": torch.zeros(d_sae),
                "b_dec": torch.zeros(d_in), "k": torch.tensor(k)}

    torch.save(state(decoder), folder / "ae.pt")
    if checkpoints:
        (folder / "checkpoints").mkdir(exist_ok=True)
        for step, dec in checkpoints.items():
            torch.save(state(dec), folder / "checkpoints" / f"ae_{step}.pt")
    return folder


def write_gemmascope(folder: Path, decoder: torch.Tensor, *, v2: bool = False) -> Path:
    """Gemma Scope params.npz (v1) or params.safetensors (v2, lower-case keys)."""
    folder.mkdir(parents=True, exist_ok=True)
    d_sae, d_in = decoder.shape
    arrays = {"W_enc": decoder.T.numpy().copy(), "W_dec": decoder.numpy(), "b_enc": np.zeros(d_sae, np.float32),
              "b_dec": np.zeros(d_in, np.float32), "threshold": np.full(d_sae, 0.1, np.float32)}
    if v2:
        save_file({k.lower(): torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()},
                  str(folder / "params.safetensors"))
    else:
        np.savez(folder / "params.npz", **arrays)
    return folder


def make_workspace(root: Path, d_in: int = 32, d_sae: int = 128, seeds: int = 3) -> Path:
    """A small workspace: two SAELens families (topk k=8 and standard) × `seeds` seeds, with sparsity files."""
    root = Path(root)
    rng = np.random.default_rng(0)
    families = {"topk_k8": ("topk", 8, 0.15, 1), "relu_l1": ("standard", None, 0.6, 2)}
    for family, (arch, k, noise, base_seed) in families.items():
        for s, dec in enumerate(related_decoders(seeds, d_sae, d_in, noise=noise, seed=base_seed)):
            freq = 10 ** rng.uniform(-5, -1, size=d_sae)
            write_saelens(root / family / f"seed{s}", dec, architecture=arch, k=k, seed=s, frequencies=freq)
    return root


def write_store(folder: Path, n: int = 1200, d: int = 8, model: str = "tiny-model", hook: str = "blocks.4.hook_resid_post",
                shards: int = 3, seed: int = 0):
    """A finished activations folder on disk (float16 shards, as extraction leaves it), opened as users open it."""
    from saecore.activations import MANIFEST, VOCAB_FILE, open_activations, shard_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(seed)
    acts = (g.standard_normal((n, d)) + 0.3).astype(np.float16)
    columns = {"acts": acts, "tokens": g.integers(0, 50, n).astype(np.int32),
               "docs": (np.arange(n) // 37).astype(np.int32), "offsets": (np.arange(n) % 37).astype(np.int32)}
    bounds = np.linspace(0, n, shards + 1).astype(int)
    for s in range(shards):
        for what, arr in columns.items():
            np.save(shard_path(folder, s, what), arr[bounds[s]:bounds[s + 1]])
    (folder / VOCAB_FILE).write_text(json.dumps([f"w{i}" for i in range(50)]))
    sizes = {str(s): {"n_tokens": int(bounds[s + 1] - bounds[s])} for s in range(shards)}
    (folder / MANIFEST).write_text(json.dumps({"complete": True, "n_shards": shards, "d_model": d, "total_tokens": n,
                                               "shards": sizes, "model_name": model, "hook_name": hook}))
    return open_activations(folder)
