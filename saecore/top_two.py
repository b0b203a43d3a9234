"""Each row's and each column's exact best two partners (float64 values), from a screened pass and its bound.

Exactly scored candidates settle a row's best two when the second best among them is above the row's
ceiling: a proven upper bound on every entry that is not a candidate (`ScreenBound.row_ceiling` of the
last screened value kept). Rows not settled that way (near-ties below the screen's resolution) are
recomputed in float32, and every entry within two float32 rounding margins of the second largest is
scored in float64. Columns are the same problem with the sides swapped. Ties keep the lower index.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from saecore.matching import Top2, pair_scores
from saecore.screening import ScreenBound, rounding_margin, screen_bound
from saecore.selection import BlockSelector, distinct_keys, select
from saecore.similarity import DEFAULT_BLOCK_BYTES, similarity_blocks

# Rows and columns each side keeps in the screen used by `exact_best_two` (more settle without a recompute).
SCREEN_DEPTH = 4


@njit(cache=True)
def _fold(rows, cols, scores, vals, idx):
    """Insert every entry into its row's running best (vals, idx sorted by value, then lower index)."""
    width = vals.shape[1]
    for e in range(rows.shape[0]):
        i, j, v = rows[e], cols[e], scores[e]
        last = idx[i, width - 1]
        if v < vals[i, width - 1] or (v == vals[i, width - 1] and last >= 0 and j > last):
            continue
        p = width - 1
        while p > 0 and (v > vals[i, p - 1] or (v == vals[i, p - 1] and (idx[i, p - 1] < 0 or j < idx[i, p - 1]))):
            vals[i, p] = vals[i, p - 1]
            idx[i, p] = idx[i, p - 1]
            p -= 1
        vals[i, p] = v
        idx[i, p] = j


