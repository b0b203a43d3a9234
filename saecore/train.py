"""Training SAE families on stored activations: several seeds batched in one pass, saved in SAELens layout."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from saecore.cache import atomic_write_bytes, atomic_write_json
from saecore.errors import InputError, LoadError
from saecore.sae import ARCHITECTURES, BatchedSAE, SAEConfig
from saecore.similarity import resolve_device

Progress = Callable[[int, int, str], None]

SAE_LENS_VERSION = "6.5.0"  # the cfg.json layout written here follows sae-lens 6
CHECKPOINTS_DIR = "checkpoints"
META_FILE = "saecore_meta.json"
EVAL_BATCH = 4096
# Checkpoints are evaluated on the first this-many evaluation tokens (the final runs on all of them).
CHECKPOINT_EVAL_TOKENS = 16384


@dataclass
class TrainConfig:
    """One SAE family: architecture, size, sparsity setting, optimiser schedule and the seeds to train together.

    Sparsity: `k` for topk/batchtopk; `l1_coefficient` (decoder-norm-weighted L1) for standard;
    `l0_coefficient` for jumprelu. The L1/L0 coefficient ramps up linearly over `sparsity_warmup`
    of training. The learning rate warms up over `warmup_steps`, then decays linearly to zero over
    the last `decay_fraction` of steps. TopK-style SAEs add the auxiliary loss on latents that have
    not fired for `dead_tokens` tokens, reconstructing the residual from their `aux_k` largest inputs.
    """

    arch: str = "topk"
    d_sae: int = 2304
    k: int | None = 32
    l1_coefficient: float | None = None
    l0_coefficient: float | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: float = 1.0
    batch_size: int = 1024
    lr: float = 5e-4
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    decay_fraction: float = 0.2
    sparsity_warmup: float = 0.05
    normalize_activations: bool = True
    aux_k: int | None = None  # default d_in // 2
    aux_coefficient: float = 1 / 32
    dead_tokens: int = 200_000
    data_seed: int = 0
    vary_data_order: bool = False
    n_checkpoints: int = 0
    checkpoint_weights: str = "full"  # "full" or "decoder" (W_dec and b_dec only: a quarter of the bytes)
    save_dtype: str = "float32"
    init: str = "topk"
    jumprelu_threshold: float = 1e-3
    jumprelu_bandwidth: float = 1e-3
    matmul_dtype: str = "float32"  # "bfloat16": matmuls under autocast (3-5x faster on CPUs with AMX); weights stay float32
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise InputError(f"arch: unknown architecture {self.arch!r}; expected one of {', '.join(ARCHITECTURES)}")
        if self.arch == "standard" and self.l1_coefficient is None:
            raise InputError("l1_coefficient: the standard (ReLU + L1) SAE needs an L1 coefficient")
        if self.arch == "jumprelu" and self.l0_coefficient is None:
            raise InputError("l0_coefficient: the JumpReLU SAE needs an L0 coefficient")
        if self.checkpoint_weights not in ("full", "decoder"):
            raise InputError(f"checkpoint_weights: expected 'full' or 'decoder', got {self.checkpoint_weights!r}")
        if self.matmul_dtype not in ("float32", "bfloat16"):
            raise InputError(f"matmul_dtype: expected float32 or bfloat16, got {self.matmul_dtype!r}")
        if self.save_dtype not in ("float32", "float16", "bfloat16"):
            raise InputError(f"save_dtype: expected float32, float16 or bfloat16, got {self.save_dtype!r}")
        if len(set(self.seeds)) != len(self.seeds) or not self.seeds:
            raise InputError(f"seeds: need distinct seeds, got {list(self.seeds)}")
        self.seeds = tuple(int(s) for s in self.seeds)

    @property
    def sparsity_label(self) -> str:
        if self.arch in ("topk", "batchtopk"):
            return f"k{self.k}"
        if self.arch == "standard":
            return f"l1_{self.l1_coefficient:g}"
        return f"l0c_{self.l0_coefficient:g}"

    def sae_config(self, d_in: int) -> SAEConfig:
        return SAEConfig(self.arch, d_in, self.d_sae, k=self.k if self.arch in ("topk", "batchtopk") else None,
                         jumprelu_threshold=self.jumprelu_threshold, jumprelu_bandwidth=self.jumprelu_bandwidth,
                         init=self.init)


@dataclass
class RunResult:
    """What training one seed produced: its folder and final evaluation."""

    seed: int
    path: Path
    fvu: float
    l0: float
    dead_fraction: float
    tokens_seen: int
    checkpoints: list[int] = field(default_factory=list)


@dataclass
class Evaluation:
    """Per-model reconstruction and sparsity on evaluation activations."""

    fvu: np.ndarray  # (R,)
    l0: np.ndarray  # (R,) mean active latents per token
    frequencies: np.ndarray  # (R, d_sae) firing fraction

    @property
    def dead_fraction(self) -> np.ndarray:
        return (self.frequencies == 0).mean(axis=1)


def checkpoint_tokens(total_tokens: int, n: int, batch_size: int, first: int | None = None) -> list[int]:
    """`n` log-spaced token counts (multiples of the batch size) strictly before the end of training."""
    if n <= 0:
        return []
    first = first or max(batch_size, total_tokens // 1000)
    if first >= total_tokens:
        return []
    points = np.geomspace(first, total_tokens, n + 1)[:-1]
    steps = sorted({max(1, int(round(p / batch_size))) * batch_size for p in points})
    return [s for s in steps if s < total_tokens]


def activation_scale(x: torch.Tensor, n: int = 65536) -> float:
    """Factor that gives activations unit mean squared norm (estimated on up to `n` evenly spaced rows)."""
    idx = torch.linspace(0, x.shape[0] - 1, min(n, x.shape[0])).long()
    ms = x[idx].to(torch.float64).pow(2).sum(-1).mean().item()
    if not ms > 0:
        raise InputError("activations are all zero; cannot normalise them")
    return float(1.0 / math.sqrt(ms))


def _lr_factor(step: int, total: int, warmup: int, decay_fraction: float) -> float:
    """Linear warm-up, constant, then linear decay to zero over the last `decay_fraction` of steps."""
    warm = min(1.0, (step + 1) / max(1, warmup))
    decay_start = int(total * (1 - decay_fraction))
    if step >= decay_start and total > decay_start:
        return warm * max(0.0, (total - step) / (total - decay_start))
    return warm


def _aux_loss(model: BatchedSAE, pre: torch.Tensor, residual: torch.Tensor, dead: torch.Tensor, aux_k: int) -> torch.Tensor:
    """Per model: how well the dead latents' `aux_k` largest pre-activations reconstruct the residual (R,)."""
    if not bool(dead.any()):
        return torch.zeros(pre.shape[0], device=pre.device)
    residual = residual.detach()
    masked = torch.where(dead.unsqueeze(1), pre, torch.full_like(pre, -torch.inf))
    kk = min(aux_k, pre.shape[-1])
    vals, idx = masked.topk(kk, dim=-1, sorted=False)
    vals = torch.relu(torch.where(torch.isfinite(vals), vals, torch.zeros_like(vals)))
    f_aux = torch.zeros_like(pre).scatter(-1, idx, vals)
    e_hat = torch.bmm(f_aux, model.W_dec)
    total = (residual - residual.mean(1, keepdim=True)).pow(2).sum((1, 2)).clamp_min(1e-12)
    loss = (e_hat - residual).pow(2).sum((1, 2)) / total
    return torch.where(dead.any(-1), loss, torch.zeros_like(loss))


