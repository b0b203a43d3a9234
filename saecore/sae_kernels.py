"""Compiled (numba) full-batch loss gradient of batched standard and TopK SAEs on the CPU.

Same quantities as `saecore.synthetic._closed_form_step` for BatchedSAE's parameter layout (W_enc (R, d_in, d_sae),
b_enc (R, d_sae), W_dec (R, d_sae, d_in), b_dec (R, d_in)). The data are held feature-major (d_in, N) so every
product runs with the rows innermost (vectorised) in register tiles. Rows are split into a fixed number of chunks,
each summed in float64 into its own slot, and the slots are added in a fixed order: results are bit-identical
for any thread count and from run to run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange

from saecore.errors import InputError

KERNEL_ARCHS = ("standard", "topk")
# Row chunks (the parallel tasks); fixed, never derived from the thread count, so the summation order never changes.
ROW_CHUNKS = 16
# Rows per block inside a chunk (its working set stays in cache); passed at run time so loops over it vectorise.
ROW_BLOCK = 512
_FASTMATH = {"contract", "reassoc"}


@dataclass
class SAEGradients:
    """Loss gradients per parameter (float32, BatchedSAE's shapes) and per-model sums over the batch (float64).

    sq_error: Σ (x̂ − x)², l1: Σ f, active: number of positive codes (None when not asked for).
    """

    W_enc: np.ndarray
    b_enc: np.ndarray
    W_dec: np.ndarray
    b_dec: np.ndarray
    sq_error: np.ndarray | None = None
    l1: np.ndarray | None = None
    active: np.ndarray | None = None


@njit(cache=True, fastmath=_FASTMATH)
def _keep_topk(f_t, k):
    """Zero all but the k largest entries of each column of f_t (d_sae, B) that are > 0, in place (so a ReLU is
    included); among equal values at the k-th place the lower index wins.

    The k-th largest value per column comes from a min/max network over the latents, vectorised across columns;
    only columns with ties at that value need a second, exact pass.
    """
    d_sae, nb = f_t.shape
    top = np.full((k, nb), -np.inf, np.float32)
    runs = np.empty((2, nb), np.float32)
    count = np.zeros(nb, np.int32)
    for j in range(d_sae):
        # Insert column values into the sorted top rows, two rows per pass; the values pushed down go to
        # the other `runs` row (reading and writing one buffer would defeat vectorisation).
        src = f_t[j]
        for p in range(0, k, 2):
            t0 = top[p]
            if p + 1 < k:
                t1 = top[p + 1]
                dst = runs[(p // 2) % 2]
                for b in range(nb):
                    v = src[b]
                    a = t0[b]
                    t0[b] = max(a, v)
                    v = min(a, v)
                    a = t1[b]
                    t1[b] = max(a, v)
                    dst[b] = min(a, v)
                src = dst
            else:
                for b in range(nb):
                    t0[b] = max(t0[b], src[b])
    kth = top[k - 1]
    for j in range(d_sae):
        fj = f_t[j]
        for b in range(nb):
            keep = (fj[b] >= kth[b]) & (fj[b] > 0)
            fj[b] = fj[b] if keep else np.float32(0.0)
            count[b] += keep
    for b in range(nb):
        if count[b] > k:
            kept = 0
            for j in range(d_sae):
                if f_t[j, b] > kth[b]:
                    kept += 1
            for j in range(d_sae):
                if f_t[j, b] == kth[b]:
                    if kept < k:
                        kept += 1
                    else:
                        f_t[j, b] = 0.0


@njit(cache=True, fastmath=_FASTMATH)
def _add_small_by_long(w, x, out, init, start):
    """out (J, B) = start[j] + w (J, I) @ x (I, B) if init, else out += w @ x; float32, 4×4 tiles of w with the
    long axis B innermost (vectorised)."""
    n_out, n_in = w.shape
    nb = x.shape[1]
    j = 0
    while j + 4 <= n_out:
        o0, o1, o2, o3 = out[j], out[j + 1], out[j + 2], out[j + 3]
        i = 0
        if init:
            s0, s1, s2, s3 = start[j], start[j + 1], start[j + 2], start[j + 3]
            if n_in >= 4:
                x0, x1, x2, x3 = x[0], x[1], x[2], x[3]
                a0, a1, a2, a3 = w[j, 0], w[j, 1], w[j, 2], w[j, 3]
                b0, b1, b2, b3 = w[j + 1, 0], w[j + 1, 1], w[j + 1, 2], w[j + 1, 3]
                c0, c1, c2, c3 = w[j + 2, 0], w[j + 2, 1], w[j + 2, 2], w[j + 2, 3]
                d0, d1, d2, d3 = w[j + 3, 0], w[j + 3, 1], w[j + 3, 2], w[j + 3, 3]
                for b in range(nb):
                    v0, v1, v2, v3 = x0[b], x1[b], x2[b], x3[b]
                    o0[b] = s0 + a0 * v0 + a1 * v1 + a2 * v2 + a3 * v3
                    o1[b] = s1 + b0 * v0 + b1 * v1 + b2 * v2 + b3 * v3
                    o2[b] = s2 + c0 * v0 + c1 * v1 + c2 * v2 + c3 * v3
                    o3[b] = s3 + d0 * v0 + d1 * v1 + d2 * v2 + d3 * v3
                i = 4
            else:
                for b in range(nb):
                    o0[b] = s0
                    o1[b] = s1
                    o2[b] = s2
                    o3[b] = s3
        while i + 4 <= n_in:
            x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
            a0, a1, a2, a3 = w[j, i], w[j, i + 1], w[j, i + 2], w[j, i + 3]
            b0, b1, b2, b3 = w[j + 1, i], w[j + 1, i + 1], w[j + 1, i + 2], w[j + 1, i + 3]
            c0, c1, c2, c3 = w[j + 2, i], w[j + 2, i + 1], w[j + 2, i + 2], w[j + 2, i + 3]
            d0, d1, d2, d3 = w[j + 3, i], w[j + 3, i + 1], w[j + 3, i + 2], w[j + 3, i + 3]
            for b in range(nb):
                v0, v1, v2, v3 = x0[b], x1[b], x2[b], x3[b]
                o0[b] += a0 * v0 + a1 * v1 + a2 * v2 + a3 * v3
                o1[b] += b0 * v0 + b1 * v1 + b2 * v2 + b3 * v3
                o2[b] += c0 * v0 + c1 * v1 + c2 * v2 + c3 * v3
                o3[b] += d0 * v0 + d1 * v1 + d2 * v2 + d3 * v3
            i += 4
        while i < n_in:
            xi = x[i]
            a0, b0, c0, d0 = w[j, i], w[j + 1, i], w[j + 2, i], w[j + 3, i]
            for b in range(nb):
                v = xi[b]
                o0[b] += a0 * v
                o1[b] += b0 * v
                o2[b] += c0 * v
                o3[b] += d0 * v
            i += 1
        j += 4
    while j < n_out:
        o = out[j]
        if init:
            for b in range(nb):
                o[b] = start[j]
        for i in range(n_in):
            xi = x[i]
            wji = w[j, i]
            for b in range(nb):
                o[b] += wji * xi[b]
        j += 1


@njit(cache=True, fastmath=_FASTMATH)
def _add_long_by_long(x, y, out):
    """out (I, J) += x (I, B) @ y (J, B)ᵀ: float32 sums over B (4×4 tiles, vectorised) added into the float64 out."""
    n_x, nb = x.shape
    n_y = y.shape[0]
    zero = np.float32(0.0)
    i = 0
    while i + 4 <= n_x:
        x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
        j = 0
        while j + 4 <= n_y:
            y0, y1, y2, y3 = y[j], y[j + 1], y[j + 2], y[j + 3]
            s00, s01, s02, s03 = zero, zero, zero, zero
            s10, s11, s12, s13 = zero, zero, zero, zero
            s20, s21, s22, s23 = zero, zero, zero, zero
            s30, s31, s32, s33 = zero, zero, zero, zero
            for b in range(nb):
                a0, a1, a2, a3 = x0[b], x1[b], x2[b], x3[b]
                c0, c1, c2, c3 = y0[b], y1[b], y2[b], y3[b]
                s00 += a0 * c0
                s01 += a0 * c1
                s02 += a0 * c2
                s03 += a0 * c3
                s10 += a1 * c0
                s11 += a1 * c1
                s12 += a1 * c2
                s13 += a1 * c3
                s20 += a2 * c0
                s21 += a2 * c1
                s22 += a2 * c2
                s23 += a2 * c3
                s30 += a3 * c0
                s31 += a3 * c1
                s32 += a3 * c2
                s33 += a3 * c3
            out[i, j] += s00
            out[i, j + 1] += s01
            out[i, j + 2] += s02
            out[i, j + 3] += s03
            out[i + 1, j] += s10
            out[i + 1, j + 1] += s11
            out[i + 1, j + 2] += s12
            out[i + 1, j + 3] += s13
            out[i + 2, j] += s20
            out[i + 2, j + 1] += s21
            out[i + 2, j + 2] += s22
            out[i + 2, j + 3] += s23
            out[i + 3, j] += s30
            out[i + 3, j + 1] += s31
            out[i + 3, j + 2] += s32
            out[i + 3, j + 3] += s33
            j += 4
        while j < n_y:
            yj = y[j]
            s0, s1, s2, s3 = zero, zero, zero, zero
            for b in range(nb):
                c = yj[b]
                s0 += x0[b] * c
                s1 += x1[b] * c
                s2 += x2[b] * c
                s3 += x3[b] * c
            out[i, j] += s0
            out[i + 1, j] += s1
            out[i + 2, j] += s2
            out[i + 3, j] += s3
            j += 1
        i += 4
    while i < n_x:
        xi = x[i]
        for j in range(n_y):
            yj = y[j]
            s = zero
            for b in range(nb):
                s += xi[b] * yj[b]
            out[i, j] += s
        i += 1


@njit(cache=True, fastmath=_FASTMATH)
def _add_block_stats(e_t, f_t, out):
    """out += (Σ e², Σ f, number of f > 0) over a block (float32 within the block)."""
    ef = e_t.ravel()
    sq = np.float32(0.0)
    for q in range(ef.shape[0]):
        sq += ef[q] * ef[q]
    ff = f_t.ravel()
    l1 = np.float32(0.0)
    active = 0
    for q in range(ff.shape[0]):
        l1 += ff[q]
        active += ff[q] > 0
    out[0] += sq
    out[1] += l1
    out[2] += active


@njit(cache=True, fastmath=_FASTMATH, parallel=True)
def _gradient_slots(x_t, w_enc, b_enc, w_dec, b_dec, topk, k, mu, with_stats, block, g_we, g_wd, g_be, g_e, sums):
    """Per row chunk c and model r: Σ cᵀh (d_in, d_sae), Σ fᵀe, Σ h, Σ e and, if asked, the stats.

    With c = x − b_dec, e = x̂ − x and h = (eW_decᵀ + mu) ⊙ [f > 0], the loss gradient is α times these sums
    (α = 2/(N·d_in), mu = λ/α); see `gradients`. Everything is feature-major (rows last): each block of rows
    is a few small products with the rows innermost (summed in float32 over the block) plus elementwise
    passes, for every model while the block is in cache; blocks are added in float64.
    """
    d_in, n = x_t.shape
    n_models, d_sae = b_enc.shape
    n_blocks = (n + block - 1) // block
    for ch in prange(ROW_CHUNKS):
        # Chunks are whole blocks, so only the data's last block is partial.
        lo = min(n, (n_blocks * ch) // ROW_CHUNKS * block)
        hi = min(n, (n_blocks * (ch + 1)) // ROW_CHUNKS * block)
        g_we[ch] = 0.0
        g_wd[ch] = 0.0
        g_be[ch] = 0.0
        g_e[ch] = 0.0
        sums[ch] = 0.0
        mu_row = np.full(d_sae, mu, np.float32)
        we_t = np.empty((n_models, d_sae, d_in), np.float32)
        wd_t = np.empty((n_models, d_in, d_sae), np.float32)
        for r in range(n_models):
            we_t[r] = w_enc[r].T
            wd_t[r] = w_dec[r].T
        c_t = np.empty((d_in, block), np.float32)
        f_t = np.empty((d_sae, block), np.float32)
        e_t = np.empty((d_in, block), np.float32)
        h_t = np.empty((d_sae, block), np.float32)
        for r0 in range(lo, hi, block):
            nb = min(block, hi - r0)
            if nb < block:
                c_t = np.empty((d_in, nb), np.float32)
                f_t = np.empty((d_sae, nb), np.float32)
                e_t = np.empty((d_in, nb), np.float32)
                h_t = np.empty((d_sae, nb), np.float32)
            for r in range(n_models):
                wd = w_dec[r]
                be = b_enc[r]
                bd = b_dec[r]
                for i in range(d_in):
                    ci = c_t[i]
                    ei = e_t[i]
                    xi = x_t[i, r0:r0 + nb]
                    bi = bd[i]
                    for b in range(nb):
                        v = xi[b] - bi
                        ci[b] = v
                        ei[b] = -v
                _add_small_by_long(we_t[r], c_t, f_t, True, be)
                if topk:
                    _keep_topk(f_t, k)
                else:
                    for j in range(d_sae):
                        fj = f_t[j]
                        for b in range(nb):
                            fj[b] = max(fj[b], np.float32(0.0))
                _add_small_by_long(wd_t[r], f_t, e_t, False, be)
                for i in range(d_in):
                    ei = e_t[i]
                    s_e = np.float32(0.0)
                    for b in range(nb):
                        s_e += ei[b]
                    g_e[ch, r, i] += s_e
                _add_small_by_long(wd, e_t, h_t, True, mu_row)
                for j in range(d_sae):
                    hj = h_t[j]
                    fj = f_t[j]
                    s_h = np.float32(0.0)
                    for b in range(nb):
                        v = hj[b] if fj[b] > 0 else np.float32(0.0)
                        hj[b] = v
                        s_h += v
                    g_be[ch, r, j] += s_h
                if with_stats:
                    _add_block_stats(e_t, f_t, sums[ch, r])
                _add_long_by_long(c_t, h_t, g_we[ch, r])
                _add_long_by_long(f_t, e_t, g_wd[ch, r])


@njit(cache=True)
def _reduce_slots(w_enc, alpha, g_we, g_wd, g_be, g_e, sums, out_we, out_be, out_wd, out_bd, out_sums):
    """Sum each model's chunks in chunk order and scale by α into BatchedSAE's layouts (float32)."""
    n_models, d_in, d_sae = w_enc.shape
    for r in range(n_models):
        acc_we = g_we[0, r].copy()
        acc_wd = g_wd[0, r].copy()
        acc_be = g_be[0, r].copy()
        acc_e = g_e[0, r].copy()
        acc_s = sums[0, r].copy()
        for ch in range(1, ROW_CHUNKS):
            acc_we += g_we[ch, r]
            acc_wd += g_wd[ch, r]
            acc_be += g_be[ch, r]
            acc_e += g_e[ch, r]
            acc_s += sums[ch, r]
        for j in range(d_sae):
            out_be[r, j] = alpha * acc_be[j]
            for i in range(d_in):
                out_wd[r, j, i] = alpha * acc_wd[j, i]
        for i in range(d_in):
            for j in range(d_sae):
                out_we[r, i, j] = alpha * acc_we[i, j]
        for i in range(d_in):
            back = 0.0
            for j in range(d_sae):
                back += np.float64(w_enc[r, i, j]) * acc_be[j]
            out_bd[r, i] = alpha * (acc_e[i] - back)
        out_sums[r] = acc_s


@njit(cache=True)
def _adam_update(param, grad, exp_avg, exp_avg_sq, weight1, beta2, weight2, bias2_sqrt, eps, neg_step_size):
    """torch.optim.Adam's elementwise update in float32, in place, in its order of operations.

    torch's CPU lerp and addcmul round a fused multiply-add once; a float32 product is exact in float64,
    so computing those two in float64 and rounding reproduces them.
    """
    p, g, m, v = param.ravel(), grad.ravel(), exp_avg.ravel(), exp_avg_sq.ravel()
    for q in range(p.shape[0]):
        gq = g[q]
        mq = np.float32(np.float64(weight1) * np.float64(gq - m[q]) + np.float64(m[q]))
        vq = np.float32(np.float64(weight2 * gq) * np.float64(gq) + np.float64(v[q] * beta2))
        m[q] = mq
        v[q] = vq
        p[q] += neg_step_size * mq / (np.sqrt(vq) / bias2_sqrt + eps)


def adam_update(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray, step: int,
                lr: float, betas: tuple[float, float], eps: float) -> None:
    """One Adam step (no weight decay, amsgrad or maximize) on contiguous float32 arrays in place, as
    torch.optim.Adam computes it; step counts this update (1 for the first)."""
    beta1, beta2 = betas
    f32 = np.float32
    _adam_update(param, grad, exp_avg, exp_avg_sq, f32(1 - beta1), f32(beta2), f32(1 - beta2),
                 f32((1 - beta2 ** step) ** 0.5), f32(eps), f32(-lr / (1 - beta1 ** step)))


def feature_major(x: np.ndarray) -> np.ndarray:
    """Data rows (N, d_in) as the kernel's contiguous float32 (d_in, N) layout; make it once per data set."""
    if x.ndim != 2 or x.shape[0] < 1:
        raise InputError(f"x: expected shape (N, d_in) with N >= 1, got {x.shape}")
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32).T)


