"""Sparse autoencoder architectures, one definition each, batched over seeds (R models with stacked parameters)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from saecore.errors import InputError
from saecore.similarity import resolve_device

ARCHITECTURES = ("standard", "topk", "batchtopk", "jumprelu")
# Initialisation schemes (SPEC §3); "default" picks the one named after the architecture's family.
INITS = ("default", "standard", "topk")
NUMPY_TOPK_MAX_WIDTH = 4096
# The running BatchTopK inference threshold is an exponential moving average with this decay.
BATCHTOPK_THRESHOLD_DECAY = 0.99


@dataclass
class SAEConfig:
    """Shape and architecture of an SAE family.

    arch: one of ARCHITECTURES. k: active latents per sample (topk) or on average (batchtopk).
    jumprelu_threshold: initial JumpReLU threshold θ; jumprelu_bandwidth: width ε of the rectangle
    kernel in the straight-through pseudo-derivative of θ. init: "standard" = one gaussian matrix
    with unit feature directions scaled by 0.1, tied; "topk" = unit-norm decoder rows, W_enc = W_decᵀ;
    both with zero biases; "default" = "standard" for the standard SAE, "topk" for the others.
    """

    arch: str
    d_in: int
    d_sae: int
    k: int | None = None
    jumprelu_threshold: float = 1e-3
    jumprelu_bandwidth: float = 1e-3
    init: str = "default"

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise InputError(f"arch: unknown architecture {self.arch!r}; expected one of {', '.join(ARCHITECTURES)}")
        if self.d_in < 1 or self.d_sae < 1:
            raise InputError(f"d_in and d_sae must be positive, got d_in={self.d_in}, d_sae={self.d_sae}")
        if self.arch in ("topk", "batchtopk"):
            if self.k is None or not 1 <= self.k <= self.d_sae:
                raise InputError(f"k: {self.arch} needs 1 <= k <= d_sae={self.d_sae}, got k={self.k}")
        if self.init not in INITS:
            raise InputError(f"init: unknown scheme {self.init!r}; expected one of {', '.join(INITS)}")
        if self.arch == "jumprelu" and (self.jumprelu_threshold <= 0 or self.jumprelu_bandwidth <= 0):
            raise InputError("jumprelu_threshold and jumprelu_bandwidth must be positive, got "
                             f"{self.jumprelu_threshold} and {self.jumprelu_bandwidth}")

    @property
    def init_scheme(self) -> str:
        """The concrete init scheme ("standard" or "topk")."""
        if self.init != "default":
            return self.init
        return "standard" if self.arch == "standard" else "topk"


def _rect(u: torch.Tensor) -> torch.Tensor:
    """Rectangle kernel: 1 on (-1/2, 1/2), else 0."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


