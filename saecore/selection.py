"""Top-k per row and top-c per column of similarity blocks, in one read of each block.

On the CPU a compiled scan (a bounded min-heap per row, a running best-c per column) replaces
torch.topk, which sorts more than it needs to and, along columns, walks memory with a large
stride; on a GPU torch.topk is already fast and is used as is. Ties keep the lower index first.
bfloat16 blocks are scanned as int16 order keys (numpy has no bfloat16): flipping the magnitude bits
of negative numbers and adding one makes integer order equal float order (-0 and +0 share key 0).
The scans read one by one only the runs of a row (and the groups of rows of a column) that can
matter, judged by their maxima, which torch's vectorised reductions take beforehand (3x faster on the
int16 bit patterns than on bfloat16 values; numba did not vectorise those loops on int16 keys).
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from numba import njit, prange, types
from numba.extending import overload

from saecore.similarity import DEFAULT_BLOCK_BYTES, similarity_blocks

# Columns per parallel task in the column scan: large enough to amortise, small enough to balance.
COL_CHUNK = 2048
# Row entries whose maximum is taken at once before the row scan looks at them one by one.
LANES = 64
# Rows whose column maxima are taken at once before the column scan looks at them one by one.
GROUP = 16


def _key(x):
    """Order key of a float32 value (itself) or of a bfloat16 bit pattern held as int16."""
    return x


@overload(_key, inline="always")
def _key_impl(x):
    if x == types.int16:
        return lambda x: (x ^ ((x >> 15) & 0x7FFF)) - (x >> 15)
    return lambda x: x


def _ceiling(x):
    """An order key at least the key of every entry of a run, from its maximum as `run_tops` or
    `group_tops` gives it."""
    return max(x, 0)


@overload(_ceiling, inline="always")
def _ceiling_impl(x):
    if x == types.int16:
        # The largest int16 bit pattern is the largest entry when that is >= +0 (whose keys equal their
        # bits); when it is negative, every entry is <= -0, whose key is 0.
        return lambda x: max(x, np.int16(0))
    return lambda x: max(x, np.float32(0.0))


def _raw(s: torch.Tensor) -> torch.Tensor:
    # bfloat16 blocks by their int16 bit patterns, whose max is 3x faster; `_ceiling` makes it a bound.
    return s.view(torch.int16) if s.dtype == torch.bfloat16 else s


def run_tops(s: torch.Tensor) -> np.ndarray:
    """Maximum of each row's runs of LANES entries (the tail shorter than LANES left out), by torch's
    vectorised reduction, for `_ceiling`."""
    x = _raw(s)
    return x[:, :x.shape[1] // LANES * LANES].unflatten(1, (x.shape[1] // LANES, LANES)).amax(-1).numpy()


def group_tops(s: torch.Tensor) -> np.ndarray:
    """Maximum of each column's groups of GROUP rows (the last partial group left out), for `_ceiling`."""
    x = _raw(s)
    return x[:x.shape[0] // GROUP * GROUP].unflatten(0, (x.shape[0] // GROUP, GROUP)).amax(1).numpy()


def bf16_keys(block: torch.Tensor) -> np.ndarray:
    """A bfloat16 tensor's bit patterns as int16 (no copy), for the compiled scans."""
    return block.view(torch.int16).numpy()


def order_keys(bits: np.ndarray) -> np.ndarray:
    """int16 order keys of bfloat16 bit patterns (what the compiled scans compare)."""
    k = bits.astype(np.int32)
    return ((k ^ ((k >> 15) & 0x7FFF)) - (k >> 15)).astype(np.int16)


def from_keys(keys: np.ndarray) -> np.ndarray:
    """float32 values of int16 order keys (the inverse of `order_keys`; -0 comes back as +0)."""
    k = keys.astype(np.int32)
    k = k + (k >> 15)
    bits = (k ^ ((k >> 15) & 0x7FFF)).astype(np.uint16).astype(np.uint32) << 16
    return bits.view(np.float32)


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
def _rows_topk(s, run_top, k, out_val, out_idx, lowest):
    """out_val/out_idx[i] = the k largest entries of s[i], sorted descending (ties: lower index first);
    out_val holds order keys (see `_key`), `lowest` a key below every number's.

    run_top[i, c] bounds run c (entries c·LANES … c·LANES + LANES - 1) of row i from above (see
    `_ceiling`). Unless the k-th largest of those bounds (gate) is at most zero, k runs hold an entry
    at least the gate, so only runs whose bound reaches it can hold the top k, and only those are looked
    at one by one, in index order, through a bounded min-heap."""
    r, m = s.shape
    n_runs = run_top.shape[1]
    for i in prange(r):
        row = s[i]
        hv = np.empty_like(out_val[i])
        hi = np.empty(k, np.int64)
        ceil = np.empty(n_runs, hv.dtype)
        for c in range(n_runs):
            ceil[c] = _ceiling(run_top[i, c])
        gate = lowest
        if n_runs >= 2 * k:
            gate = np.partition(ceil, n_runs - k)[n_runs - k]
            if gate <= 0:
                gate = lowest
        size = 0
        for c in range(n_runs + 1):
            if c < n_runs and ceil[c] < gate:
                continue
            for t in range(c * LANES, min(m, (c + 1) * LANES)):
                v = _key(row[t])
                if size < k:
                    if v >= gate:
                        hv[size] = v
                        hi[size] = t
                        size += 1
                        if size == k:
                            for pos in range(k // 2 - 1, -1, -1):
                                _sift_down(hv, hi, k, pos)
                elif v > hv[0]:
                    hv[0] = v
                    hi[0] = t
                    _sift_down(hv, hi, k, 0)
        # Pop ascending into the output from the back: descending order, lower index first on ties.
        while size > 0:
            size -= 1
            out_val[i, size] = hv[0]
            out_idx[i, size] = hi[0]
            hv[0] = hv[size]
            hi[0] = hi[size]
            _sift_down(hv, hi, size, 0)


@njit(cache=True, parallel=True)
def _cols_topc(s, group_top, row_offset, vals, idx):
    """Fold block s (rows row_offset…) into each column's running best rows: vals/idx (c, m), best first,
    vals as order keys (see `_key`). group_top[g, j] bounds rows g·GROUP … g·GROUP + GROUP - 1 of column
    j from above (see `_ceiling`); a group that cannot beat the column's c-th best is not read."""
    r, m = s.shape
    c = vals.shape[0]
    n_groups = group_top.shape[0]
    n_chunks = (m + COL_CHUNK - 1) // COL_CHUNK
    for ch in prange(n_chunks):
        lo = ch * COL_CHUNK
        hi = min(m, lo + COL_CHUNK)
        for g in range(n_groups + 1):
            r0 = g * GROUP
            r1 = r if g == n_groups else r0 + GROUP
            for j in range(lo, hi):
                if g < n_groups and _ceiling(group_top[g, j]) <= vals[c - 1, j]:
                    continue
                for i in range(r0, r1):
                    v = _key(s[i, j])
                    if v > vals[c - 1, j]:
                        p = c - 1
                        while p > 0 and v > vals[p - 1, j]:
                            vals[p, j] = vals[p - 1, j]
                            idx[p, j] = idx[p - 1, j]
                            p -= 1
                        vals[p, j] = v
                        idx[p, j] = row_offset + i


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


@njit(cache=True, parallel=True)
def _keys_above(s, run_top, floor, fill, counts, offsets, out_t, out_j):
    """The (t, j) with key(s[t, j]) > floor[t] (order keys, see `_key`), reading only the runs whose bound
    (see `_ceiling`) is above the floor: counted into counts[t], or with fill written from offsets[t] on,
    j ascending."""
    n_runs = run_top.shape[1]
    for t in prange(s.shape[0]):
        row = s[t]
        f = floor[t]
        p = offsets[t] if fill else 0
        for r in range(n_runs + 1):
            if r < n_runs and _ceiling(run_top[t, r]) <= f:
                continue
            for j in range(r * LANES, min(row.shape[0], (r + 1) * LANES)):
                if _key(row[j]) > f:
                    if fill:
                        out_t[p] = t
                        out_j[p] = j
                    p += 1
        if not fill:
            counts[t] = p


def bf16_floor_keys(floor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each float floor rounded down to a bfloat16 number: (its order key, its float32 value). An entry
    whose key is above the key is above the value, and every entry above the floor is among them."""
    f32 = np.asarray(floor, np.float32)
    bits = f32.view(np.uint32).astype(np.uint64)
    down = np.where(f32 > 0, bits >> 16, (bits + 0xFFFF) >> 16).astype(np.uint16)  # towards -inf
    keys = order_keys(down.view(np.int16))
    return keys, from_keys(keys)


def bf16_entries_above(block: torch.Tensor, floor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(t, j, float32 values, floors used) of the entries of a bfloat16 CPU block above each row's floor
    (rounded down to bfloat16), read as order keys: no float32 copy of the block is made."""
    block = block.contiguous()
    keys, runs = bf16_keys(block), run_tops(block)
    kf, used = bf16_floor_keys(floor)
    counts, offsets = np.empty(len(keys), np.int64), np.zeros(len(keys), np.int64)
    none = np.zeros(0, np.int64)
    _keys_above(keys, runs, kf, False, counts, offsets, none, none)
    np.cumsum(counts[:-1], out=offsets[1:])
    total = int(counts.sum())
    t, j = np.empty(total, np.int64), np.empty(total, np.int64)
    _keys_above(keys, runs, kf, True, counts, offsets, t, j)
    return t, j, torch.from_numpy(keys[t, j]).view(torch.bfloat16).float().numpy(), used


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


@njit(cache=True, parallel=True)
def _mark_listed_above(e_row, e_col, e_val, want, u, v, floor, out):
    for e in prange(e_row.shape[0]):
        r = e_row[e]
        out[e] = want[r] and (e_val[e] - u[r]) - v[e_col[e]] > floor


def listed_above(e_row: np.ndarray, e_col: np.ndarray, e_val: np.ndarray, want: np.ndarray, u: np.ndarray,
                 v: np.ndarray, floor: float) -> np.ndarray:
    """Positions e of listed entries with want[e_row[e]] and (e_val[e] - u[e_row[e]]) - v[e_col[e]] > floor,
    in float32 like the same numpy expression, in one pass without temporaries."""
    out = np.empty(len(e_row), np.bool_)
    _mark_listed_above(e_row, e_col, e_val, want, u.astype(np.float32), v.astype(np.float32), np.float32(floor), out)
    return np.flatnonzero(out)


def distinct_keys(keys: np.ndarray, first: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """np.unique(keys) (and, with first=True, each distinct key's first index) by sorting: numpy 2.4's
    np.unique took 13.5 s on 8M int64 keys here, np.sort 0.2 s."""
    order = np.argsort(keys, kind="stable") if first else None
    ordered = keys[order] if first else np.sort(keys)
    new = np.ones(len(ordered), bool)
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    return ordered[new], (order[new] if first else None)


_KEY_FLOOR = {torch.float32: -np.inf, torch.bfloat16: np.iinfo(np.int16).min}  # below every key of a number


class BlockSelector:
    """Accumulates, over row blocks of an n × m similarity matrix, each row's top-k (k <= m) and each
    column's top-c rows (fewer when n < c); values as the blocks give them (float32 or bfloat16).

    compiled: scan float32/bfloat16 CPU blocks with the compiled kernels (else torch.topk, as on a GPU).
    """

    def __init__(self, n: int, m: int, k: int, device: torch.device, c: int = 2,
                 dtype: torch.dtype = torch.float32, compiled: bool | None = None):
        self.n, self.m, self.k, self.kc = n, m, min(k, m), min(c, n)
        self.device, self.dtype = device, dtype
        self.compiled = device.type == "cpu" and dtype in _KEY_FLOOR if compiled is None else compiled
        self.row_idx = torch.empty((n, self.k), dtype=torch.long, device=device)
        self.col_idx = torch.full((max(self.kc, 1), m), -1, dtype=torch.long, device=device)
        if self.compiled:
            key = np.float32 if dtype == torch.float32 else np.int16
            self._row_keys = np.empty((n, self.k), key)
            self._col_keys = np.full((max(self.kc, 1), m), _KEY_FLOOR[dtype], key)
        else:
            self._row_vals = torch.empty((n, self.k), dtype=dtype, device=device)
            self._col_vals = torch.full((max(self.kc, 1), m), -torch.inf, dtype=dtype, device=device)

    def add(self, start: int, s: torch.Tensor) -> None:
        """Fold rows start … start + len(s) of the matrix into the running selections."""
        stop = start + len(s)
        if self.compiled:
            s = s.contiguous()
            s_np = bf16_keys(s) if s.dtype == torch.bfloat16 else s.numpy()
            _rows_topk(s_np, run_tops(s), self.k, self._row_keys[start:stop], self.row_idx[start:stop].numpy(),
                       self._row_keys.dtype.type(_KEY_FLOOR[self.dtype]))
            if self.kc:
                _cols_topc(s_np, group_tops(s), start, self._col_keys, self.col_idx.numpy())
            return
        self._row_vals[start:stop], self.row_idx[start:stop] = s.topk(self.k, dim=1)
        if not self.kc:
            return
        bv, bi = s.topk(min(self.kc, len(s)), dim=0)
        merged_v = torch.cat([self._col_vals, bv])
        merged_i = torch.cat([self.col_idx, bi + start])
        # A stable sort keeps the earlier (lower) row first among equal values, as the compiled scan does.
        top_v, pos = merged_v.sort(dim=0, descending=True, stable=True)
        self._col_vals, self.col_idx = top_v[:self.kc], merged_i.gather(0, pos[:self.kc])

    def _values(self, keys_or_vals) -> np.ndarray:
        if not self.compiled:
            return keys_or_vals.float().cpu().numpy()
        return from_keys(keys_or_vals) if keys_or_vals.dtype == np.int16 else keys_or_vals.copy()

    @property
    def row_val(self) -> np.ndarray:
        """(n, k) float32: each row's k largest screened values, best first."""
        return self._values(self._row_keys if self.compiled else self._row_vals)

    @property
    def col_val(self) -> np.ndarray:
        """(c, m) float32: each column's c largest screened values, best first (-inf where n < c)."""
        vals = self._values(self._col_keys if self.compiled else self._col_vals)[:self.kc]
        vals[self.col_idx[:self.kc].cpu().numpy() < 0] = -np.inf
        return vals


def _load_scans(dtype: torch.dtype) -> None:
    """Load the compiled scans for `dtype` blocks on a 1 × 2 block (the first compiled call also pays
    numba's one-time runtime set-up, ~0.5 s)."""
    BlockSelector(1, 2, 1, torch.device("cpu"), 1, dtype).add(0, torch.zeros((1, 2), dtype=dtype))


def select(a_n: torch.Tensor, b_n: torch.Tensor, sign: str, k: int,
           budget_bytes: int = DEFAULT_BLOCK_BYTES, c: int = 2, dtype: torch.dtype = torch.float32) -> BlockSelector:
    """One blockwise pass over a_n · b_nᵀ (inputs rounded to dtype): each row's top-k columns and each
    column's best c rows."""
    sel = BlockSelector(a_n.shape[0], b_n.shape[0], k, a_n.device, c, dtype)
    # The kernels load in a thread while the first block's matmul runs (torch releases the GIL).
    loading = threading.Thread(target=_load_scans, args=(dtype,)) if sel.compiled else None
    if loading is not None:
        loading.start()
    for start, s in similarity_blocks(a_n, b_n, sign, dtype, budget_bytes):
        if loading is not None:
            loading.join()
            loading = None
        sel.add(start, s)
    return sel