def gradients(x_t: np.ndarray, w_enc: np.ndarray, b_enc: np.ndarray, w_dec: np.ndarray, b_dec: np.ndarray,
              arch: str, k: int | None, l1_coefficient: float, stats: bool = True) -> SAEGradients:
    """Full-batch gradient of mean((x̂ − x)²) + l1_coefficient·mean_b Σ_j f for R standard or TopK SAEs at once.

    x_t: the data from `feature_major`; parameters float32 in BatchedSAE's shapes. TopK keeps the k largest
    pre-activations that are > 0; among equal values at the k-th place the lower latent index wins.
    stats=False skips the per-model sums (they come back as None).
    """
    if arch not in KERNEL_ARCHS:
        raise InputError(f"arch: the compiled kernel covers {', '.join(KERNEL_ARCHS)}, not {arch!r}")
    n_models, d_in, d_sae = w_enc.shape
    if x_t.ndim != 2 or x_t.shape[0] != d_in or x_t.shape[1] < 1:
        raise InputError(f"x_t: expected feature-major shape ({d_in}, N) with N >= 1, got {x_t.shape}")
    expected = {"b_enc": (n_models, d_sae), "W_dec": (n_models, d_sae, d_in), "b_dec": (n_models, d_in)}
    for name, arr in (("b_enc", b_enc), ("W_dec", w_dec), ("b_dec", b_dec)):
        if arr.shape != expected[name]:
            raise InputError(f"{name}: expected shape {expected[name]}, got {arr.shape}")
    topk = arch == "topk"
    if topk and (k is None or not 1 <= k <= d_sae):
        raise InputError(f"k: topk needs 1 <= k <= d_sae={d_sae}, got k={k}")
    x_t, w_enc, b_enc, w_dec, b_dec = (np.ascontiguousarray(a, dtype=np.float32)
                                       for a in (x_t, w_enc, b_enc, w_dec, b_dec))
    n = x_t.shape[1]
    mu = np.float32(l1_coefficient * d_in / 2.0)  # λ/α with λ = l1_coefficient / N and α = 2/(N·d_in)
    g_we = np.empty((ROW_CHUNKS, n_models, d_in, d_sae))
    g_wd = np.empty((ROW_CHUNKS, n_models, d_sae, d_in))
    g_be = np.empty((ROW_CHUNKS, n_models, d_sae))
    g_e = np.empty((ROW_CHUNKS, n_models, d_in))
    sums = np.empty((ROW_CHUNKS, n_models, 3))
    with numba.parallel_chunksize(1):  # chunks go to whichever thread is free: a busy core must not stall the step
        _gradient_slots(x_t, w_enc, b_enc, w_dec, b_dec, topk, int(k or 1), mu, stats, ROW_BLOCK,
                        g_we, g_wd, g_be, g_e, sums)
    out_we = np.empty((n_models, d_in, d_sae), np.float32)
    out_be = np.empty((n_models, d_sae), np.float32)
    out_wd = np.empty((n_models, d_sae, d_in), np.float32)
    out_bd = np.empty((n_models, d_in), np.float32)
    totals = np.empty((n_models, 3))
    _reduce_slots(w_enc, 2.0 / (n * d_in), g_we, g_wd, g_be, g_e, sums, out_we, out_be, out_wd, out_bd, totals)
    if not stats:
        return SAEGradients(out_we, out_be, out_wd, out_bd)
    return SAEGradients(out_we, out_be, out_wd, out_bd, totals[:, 0].copy(), totals[:, 1].copy(), totals[:, 2].copy())