def _remove_parallel_grad(model: BatchedSAE) -> None:
    """Keep the decoder rows unit norm to first order: drop the gradient component along each row."""
    g = model.W_dec.grad
    if g is None:
        return
    w = model.W_dec.data
    g.sub_((g * w).sum(-1, keepdim=True) * w)


def _sparsity_loss(model: BatchedSAE, cfg: TrainConfig, pre: torch.Tensor, f: torch.Tensor, ramp: float) -> torch.Tensor:
    if cfg.arch == "standard":
        norms = model.W_dec.norm(dim=-1)  # (R, d_sae)
        return ramp * cfg.l1_coefficient * (f * norms.unsqueeze(1)).sum(-1).mean(-1)
    if cfg.arch == "jumprelu":
        return ramp * cfg.l0_coefficient * model.l0_penalty(pre)
    return torch.zeros(pre.shape[0], device=pre.device)


@torch.no_grad()
def evaluate(model: BatchedSAE, x: torch.Tensor, scale: float, batch_size: int = EVAL_BATCH) -> Evaluation:
    """FVU, mean L0 and firing fractions of every model on activations `x` (raw; scaled here)."""
    was_training = model.training
    model.eval()
    dev = model.W_dec.device
    r, d_sae = model.n_models, model.cfg.d_sae
    sq_err = torch.zeros(r, dtype=torch.float64, device=dev)
    fires = torch.zeros(r, d_sae, dtype=torch.float64, device=dev)
    n = x.shape[0]
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    total_sq = torch.zeros((), dtype=torch.float64)
    for i in range(0, n, batch_size):
        xb = x[i:i + batch_size].to(dev, torch.float32) * scale
        x_hat, f = model(xb)
        sq_err += (x_hat - xb.unsqueeze(0)).pow(2).sum((1, 2)).double()
        fires += (f > 0).sum(1).double()
        xd = xb.double().cpu()
        total += xd.sum(0)
        total_sq += xd.pow(2).sum()
    var = (total_sq - total.pow(2).sum() / max(n, 1)).item()
    model.train(was_training)
    freq = (fires / max(n, 1)).cpu().numpy()
    return Evaluation(fvu=(sq_err.cpu().numpy() / max(var, 1e-30)), l0=freq.sum(1), frequencies=freq)