def best_two_of(n: int, rows: np.ndarray, cols: np.ndarray, scores: np.ndarray, ceiling: np.ndarray, width: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vals (n, width), idx (n, width), settled (n,)) from exactly scored candidate entries (distinct pairs):
    each row's `width` best candidates, and whether nothing outside them can beat or tie the last
    (its value is above the row's ceiling). Unfilled slots hold -inf and -1."""
    vals, idx = np.full((n, width), -np.inf), np.full((n, width), -1, np.int64)
    if width == 0:
        return vals, idx, np.ones(n, bool)
    _fold(np.asarray(rows, np.int64), np.asarray(cols, np.int64), np.asarray(scores, np.float64), vals, idx)
    return vals, idx, (idx[:, width - 1] >= 0) & (vals[:, width - 1] > ceiling)


def recompute_best_two(x: torch.Tensor, y: torch.Tensor, rows: np.ndarray, sign: str, width: int,
                       block_bytes: int = DEFAULT_BLOCK_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """Exact best `width` columns of the given rows of x·yᵀ: float32 rows, then every entry within two
    float32 margins of the width-th largest scored in float64 (that set holds every entry tying or
    beating the exact width-th, since at most width - 1 entries can be more than a margin above it)."""
    margin = rounding_margin(x.shape[1], 0.0, x.device)
    vals = np.full((len(rows), width), -np.inf)
    idx = np.full((len(rows), width), -1, np.int64)
    sub = x[torch.as_tensor(rows, device=x.device)]
    for start, block in similarity_blocks(sub, y, sign, budget_bytes=block_bytes):
        floor = block.topk(width, dim=1).values[:, -1:] - 2 * margin
        ti, cj = torch.nonzero(block >= floor, as_tuple=True)
        ti, cj = ti.cpu().numpy() + start, cj.cpu().numpy()
        exact = pair_scores(x, y, rows[ti], cj, sign)
        v, i, _ = best_two_of(len(rows), ti, cj, exact, np.full(len(rows), -np.inf), width)
        got = distinct_keys(ti)[0]
        vals[got], idx[got] = v[got], i[got]
    return vals, idx


def settle_side(x: torch.Tensor, y: torch.Tensor, sign: str, rows: np.ndarray, cols: np.ndarray,
                scores: np.ndarray, ceiling: np.ndarray, block_bytes: int = DEFAULT_BLOCK_BYTES
                ) -> tuple[np.ndarray, np.ndarray, int]:
    """Exact best two of every row of x·yᵀ from candidates and ceilings; also how many rows were recomputed."""
    n, width = x.shape[0], min(2, y.shape[0])
    vals, idx, settled = best_two_of(n, rows, cols, scores, ceiling, width)
    redo = np.nonzero(~settled)[0]
    if len(redo):
        vals[redo], idx[redo] = recompute_best_two(x, y, redo, sign, width, block_bytes)
    return vals, idx, len(redo)


def _distinct_pairs(rows: np.ndarray, cols: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    keys = distinct_keys(rows.astype(np.int64) * m + cols)[0]
    return np.divmod(keys, m)


def column_candidates(sel: BlockSelector) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of each column's screened best rows (the unfilled slots of tiny problems left out)."""
    idx = sel.col_idx[:sel.kc].cpu().numpy()
    cols = np.broadcast_to(np.arange(sel.m), idx.shape)
    ok = idx >= 0
    return idx[ok], cols[ok]


def column_ceiling(sel: BlockSelector, bound: ScreenBound) -> np.ndarray:
    """Upper bound on every entry of each column outside its screened best rows (-inf when none is outside)."""
    if sel.kc >= sel.n:
        return np.full(sel.m, -np.inf)
    return bound.col_ceiling(sel.col_val[sel.kc - 1], np.arange(sel.m))


def row_ceiling(sel: BlockSelector, bound: ScreenBound) -> np.ndarray:
    """Upper bound on every entry of each row outside its screened top-k (-inf when none is outside)."""
    if sel.k >= sel.m:
        return np.full(sel.n, -np.inf)
    return bound.row_ceiling(sel.row_val[:, sel.k - 1], np.arange(sel.n))


def exact_best_two(a_n: torch.Tensor, b_n: torch.Tensor, sign: str = "signed", depth: int = SCREEN_DEPTH,
                   block_bytes: int = DEFAULT_BLOCK_BYTES) -> tuple[Top2, dict]:
    """Exact best two partners of every row of a in b and of every row of b in a, values in float64,
    from one float32 screen; info counts the rows and columns that had to be recomputed."""
    sel = select(a_n, b_n, sign, depth, block_bytes, c=depth)
    bound = screen_bound(a_n, b_n, torch.float32)
    n, m = sel.n, sel.m
    rr = np.repeat(np.arange(n, dtype=np.int64), sel.k)
    rc = sel.row_idx.cpu().numpy().reshape(-1)
    cr, cc = column_candidates(sel)
    r, c = _distinct_pairs(np.concatenate([rr, cr]), np.concatenate([rc, cc]), m)
    s = pair_scores(a_n, b_n, r, c, sign)
    top2, info = settle_both(a_n, b_n, sign, r, c, s, row_ceiling(sel, bound), column_ceiling(sel, bound), block_bytes)
    return top2, info


def settle_both(a_n: torch.Tensor, b_n: torch.Tensor, sign: str, rows: np.ndarray, cols: np.ndarray,
                scores: np.ndarray, row_ceil: np.ndarray, col_ceil: np.ndarray,
                block_bytes: int = DEFAULT_BLOCK_BYTES) -> tuple[Top2, dict]:
    """Both sides' exact best two from one set of exactly scored pairs and each side's ceilings."""
    rv, ri, n_rows = settle_side(a_n, b_n, sign, rows, cols, scores, row_ceil, block_bytes)
    cv, ci, n_cols = settle_side(b_n, a_n, sign, cols, rows, scores, col_ceil, block_bytes)
    return (rv, ri, cv, ci), {"rows_recomputed": n_rows, "cols_recomputed": n_cols}
