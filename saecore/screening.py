"""How far a similarity screened in low precision can be from the exact float64 cosine, proven per entry.

The candidate pass may compute S = A·Bᵀ with bfloat16 inputs (about 2-4x the float32 rate on CPUs
with AVX-512 BF16/AMX and on tensor cores). Every decision that leaves a pair out then uses this bound.

Let a, b be float32 rows (unit after `normalize_rows`), â, b̂ their bfloat16 roundings, ea = â - a,
eb = b̂ - b, and s̃ the value the matmul returns. Then

    |s̃ - a·b| <= ‖ea‖·‖b̂‖ + ‖a‖·‖eb‖                    inputs rounded     (â·b̂ - a·b = ea·b̂ + a·eb, Cauchy-Schwarz)
               + γ_d · ‖â‖·‖b̂‖                          float32 accumulation of d exact products, any order
               + u_out · |s̃|                             the result rounded to the output dtype
               + 2d · 2^-126 + 2^-133                     products, partial sums or the result flushed to zero

with γ_d = d·u_acc / (1 - d·u_acc). The norms ‖ea‖ and ‖eb‖ are measured per row (ea is exact in
float32 by Sterbenz's lemma; the norm is inflated by its own summation bound), which is about 0.43 of the
worst case ‖ea‖ <= 2^-8·‖a‖ for real decoders, so the bound is near 0.0035 + 0.004·|s̃| instead of
0.0117 + 0.004·|s̃|. Products of two bfloat16 numbers (8-bit significands) are exact in float32.
u_acc is 2^-24 on the CPU (oneDNN accumulates bfloat16 products in float32 with round-to-nearest);
on CUDA it is taken as 2^-22, which also covers tensor cores that truncate instead of rounding, and
reduced-precision reductions are switched off for the screen. u_out is 2^-8 for a bfloat16 result
(round-to-nearest: |x - fl(x)| <= 2^-8·|fl(x)|) and 0 for float32.

The bound splits as α_i + β_j + c + u_out·|s̃| with α_i = (‖ea_i‖ + γ_d·‖â_i‖)·max_j‖b̂_j‖ and
β_j = max_i‖a_i‖·‖eb_j‖, so a row's bound on all entries screened at or below a value is one number.
For float32 screens the inputs are exact (ea = eb = 0) unless torch is allowed to round float32 matmul
inputs (TF32 or bfloat16 precision), in which case the worst case u_in·‖a‖ stands in for ‖ea‖.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

U_F32 = 2.0 ** -24
U_BF16 = 2.0 ** -8
FLUSHED = 2.0 ** -126  # smallest normal float32/bfloat16: anything below may be flushed to zero
# float32 matmul input rounding torch may apply at each precision setting (mantissa of the inputs it uses).
_F32_INPUT_U = {"highest": 0.0, "high": 2.0 ** -11, "medium": 2.0 ** -8}
SCREENS = ("auto", "bfloat16", "float32")
# Unit roundoff of a float32 dot product at each torch precision setting (its inputs may be rounded).
_MANTISSA_EPS = {"highest": 2.0 ** -24, "high": 2.0 ** -11, "medium": 2.0 ** -8}


def rounding_margin(d_in: int, max_potential: float = 1.0, device: torch.device | None = None) -> float:
    """A bound on |float32 reduced cost - exact reduced cost| for unit vectors of length d_in.

    Dot product error is at most gamma_d = d*u/(1 - d*u) for unit vectors; subtracting float32
    potentials adds a few ulps of their size. Doubled for safety; widened when matmuls may use TF32/bf16.
    """
    u = _MANTISSA_EPS.get(torch.get_float32_matmul_precision(), 2.0 ** -8)
    if device is not None and device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        u = max(u, _MANTISSA_EPS["high"])
    du = min(0.5, (d_in + 2) * u)
    return 2.0 * (du / (1.0 - du) + 6 * 2.0 ** -24 * (1.0 + max_potential))


def bf16_fast(device: torch.device) -> bool:
    """Whether bfloat16 matmuls are faster than float32 here (AVX-512 BF16 or AMX CPUs, Ampere+ GPUs)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def screen_dtype(screen: str, device: torch.device) -> torch.dtype:
    """The dtype of the candidate pass: 'auto' takes bfloat16 where the hardware runs it fast."""
    if screen not in SCREENS:
        raise ValueError(f"screen must be one of {SCREENS}, got {screen!r}")
    if screen == "auto":
        return torch.bfloat16 if bf16_fast(device) else torch.float32
    return torch.bfloat16 if screen == "bfloat16" else torch.float32