def _folded_weights(model: BatchedSAE, r: int, scale: float, dtype: torch.dtype, decoder_only: bool) -> dict:
    """Model r's weights for raw (unnormalised) activations, SAELens names and orientation.

    With x_n = c·x: W_enc' = c·W_enc and b_dec' = b_dec / c keep the codes unchanged; W_dec' = W_dec / c
    returns the reconstruction to the raw scale. Decoder directions (what matching reads) do not change.
    """
    c = scale
    out = {"W_dec": (model.W_dec[r].detach() / c), "b_dec": (model.b_dec[r].detach() / c)}
    if not decoder_only:
        out["W_enc"] = model.W_enc[r].detach() * c
        out["b_enc"] = model.b_enc[r].detach().clone()
        if model.cfg.arch == "jumprelu":
            out["threshold"] = model.theta[r].detach().clone()
        elif model.cfg.arch == "batchtopk":
            out["threshold"] = model.threshold[r].detach().clone().expand(model.cfg.d_sae).contiguous()
    return {k: v.to("cpu", dtype).contiguous() for k, v in out.items()}


def _cfg_json(cfg: TrainConfig, d_in: int, dtype: str, model_name: str | None, hook_name: str | None) -> dict:
    saved_arch = "jumprelu" if cfg.arch == "batchtopk" else cfg.arch
    out = {"architecture": saved_arch, "d_in": d_in, "d_sae": cfg.d_sae, "dtype": dtype, "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
           "metadata": {"model_name": model_name, "hook_name": hook_name, "training_architecture": cfg.arch,
                        "sae_lens_version": SAE_LENS_VERSION, "sae_lens_training_version": SAE_LENS_VERSION,
                        "trained_with": "saecore"}}
    if cfg.arch in ("topk", "batchtopk"):
        out["k"] = cfg.k
    return out


def _runner_cfg(cfg: TrainConfig, seed: int, d_in: int, total_tokens: int, scale: float, model_name, hook_name,
                dataset: str | None) -> dict:
    out = {k: v for k, v in asdict(cfg).items() if k not in ("seeds", "device")}
    out.update(seed=int(seed), d_in=d_in, training_tokens=int(total_tokens), train_batch_size_tokens=cfg.batch_size,
               activation_scale=scale, model_name=model_name, hook_name=hook_name, dataset_path=dataset,
               architecture=cfg.arch)
    return out


