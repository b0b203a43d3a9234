"""Top-k per row and top-2 per column of similarity blocks, in one read of each block.

On the CPU a compiled scan (a bounded min-heap per row, a running best-two per column) replaces
torch.topk, which sorts more than it needs to and, along columns, walks memory with a large
stride; on a GPU torch.topk is already fast and is used as is. Ties keep the lower index first.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from saecore.similarity import DEFAULT_BLOCK_BYTES, similarity_blocks

# Columns per parallel task in the column scan: large enough to amortise, small enough to balance.
COL_CHUNK = 2048


@njit(cache=True, inline="always")
def _sift_down(hv, hi, size, pos):
    """Restore the min-heap (smallest value at 0; at equal values the larger index nearer the top)."""
    while True:
        left = 2 * pos + 1
        if left >= size:
            return
        child = left
        right = left + 1
        if right < size and (hv[right] < hv[left] or (hv[right] == hv[left] and hi[right] > hi[left])):
            child = right
        if hv[pos] < hv[child] or (hv[pos] == hv[child] and hi[pos] > hi[child]):
            return
        hv[pos], hv[child] = hv[child], hv[pos]
        hi[pos], hi[child] = hi[child], hi[pos]
        pos = child


@njit(cache=True, parallel=True)
def _rows_topk(s, k, out_val, out_idx):
    """out_val/out_idx[i] = the k largest entries of s[i], sorted descending (ties: lower index first)."""
    r, m = s.shape
    for i in prange(r):
        row = s[i]
        hv = np.empty(k, np.float32)
        hi = np.empty(k, np.int64)
        for t in range(k):
            hv[t] = row[t]
            hi[t] = t
        for pos in range(k // 2 - 1, -1, -1):
            _sift_down(hv, hi, k, pos)
        floor = hv[0]
        for j in range(k, m):
            v = row[j]
            if v > floor:
                hv[0] = v
                hi[0] = j
                _sift_down(hv, hi, k, 0)
                floor = hv[0]
        # Pop ascending into the output from the back: descending order, lower index first on ties.
        size = k
        while size > 0:
            size -= 1
            out_val[i, size] = hv[0]
            out_idx[i, size] = hi[0]
            hv[0] = hv[size]
            hi[0] = hi[size]
            _sift_down(hv, hi, size, 0)


@njit(cache=True, parallel=True)
def _cols_top2(s, row_offset, best_v, best_i, next_v, next_i):
    """Fold block s (rows row_offset…) into each column's running best and second-best row."""
    r, m = s.shape
    n_chunks = (m + COL_CHUNK - 1) // COL_CHUNK
    for c in prange(n_chunks):
        lo = c * COL_CHUNK
        hi = min(m, lo + COL_CHUNK)
        for i in range(r):
            row = s[i]
            gi = row_offset + i
            for j in range(lo, hi):
                v = row[j]
                if v > next_v[j]:
                    if v > best_v[j]:
                        next_v[j] = best_v[j]
                        next_i[j] = best_i[j]
                        best_v[j] = v
                        best_i[j] = gi
                    else:
                        next_v[j] = v
                        next_i[j] = gi


@njit(cache=True, parallel=True)
def _count_above(mat, idx, u, v, floor, counts):
    """counts[t] = how many j have (mat[idx[t], j] - u[t]) - v[j] > floor, in float32."""
    for t in prange(idx.shape[0]):
        row = mat[idx[t]]
        ut = u[t]
        c = 0
        for j in range(row.shape[0]):
            if (row[j] - ut) - v[j] > floor:
                c += 1
        counts[t] = c


@njit(cache=True, parallel=True)
def _fill_above(mat, idx, u, v, floor, offsets, out_t, out_j):
    """Write the (t, j) counted by _count_above, row t's from offsets[t] on, j ascending."""
    for t in prange(idx.shape[0]):
        row = mat[idx[t]]
        ut = u[t]
        p = offsets[t]
        for j in range(row.shape[0]):
            if (row[j] - ut) - v[j] > floor:
                out_t[p] = t
                out_j[p] = j
                p += 1