@contextmanager
def exact_accumulation(device: torch.device):
    """Keep CUDA bfloat16 matmuls accumulating in float32 (no reduced-precision split-K) inside the block."""
    if device.type != "cuda":
        yield
        return
    flag = torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = flag


def _norms(x: torch.Tensor, dtype: torch.dtype, chunk: int = 16384) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Upper bounds, per row, on ‖x‖, ‖x̂ - x‖ and ‖x̂‖ where x̂ is float32 x rounded to dtype.

    x̂ - x is exact in float32 (Sterbenz: x̂ is within a factor 2 of x), so all three are float32 norms,
    whose summation error (any order) is below (d + 2)·2^-24 relative; squares that underflow add at
    most d·2^-126. Computed a chunk at a time (n·d at once would be 0.8 GB at 262,144 × 768).
    """
    d = x.shape[1]
    out = np.empty((3, x.shape[0]))
    for s in range(0, x.shape[0], chunk):
        x32 = x[s:s + chunk].float()
        r32 = x32.to(dtype).float()
        for row, v in enumerate((x32, r32 - x32, r32)):
            out[row, s:s + chunk] = torch.linalg.vector_norm(v, dim=1).double().cpu().numpy()
    return tuple(out * (1.0 + (d + 4) * U_F32) + np.sqrt(d * FLUSHED))


@dataclass(frozen=True)
class ScreenBound:
    """|screened s_ij - exact s_ij| <= row_err[i] + col_err[j] + const + rel * |screened s_ij|."""

    dtype: torch.dtype
    row_err: np.ndarray
    col_err: np.ndarray
    const: float
    rel: float
    largest: float  # a bound on every |screened s_ij|

    @property
    def widest(self) -> float:
        """The largest bound of any entry."""
        return float(self.row_err.max(initial=0) + self.col_err.max(initial=0) + self.const + self.rel * self.largest)

    def _upper(self, screened: np.ndarray, err: np.ndarray, other_max: float) -> np.ndarray:
        s = np.asarray(screened, np.float64)
        return s + self.rel * np.abs(s) + err + other_max + self.const

    def row_ceiling(self, screened: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Upper bound on the exact value of every entry of row rows[t] screened at or below screened[t]
        (s + rel·|s| increases with s, so the largest such entry gives the bound)."""
        return self._upper(screened, self.row_err[rows], self.col_err.max(initial=0))

    def col_ceiling(self, screened: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The same for every entry of column cols[t] screened at or below screened[t]."""
        return self._upper(screened, self.col_err[cols], self.row_err.max(initial=0))

    def radius(self, screened: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The bound of single entries."""
        s = np.asarray(screened, np.float64)
        return self.row_err[rows] + self.col_err[cols] + self.const + self.rel * np.abs(s)


def screen_bound(a_n: torch.Tensor, b_n: torch.Tensor, dtype: torch.dtype) -> ScreenBound:
    """The proven bound for S = a_n·b_nᵀ computed with inputs in `dtype` (see the module docstring)."""
    d = a_n.shape[1]
    cuda = a_n.device.type == "cuda"
    if dtype == torch.bfloat16:
        na, ea, ha = _norms(a_n, dtype)
        nb, eb, hb = _norms(b_n, dtype)
        u_acc, rel = (2.0 ** -22 if cuda else U_F32), U_BF16
    elif dtype == torch.float32:
        u_in = _F32_INPUT_U.get(torch.get_float32_matmul_precision(), U_BF16)
        if cuda and torch.backends.cuda.matmul.allow_tf32:
            u_in = max(u_in, _F32_INPUT_U["high"])
        na, nb = _norms(a_n, dtype)[0], _norms(b_n, dtype)[0]
        ea, eb = u_in * na, u_in * nb
        ha, hb = na + ea, nb + eb
        u_acc, rel = (2.0 ** -22 if cuda else U_F32), 0.0
    else:
        raise ValueError(f"no screening bound for {dtype}")
    du = d * u_acc
    if du >= 0.5:
        raise ValueError(f"d_in={d} is too large for a float32 accumulation bound")
    gamma = du / (1.0 - du)
    hb_max = float(hb.max(initial=0))
    row_err = (ea + gamma * ha) * hb_max
    col_err = float(na.max(initial=0)) * eb
    largest = float(ha.max(initial=0)) * hb_max * (1 + gamma) * (1 + rel) + 2 * d * FLUSHED
    return ScreenBound(dtype, row_err, col_err, 2 * d * FLUSHED + 2.0 ** -133, rel, largest)