def save_run(model: BatchedSAE, r: int, cfg: TrainConfig, folder: Path, scale: float, meta: dict,
             frequencies: np.ndarray | None, model_name: str | None, hook_name: str | None,
             dataset: str | None, total_tokens: int, decoder_only: bool = False) -> Path:
    """Write model r as a SAELens folder (cfg.json, sae_weights, sparsity, runner_cfg) plus saecore_meta.json."""
    from safetensors.torch import save as st_save

    dtype = getattr(torch, cfg.save_dtype)
    folder.mkdir(parents=True, exist_ok=True)
    d_in = model.cfg.d_in
    tensors = _folded_weights(model, r, scale, dtype, decoder_only)
    atomic_write_bytes(folder / "sae_weights.safetensors", st_save(tensors))
    if frequencies is not None:
        sparsity = torch.from_numpy(np.log10(frequencies.astype(np.float64) + 1e-10)).to(torch.float32)
        atomic_write_bytes(folder / "sparsity.safetensors", st_save({"sparsity": sparsity.contiguous()}))
    atomic_write_json(folder / "runner_cfg.json",
                      _runner_cfg(cfg, model.seeds[r], d_in, total_tokens, scale, model_name, hook_name, dataset))
    atomic_write_json(folder / META_FILE, meta)
    # cfg.json last: a folder is only a run once its config is there.
    atomic_write_json(folder / "cfg.json", _cfg_json(cfg, d_in, cfg.save_dtype, model_name, hook_name))
    return folder


def _autocast(device: torch.device, dtype: str):
    """bfloat16 autocast for the SAE's matmuls, or a no-op for float32."""
    import contextlib

    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _batch(x: torch.Tensor, idx: torch.Tensor, dev: torch.device, scale: float) -> torch.Tensor:
    return x[idx].to(dev, torch.float32) * scale