def entries_above(mat: np.ndarray, idx: np.ndarray, u: np.ndarray, v: np.ndarray, floor: float,
                  limit: int | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(t, j) with (mat[idx[t], j] - u[t]) - v[j] > floor, evaluated in float32 like the same torch
    expression, in one read of the rows and without temporaries; ordered by t, then j. None when
    there are more than `limit`."""
    u32, v32, f32 = u.astype(np.float32), v.astype(np.float32), np.float32(floor)
    idx = np.asarray(idx, np.int64)
    counts = np.empty(len(idx), np.int64)
    _count_above(mat, idx, u32, v32, f32, counts)
    offsets = np.zeros(len(idx), np.int64)
    np.cumsum(counts[:-1], out=offsets[1:])
    total = int(counts.sum())
    if limit is not None and total > limit:
        return None
    out_t, out_j = np.empty(total, np.int64), np.empty(total, np.int64)
    _fill_above(mat, idx, u32, v32, f32, offsets, out_t, out_j)
    return out_t, out_j


class BlockSelector:
    """Accumulates, over row blocks of an n × m similarity matrix, each row's top-k (k <= m) and each
    column's top-2 rows (fewer when n < 2); values float32 as the blocks give them."""

    def __init__(self, n: int, m: int, k: int, device: torch.device):
        self.n, self.m, self.k = n, m, min(k, m)
        self.device = device
        self.row_val = torch.empty((n, self.k), dtype=torch.float32, device=device)
        self.row_idx = torch.empty((n, self.k), dtype=torch.long, device=device)
        self.kc = min(2, n)
        self.col_val = torch.full((2, m), -torch.inf, dtype=torch.float32, device=device)
        self.col_idx = torch.full((2, m), -1, dtype=torch.long, device=device)

    def add(self, start: int, s: torch.Tensor) -> None:
        """Fold rows start … start + len(s) of the matrix into the running selections."""
        stop = start + len(s)
        if self.device.type == "cpu" and s.dtype == torch.float32:
            s_np = s.contiguous().numpy()
            _rows_topk(s_np, self.k, self.row_val[start:stop].numpy(), self.row_idx[start:stop].numpy())
            cv, ci = self.col_val.numpy(), self.col_idx.numpy()
            _cols_top2(s_np, start, cv[0], ci[0], cv[1], ci[1])
            return
        self.row_val[start:stop], self.row_idx[start:stop] = s.topk(self.k, dim=1)
        bv, bi = s.topk(min(2, len(s)), dim=0)
        merged_v = torch.cat([self.col_val, bv])
        merged_i = torch.cat([self.col_idx, bi + start])
        top_v, pos = merged_v.topk(2, dim=0)
        self.col_val, self.col_idx = top_v, merged_i.gather(0, pos)

    def top2(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(row_vals (n, ≤2), row_idx, col_vals (m, ≤2), col_idx) as numpy, best first."""
        kr = min(2, self.k)
        return (self.row_val[:, :kr].cpu().numpy().copy(), self.row_idx[:, :kr].cpu().numpy().copy(),
                self.col_val[:self.kc].T.cpu().numpy().copy(), self.col_idx[:self.kc].T.cpu().numpy().copy())


def select(a_n: torch.Tensor, b_n: torch.Tensor, sign: str, k: int,
           budget_bytes: int = DEFAULT_BLOCK_BYTES) -> BlockSelector:
    """One blockwise pass over a_n · b_nᵀ: each row's top-k columns and each column's best two rows."""
    sel = BlockSelector(a_n.shape[0], b_n.shape[0], k, a_n.device)
    for start, s in similarity_blocks(a_n, b_n, sign, budget_bytes=budget_bytes):
        sel.add(start, s)
    return sel


def best_two_both_ways(a_n: torch.Tensor, b_n: torch.Tensor, sign: str = "signed"
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Best two partners of every row of a in b and of every row of b in a (see `BlockSelector.top2`)."""
    return select(a_n, b_n, sign, 2).top2()