def _sum_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum a broadcast gradient back to the shape of the (broadcast) input it belongs to."""
    while grad.dim() > len(shape):
        grad = grad.sum(0)
    for i, n in enumerate(shape):
        if n == 1 and grad.shape[i] != 1:
            grad = grad.sum(i, keepdim=True)
    return grad


class _JumpReLU(torch.autograd.Function):
    """z·H(z − θ); ∂/∂θ by the straight-through estimator −(θ/ε)·rect((z − θ)/ε)."""

    @staticmethod
    def forward(ctx, z, theta, bandwidth):
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return z * (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_z = grad * (z > theta).to(z.dtype)
        grad_theta = _sum_to(-(theta / eps) * _rect((z - theta) / eps) * grad, theta.shape)
        return grad_z, grad_theta, None


class _Step(torch.autograd.Function):
    """H(z − θ); ∂/∂θ by the straight-through estimator −(1/ε)·rect((z − θ)/ε), no gradient to z."""

    @staticmethod
    def forward(ctx, z, theta, bandwidth):
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_theta = _sum_to(-(1.0 / eps) * _rect((z - theta) / eps) * grad, theta.shape)
        return torch.zeros_like(z), grad_theta, None


def _topk_relu(pre: torch.Tensor, k: int) -> torch.Tensor:
    """ReLU of the k largest entries of each row, zeros elsewhere.

    On the CPU, for rows up to NUMPY_TOPK_MAX_WIDTH, the k-th largest value comes from numpy's vectorised
    sort (measured 1.5–3× faster than torch.topk there, 2× slower at 16k); rows where ties would keep
    more than k entries fall back to torch.topk.
    """
    on_cpu = pre.device.type == "cpu" and pre.dtype in (torch.float32, torch.float64)
    if on_cpu and pre.shape[-1] <= NUMPY_TOPK_MAX_WIDTH:
        d = pre.shape[-1]
        a = pre.detach().numpy()
        ranked = np.sort(a, axis=-1)
        kth = ranked[..., d - k:d - k + 1]
        if k == d or not (kth[..., 0] == ranked[..., d - k - 1]).any():  # no ties at the k-th place
            keep = (a >= kth) & (a > 0)
            return pre * torch.from_numpy(keep.astype(a.dtype))
    vals, idx = pre.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))


def _init_weights(cfg: SAEConfig, seed: int) -> torch.Tensor:
    """Decoder rows (d_sae, d_in) of one model, drawn on the CPU so every device starts from the same numbers."""
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    w = torch.randn(cfg.d_sae, cfg.d_in, generator=g, dtype=torch.float32)
    w = w / w.norm(dim=1, keepdim=True)
    return w * 0.1 if cfg.init_scheme == "standard" else w


class BatchedSAE(torch.nn.Module):
    """R independent SAEs of one config with stacked parameters (leading dim R), one per seed.

    Encoder: pre = W_enc(x − b_dec) + b_enc. Standard f = ReLU(pre); TopK keeps the k largest of
    ReLU(pre) per sample; BatchTopK keeps the k·B largest per model across the batch in training
    mode and, in eval mode, everything above a running threshold estimated in training (the mean,
    over training batches, of the smallest kept activation; before any training step it falls back
    to the batch rule); JumpReLU f = pre·H(pre − θ), θ = exp(log_threshold). Decoder x̂ = f·W_dec + b_dec.
    Batching is exact: model r behaves as a single-model build with seed seeds[r].
    """

    def __init__(self, cfg: SAEConfig, seeds: Sequence[int], device: str | torch.device | None = None,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise InputError("seeds: need at least one seed")
        self.cfg = cfg
        self.seeds = seeds
        w = torch.stack([_init_weights(cfg, s) for s in seeds]).to(dtype)
        r = len(seeds)
        self.W_dec = torch.nn.Parameter(w.clone())
        self.W_enc = torch.nn.Parameter(w.transpose(1, 2).contiguous())
        self.b_enc = torch.nn.Parameter(torch.zeros(r, cfg.d_sae, dtype=dtype))
        self.b_dec = torch.nn.Parameter(torch.zeros(r, cfg.d_in, dtype=dtype))
        if cfg.arch == "jumprelu":
            theta = torch.full((r, cfg.d_sae), float(cfg.jumprelu_threshold), dtype=dtype)
            self.log_threshold = torch.nn.Parameter(theta.log())
        if cfg.arch == "batchtopk":
            # -1 marks "not estimated yet".
            self.register_buffer("threshold", torch.full((r,), -1.0, dtype=dtype))
        if device is not None:
            self.to(resolve_device(device))

    @property
    def n_models(self) -> int:
        return len(self.seeds)

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        """x as (B, d_in) or (R, B, d_in); anything else is an error naming the shapes."""
        d_in, r = self.cfg.d_in, self.n_models
        if x.dim() == 2 and x.shape[1] == d_in:
            return x
        if x.dim() == 3 and x.shape[0] == r and x.shape[2] == d_in:
            return x
        raise InputError(f"x: expected shape (B, {d_in}) or ({r}, B, {d_in}), got {tuple(x.shape)}")

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """W_enc(x − b_dec) + b_enc for every model: (R, B, d_sae)."""
        x = self._check_input(x)
        centred = x.unsqueeze(0) - self.b_dec.unsqueeze(1) if x.dim() == 2 else x - self.b_dec.unsqueeze(1)
        return torch.baddbmm(self.b_enc.unsqueeze(1), centred, self.W_enc)

    @property
    def theta(self) -> torch.Tensor:
        """JumpReLU thresholds θ = exp(log_threshold), (R, d_sae)."""
        return self.log_threshold.exp()

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """The architecture's sparse activation of pre-activations (R, B, d_sae) -> f >= 0."""
        arch = self.cfg.arch
        if arch == "standard":
            return torch.relu(pre)
        if arch == "topk":
            return _topk_relu(pre, self.cfg.k)
        if arch == "batchtopk":
            return self._batchtopk(pre)
        return _JumpReLU.apply(pre, self.theta.unsqueeze(1), self.cfg.jumprelu_bandwidth)

    def _batchtopk(self, pre: torch.Tensor) -> torch.Tensor:
        """Batch rule in training (and updates the running threshold); threshold rule in eval once estimated."""
        r, b, d = pre.shape
        acts = torch.relu(pre)
        if not self.training and bool((self.threshold >= 0).all()):
            return acts * (acts > self.threshold.view(r, 1, 1)).to(acts.dtype)
        flat = acts.reshape(r, b * d)
        n_keep = min(self.cfg.k * b, b * d)
        vals, idx = flat.topk(n_keep, dim=-1, sorted=False)
        f = torch.zeros_like(flat).scatter(-1, idx, vals).view(r, b, d)
        if self.training:
            with torch.no_grad():
                kept = torch.where(vals > 0, vals, torch.full_like(vals, float("inf"))).amin(dim=-1)
                kept = torch.where(torch.isfinite(kept), kept, torch.zeros_like(kept))
                fresh = self.threshold < 0
                ema = BATCHTOPK_THRESHOLD_DECAY * self.threshold + (1 - BATCHTOPK_THRESHOLD_DECAY) * kept
                self.threshold.copy_(torch.where(fresh, kept, ema))
        return f

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Sparse codes f (R, B, d_sae) >= 0 of x (B, d_in) shared by all models, or (R, B, d_in)."""
        return self.activate(self.pre_activations(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruction f·W_dec + b_dec: (R, B, d_in)."""
        return torch.baddbmm(self.b_dec.unsqueeze(1), f, self.W_dec)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_hat, f), both with leading dim R."""
        f = self.encode(x)
        return self.decode(f), f

    def l0_penalty(self, pre: torch.Tensor) -> torch.Tensor:
        """JumpReLU's differentiable L0: mean over the batch of Σ_j H(pre − θ), per model (R,)."""
        if self.cfg.arch != "jumprelu":
            raise InputError(f"l0_penalty: only defined for jumprelu, this SAE is {self.cfg.arch}")
        return _Step.apply(pre, self.theta.unsqueeze(1), self.cfg.jumprelu_bandwidth).sum(-1).mean(-1)

    def decoder(self, r: int) -> torch.Tensor:
        """Decoder rows (d_sae, d_in) of model r as a detached float32 CPU tensor."""
        return self.W_dec[r].detach().to("cpu", torch.float32).clone()

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every decoder row to unit norm in place (zero rows stay zero)."""
        norms = self.W_dec.norm(dim=-1, keepdim=True)
        self.W_dec.div_(torch.where(norms > 0, norms, torch.ones_like(norms)))