def train_family(x: torch.Tensor, cfg: TrainConfig, out: str | Path, eval_x: torch.Tensor | None = None,
                 model_name: str | None = None, hook_name: str | None = None, dataset: str | None = None,
                 run_name: Callable[[int], str] = lambda seed: f"seed{seed}",
                 progress: Progress | None = None, show_progress: bool = False) -> list[RunResult]:
    """Train every seed of `cfg` together on activations `x` (N, d_in), one batched model, one pass per epoch.

    All seeds see the same batches in the same order unless `cfg.vary_data_order`; the seed then also
    picks the data order. Runs are written to `<out>/<run_name(seed)>/`, checkpoints to
    `<run>/checkpoints/<tokens_seen>/`. Finished runs (cfg.json present) are not retrained.
    """
    out = Path(out)
    if x.ndim != 2:
        raise InputError(f"x: expected activations of shape (N, d_in), got {tuple(x.shape)}")
    n, d_in = x.shape
    if n < cfg.batch_size:
        raise InputError(f"x: {n} activations are fewer than one batch of {cfg.batch_size}")
    folders = [out / run_name(s) for s in cfg.seeds]
    eval_x = x if eval_x is None else eval_x
    if all((f / "cfg.json").is_file() for f in folders):
        for f in folders:
            _check_same_config(f, cfg)
        return [_existing_result(s, f) for s, f in zip(cfg.seeds, folders)]

    dev = resolve_device(cfg.device)
    scale = activation_scale(x) if cfg.normalize_activations else 1.0
    model = BatchedSAE(cfg.sae_config(d_in), cfg.seeds, device=dev)
    with torch.no_grad():
        idx = torch.linspace(0, n - 1, min(n, 65536)).long()
        model.b_dec.copy_(x[idx].to(dev, torch.float32).mul(scale).mean(0).expand_as(model.b_dec))
    topk_like = cfg.arch in ("topk", "batchtopk")
    unit_decoder = cfg.arch != "standard"
    if unit_decoder:
        model.normalize_decoder_()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.adam_betas, fused=True)
    steps_per_epoch = n // cfg.batch_size
    total_steps = max(1, int(round(cfg.epochs * steps_per_epoch)))
    total_tokens = total_steps * cfg.batch_size
    ckpts = set(checkpoint_tokens(total_tokens, cfg.n_checkpoints, cfg.batch_size))
    aux_k = cfg.aux_k or max(1, d_in // 2)
    r = model.n_models
    last_fired = torch.zeros(r, cfg.d_sae, dtype=torch.long, device=dev)
    n_epochs = math.ceil(total_steps / steps_per_epoch)

    def orders(epoch: int) -> list[torch.Tensor]:
        if cfg.vary_data_order:
            return [torch.randperm(n, generator=torch.Generator().manual_seed(cfg.data_seed * 1_000_003 + s * 7919 + epoch))
                    for s in cfg.seeds]
        return [torch.randperm(n, generator=torch.Generator().manual_seed(cfg.data_seed * 1_000_003 + epoch))]

    bar = None
    if show_progress:
        from tqdm import tqdm
        bar = tqdm(total=total_tokens, unit="tok", desc=f"{cfg.arch} {cfg.sparsity_label} ×{r} seeds")
    started = time.perf_counter()
    step = 0
    results_ckpt: dict[int, list[int]] = {i: [] for i in range(r)}
    model.train()
    for epoch in range(n_epochs):
        perm = orders(epoch)
        for b in range(steps_per_epoch):
            if step >= total_steps:
                break
            sl = slice(b * cfg.batch_size, (b + 1) * cfg.batch_size)
            if len(perm) == 1:
                xb = _batch(x, perm[0][sl], dev, scale)
                target = xb.unsqueeze(0)
            else:
                xb = torch.stack([_batch(x, p[sl], dev, scale) for p in perm])
                target = xb
            for group in opt.param_groups:
                group["lr"] = cfg.lr * _lr_factor(step, total_steps, cfg.warmup_steps, cfg.decay_fraction)
            with _autocast(dev, cfg.matmul_dtype):
                pre = model.pre_activations(xb)
                f = model.activate(pre)
                x_hat = model.decode(f)
            pre, f, x_hat = pre.float(), f.float(), x_hat.float()
            residual = target - x_hat
            recon = residual.pow(2).sum(-1).mean(-1)  # (R,)
            ramp = min(1.0, (step + 1) / max(1, cfg.sparsity_warmup * total_steps))
            loss = recon + _sparsity_loss(model, cfg, pre, f, ramp)
            tokens_before = step * cfg.batch_size
            with torch.no_grad():
                fired = (f > 0).any(1)
                last_fired[fired] = tokens_before + cfg.batch_size
            if topk_like and cfg.aux_coefficient > 0:
                dead = (tokens_before + cfg.batch_size - last_fired) > cfg.dead_tokens
                with _autocast(dev, cfg.matmul_dtype):
                    aux = _aux_loss(model, pre, residual, dead, aux_k).float()
                loss = loss + cfg.aux_coefficient * aux
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            if unit_decoder:
                _remove_parallel_grad(model)
            opt.step()
            if unit_decoder:
                model.normalize_decoder_()
            step += 1
            seen = step * cfg.batch_size
            if bar is not None:
                bar.update(cfg.batch_size)
                if step % 20 == 0:
                    bar.set_postfix(mse=f"{recon.mean().item():.4f}", l0=f"{(f > 0).sum(-1).float().mean().item():.1f}")
            if progress is not None and (step % 10 == 0 or step == total_steps):
                progress(seen, total_tokens, f"{cfg.arch} {cfg.sparsity_label}: step {step}/{total_steps}")
            if seen in ckpts:
                ev = evaluate(model, eval_x[:CHECKPOINT_EVAL_TOKENS], scale)
                for i in range(r):
                    folder = folders[i] / CHECKPOINTS_DIR / str(seen)
                    meta = _meta(model.seeds[i], seen, ev, i, time.perf_counter() - started, checkpoint=True)
                    save_run(model, i, cfg, folder, scale, meta, ev.frequencies[i], model_name, hook_name, dataset,
                             total_tokens, decoder_only=cfg.checkpoint_weights == "decoder")
                    results_ckpt[i].append(seen)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - started
    ev = evaluate(model, eval_x, scale)
    results = []
    for i in range(r):
        meta = _meta(model.seeds[i], total_tokens, ev, i, seconds, checkpoint=False)
        meta.update(epochs=cfg.epochs, activation_scale=scale)
        save_run(model, i, cfg, folders[i], scale, meta, ev.frequencies[i], model_name, hook_name, dataset,
                 total_tokens)
        results.append(RunResult(model.seeds[i], folders[i], float(ev.fvu[i]), float(ev.l0[i]),
                                 float(ev.dead_fraction[i]), total_tokens, results_ckpt[i]))
    return results


def _meta(seed: int, tokens: int, ev: Evaluation, i: int, seconds: float, checkpoint: bool) -> dict:
    meta = {"seed": int(seed), "tokens_seen": int(tokens), "fvu": round(float(ev.fvu[i]), 6),
            "l0": round(float(ev.l0[i]), 4), "dead_fraction": round(float(ev.dead_fraction[i]), 6),
            "train_seconds": round(float(seconds), 2)}
    if checkpoint:
        meta["checkpoint"] = True
    return meta


# Settings that change what a finished run is: a run trained with other values is never silently reused.
REUSE_KEYS = ("arch", "d_sae", "k", "l1_coefficient", "l0_coefficient", "epochs", "batch_size", "lr", "init",
              "normalize_activations", "data_seed", "vary_data_order", "matmul_dtype")


def _check_same_config(folder: Path, cfg: TrainConfig) -> None:
    runner_path = folder / "runner_cfg.json"
    runner = json.loads(runner_path.read_text()) if runner_path.is_file() else {}
    wanted = asdict(cfg)
    differ = [k for k in REUSE_KEYS if k in runner and runner[k] != wanted[k]]
    if differ:
        got = ", ".join(f"{k}={runner[k]!r} (asked {wanted[k]!r})" for k in differ)
        raise InputError(f"{folder}: holds a finished run trained with other settings: {got}; "
                         "delete it or write to another folder")


def _existing_result(seed: int, folder: Path) -> RunResult:
    meta = json.loads((folder / META_FILE).read_text()) if (folder / META_FILE).is_file() else {}
    ck = folder / CHECKPOINTS_DIR
    steps = sorted(int(p.name) for p in ck.iterdir() if p.name.isdigit()) if ck.is_dir() else []
    return RunResult(seed, folder, float(meta.get("fvu", "nan")), float(meta.get("l0", "nan")),
                     float(meta.get("dead_fraction", "nan")), int(meta.get("tokens_seen", 0)), steps)


def load_sae(path: str | Path, device: str | torch.device = "cpu") -> BatchedSAE:
    """A single-model BatchedSAE (R = 1) rebuilt from a SAELens folder, for encoding new activations.

    BatchTopK runs are saved (as SAELens does) as JumpReLU with their inference threshold, and load as such.
    """
    from saecore.loaders.tensors import pick, read_json, read_safetensors

    path = Path(path)
    cfg = read_json(path / "cfg.json")
    weights_path = path / "sae_weights.safetensors"
    t = read_safetensors(weights_path)
    arch = str(cfg.get("architecture", "standard"))
    if arch not in ("standard", "topk", "jumprelu"):
        raise LoadError(path / "cfg.json", f"cannot encode with architecture {arch!r} (standard, topk, jumprelu)")
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    w_enc = pick(t, weights_path, "W_enc")
    if tuple(w_enc.shape) != (d_in, d_sae):
        raise LoadError(weights_path, f"W_enc has shape {tuple(w_enc.shape)}, expected ({d_in}, {d_sae})")
    sae_cfg = SAEConfig(arch, d_in, d_sae, k=cfg.get("k") if arch == "topk" else None)
    model = BatchedSAE(sae_cfg, [0])
    with torch.no_grad():
        model.W_enc.copy_(w_enc.float().unsqueeze(0))
        model.W_dec.copy_(pick(t, weights_path, "W_dec").float().unsqueeze(0))
        model.b_enc.copy_(pick(t, weights_path, "b_enc").float().unsqueeze(0))
        model.b_dec.copy_(pick(t, weights_path, "b_dec").float().unsqueeze(0))
        if arch == "jumprelu":
            theta = pick(t, weights_path, "threshold").float().clamp_min(1e-30)
            model.log_threshold.copy_(theta.log().unsqueeze(0))
    model.eval()
    return model.to(resolve_device(device))


def family_dir_name(cfg: TrainConfig) -> str:
    """A folder name for a family, e.g. 'topk_k32' or 'standard_l1_0.8'."""
    return f"{cfg.arch}_{cfg.sparsity_label}"


def train_families(x: torch.Tensor, configs: Sequence[TrainConfig], out: str | Path, **kwargs) -> dict[str, list[RunResult]]:
    """Train several families one after another into `<out>/<family_dir_name>/seed<N>/`."""
    return {family_dir_name(c): train_family(x, c, Path(out) / family_dir_name(c), **kwargs) for c in configs}
