"""Exact matching for large dictionaries without the dense matrix: a sparse candidate graph solved
exactly, then a dual certificate checked against every pair of the full problem, repaired until it holds.

Maximisation form, n <= m rows (the smaller side is put on the rows). The sparse solver returns
potentials U (rows, free) and V >= 0 (columns, 0 on unmatched ones) with U_i + V_j = s_ij on
matched pairs and s_ij - U_i - V_j <= 0 on candidate edges. If every excluded pair also satisfies
s_ij - U_i - V_j <= tol, then (U + tol, V) is dual feasible for the full problem, so the matching
is within n * tol of the optimum (tol = 1e-9 by default): that is the certificate.

The check over all n * m pairs is cheap because the candidate pass keeps each row's K-th best
similarity t_i: an excluded pair has s_ij <= t_i and V_j >= 0, so every row with t_i <= U_i is
certified wholesale. The few remaining rows (features without a counterpart, losers of a split)
are recomputed once and their entries near U_i kept (a few hundred per row), which later rounds
re-check without another matmul.
The candidate pass runs in bfloat16 where the hardware makes that faster (`saecore.screening`): its
values are trusted only up to a proven per-entry bound, which every exclusion (a row's threshold
t_i, the runner-ups) adds in. Rows it cannot clear are rescanned in the screen's dtype with that bound
in the margin (in float32 once a quarter of the rows stay uncleared), and the entries inside the margin
are re-evaluated in float64, so the result is certified for the float64 problem.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from saecore import sparse_assignment as sa
from saecore.matching import Assignment, Top2, pair_scores, solve_dense
from saecore.screening import exact_accumulation, rounding_margin, screen_bound, screen_dtype
from saecore.selection import bf16_entries_above, distinct_keys, entries_above, listed_above, select
from saecore.similarity import DEFAULT_BLOCK_BYTES, check_sign, similarity_blocks
from saecore.top_two import column_candidates, column_ceiling, exact_best_two, settle_both

DEFAULT_K = 16
# Rows without a standout best column keep WIDE_FACTOR * k candidates instead of k.
WIDE_FACTOR = 4
DEFAULT_TOL = 1e-9
# Largest n * m the dense fallback may use (its float64 matrix is then at most 2 GiB).
DENSE_FALLBACK_CELLS = 16384 * 16384
# Fraction of rows the first round's thresholds cannot certify beyond which a small enough problem
# goes to the dense solver (independent dictionaries: top-K lists carry no signal there).
FALLBACK_UNCERTIFIED_FRAC = 0.5
# Fraction of rows a low-precision screen leaves uncleared beyond which rows are rescanned in float32, whose
# narrower bound leaves far fewer entries to score exactly on near-duplicate dictionaries.
FLOAT32_RESCAN_FRAC = 0.25
# Memory for the kept entries of rows the first certificate pass could not clear, re-checked in later rounds.
DEFAULT_CACHE_BYTES = 2 * 1024 ** 3
# A kept row holds its entries within KEEP_SLACK + 2 margins of its potential: reusable while U_i drops
# by less than KEEP_SLACK.
KEEP_SLACK = 0.01
# Rows per column the candidate pass keeps, so that most columns' runner-ups are settled without a recompute.
COL_DEPTH = 8

Progress = Callable[[int, int, str], None]

class _Graph:
    """Candidate edges kept sorted by (row, col) (key row * m + col) with their float64 scores."""

    def __init__(self, n: int, m: int):
        self.n, self.m = n, m
        self.keys = np.zeros(0, np.int64)
        self.rows = np.zeros(0, np.int64)
        self.cols = np.zeros(0, np.int64)
        self.scores = np.zeros(0, np.float64)

    def _find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Insertion positions of keys and whether each is an edge already."""
        pos = np.searchsorted(self.keys, keys)
        found = pos < len(self.keys)
        found[found] = self.keys[pos[found]] == keys[found]
        return pos, found

    def missing(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Mask of the given pairs that are not edges yet."""
        return ~self._find(rows * self.m + cols)[1]

    def add(self, rows: np.ndarray, cols: np.ndarray, scores: np.ndarray) -> None:
        """Add edges (an existing edge keeps its score). Later rounds add a few thousand edges to millions,
        so they are merged in rather than everything re-sorted (0.48 s -> 0.14 s over a 65,536² solve)."""
        keys = rows * self.m + cols
        if len(keys) > 1 and not np.all(keys[1:] > keys[:-1]):
            keys, first = distinct_keys(keys, first=True)
            scores = scores[first]
        if len(self.keys):
            pos, found = self._find(keys)
            fresh = ~found
            keys = np.insert(self.keys, pos[fresh], keys[fresh])
            scores = np.insert(self.scores, pos[fresh], scores[fresh])
        self.keys, self.scores = keys, scores
        self.rows, self.cols = np.divmod(keys, self.m)


class _SparseSolver:
    """Shortest-augmenting-path state kept between rounds so added edges only re-route a few rows.

    The solver goes on from its own potentials; the certificate reads the smallest column potentials
    for the same matching (`potentials`). Warm-starting from those instead freed 25% more rows in
    round 2 (613 vs 493 at 65,536² realistic) and took twice as long (1.39 vs 0.75 s): they make many
    more edges tight, and each Dijkstra search crossed that plateau."""

    def __init__(self, n: int, m: int):
        self.n, self.m = n, m
        self.u = np.zeros(n)
        self.v = np.zeros(m)
        self.row2col = np.full(n, -1, np.int64)
        self.col2row = np.full(m, -1, np.int64)
        self.started = False
        self.freed = 0
        self._duals = (np.zeros(n), np.zeros(m))

    def solve(self, g: _Graph) -> None:
        indptr = sa.csr(g.rows, self.n)
        cost = -g.scores
        if not self.started:
            sa.greedy_init(indptr, g.cols, cost, self.u, self.v, self.row2col, self.col2row)
            sa.reduce_free_rows(indptr, g.cols, cost, self.u, self.v, self.row2col, self.col2row, len(g.cols))
            self.started = True
        else:
            cptr, crows = sa.csc(g.cols, g.rows, self.m)
            self.freed = sa.restore_feasibility(indptr, g.cols, cost, self.u, self.v, self.row2col, self.col2row,
                                                cptr, crows, self.n < self.m, 1e-12)
        bad = sa.augment_free_rows(indptr, g.cols, cost, self.u, self.v, self.row2col, self.col2row)
        if bad >= 0:
            raise RuntimeError(f"candidate graph has no full matching (row {bad}); the fallback edges should prevent this")
        self._duals = sa.min_column_potentials(indptr, g.cols, g.scores, self.row2col, self.col2row, -self.u, -self.v)

    @property
    def potentials(self) -> tuple[np.ndarray, np.ndarray]:
        """(U, V) in maximisation form: optimal duals of the graph with the smallest column potentials."""
        return self._duals


def _collect(rc: torch.Tensor, row_ids: torch.Tensor, margin: float, per_row: int):
    """(rows, cols, overflow) of the entries of a reduced-cost block above -margin, at most per_row a row
    on average (beyond that, each row's per_row largest and overflow=True)."""
    mask = rc > -margin
    count = int(mask.sum())
    if count == 0:
        return None
    overflow = count > per_row * rc.shape[0]
    if not overflow:
        ri, ci = torch.nonzero(mask, as_tuple=True)
    else:
        kk = min(per_row, rc.shape[1])
        vals, idx = rc.topk(kk, dim=1)
        keep = vals > -margin
        ri = torch.arange(rc.shape[0], device=rc.device)[:, None].expand(-1, kk)[keep]
        ci = idx[keep]
    return row_ids[ri].cpu().numpy(), ci.cpu().numpy(), overflow


def _compiled(block: torch.Tensor) -> bool:
    """Whether a block is scanned by the compiled CPU kernels (else by torch ops, as on a GPU)."""
    return block.device.type == "cpu"


class _Scanner:
    """Finds excluded pairs that may violate the certificate. Rows the thresholds cannot clear are few
    and recur from round to round: each is computed once and its entries above U_i - KEEP_SLACK - 2 * margin
    are kept (up to a byte budget), which suffices for every later round in which U_i has not dropped by
    more than KEEP_SLACK; only such rows are computed again."""

    def __init__(self, a_n: torch.Tensor, b_n: torch.Tensor, sign: str, block_bytes: int, cache_bytes: int,
                 dtype: torch.dtype = torch.float32):
        self.a_n, self.b_n, self.sign, self.dtype = a_n, b_n.to(dtype), sign, dtype
        # A low-precision block may be widened to float32 (GPU scans, over-budget rows): room for both copies.
        self.block_bytes = block_bytes if dtype == torch.float32 else block_bytes // 3
        self.n, self.m = a_n.shape[0], b_n.shape[0]
        self.max_entries = cache_bytes // 20  # row, column (int64) and value (float32) per kept entry
        self.floor = np.full(self.n, np.inf)  # kept row i holds all its entries > floor[i]; inf: not kept
        self.e_row = np.zeros(0, np.int64)
        self.e_col = np.zeros(0, np.int64)
        self.e_val = np.zeros(0, np.float32)
        self.rows_computed = 0

    def _blocks(self, rows: np.ndarray):
        """Yield (rows, similarity block) for `rows`, a bounded block at a time (each block valid until the next)."""
        a_rows = self.a_n[torch.as_tensor(rows, device=self.a_n.device)]
        for start, block in similarity_blocks(a_rows, self.b_n, self.sign, self.dtype, self.block_bytes):
            # The compiled CPU scans read bfloat16 blocks as they are; torch ops (GPUs) get float32.
            yield rows[start:start + len(block)], (block if _compiled(block) else block.float())

    def _entries(self, r: np.ndarray, block: torch.Tensor, floor: np.ndarray):
        """(rows, cols, values, floors) of the block's entries above each row's float32 floor (the floors a
        bfloat16 block used: rounded down to bfloat16)."""
        if _compiled(block) and block.dtype == torch.bfloat16:
            t, j, vals, used = bf16_entries_above(block, floor)
            return r[t], j, vals, used
        if _compiled(block):
            t, j = entries_above(block.numpy(), np.arange(len(r)), floor, np.zeros(self.m, np.float32), 0.0)
            return r[t], j, block.numpy()[t, j], floor
        ti, ji = torch.nonzero(block > torch.as_tensor(floor, device=block.device)[:, None], as_tuple=True)
        return r[ti.cpu().numpy()], ji.cpu().numpy(), block[ti, ji].cpu().numpy(), floor

    def _forget(self, rows: np.ndarray) -> None:
        """Drop the kept entries of rows that are about to be computed again."""
        stale = np.isfinite(self.floor[rows])
        if not stale.any():
            return
        drop = np.zeros(self.n, bool)
        drop[rows[stale]] = True
        self.floor[rows[stale]] = np.inf
        keep = ~drop[self.e_row]
        self.e_row, self.e_col, self.e_val = self.e_row[keep], self.e_col[keep], self.e_val[keep]

    def _scan_kept(self, rows: np.ndarray, U: np.ndarray, V: np.ndarray, margin: float, per_row: int):
        """(rows, cols, overflow) over the kept entries of `rows`, in float32 as the block scan computes it."""
        want = np.zeros(self.n, bool)
        want[rows] = True
        hit = listed_above(self.e_row, self.e_col, self.e_val, want, U, V, -margin)
        er, ec = self.e_row[hit], self.e_col[hit]
        if len(er) <= per_row * len(rows):
            return er, ec, False
        rc = (self.e_val[hit] - U.astype(np.float32)[er]) - V.astype(np.float32)[ec]
        order = np.lexsort((-rc, er))  # by row, largest reduced cost first
        er, ec = er[order], ec[order]
        rank = np.arange(len(er)) - np.searchsorted(er, er)
        return er[rank < per_row], ec[rank < per_row], True

    def _scan_block(self, r: np.ndarray, block: torch.Tensor, U: np.ndarray, V: np.ndarray, margin: float,
                    per_row: int):
        """(rows, cols, overflow) or None over a freshly computed block that could not be kept."""
        dev = block.device
        if _compiled(block):
            hit = entries_above(block.numpy(), np.arange(len(r)), U[r], V, -margin, per_row * len(r))
            if hit is not None:
                return r[hit[0]], hit[1], False
        rc = block - torch.as_tensor(U[r], dtype=torch.float32, device=dev)[:, None]
        rc -= torch.as_tensor(V, dtype=torch.float32, device=dev)[None, :]
        return _collect(rc, torch.as_tensor(r, device=dev), margin, per_row)

    def scan(self, U: np.ndarray, V: np.ndarray, t_row: np.ndarray, margin: float, per_row: int,
             clear_margin: float):
        """(rows, cols, overflow, rows_checked) of pairs with computed s - U - V > -margin (margin: the
        error of that value), over the rows whose threshold t_i (a bound on every excluded s_ij) is not
        below U_i by clear_margin."""
        empty = np.zeros(0, np.int64)
        unc_rows = np.nonzero(t_row + clear_margin > U)[0]
        if len(unc_rows) == 0:
            return empty, empty, False, 0
        # A kept list is complete for this round while U_i - 2 * margin stays above its floor (then no
        # entry left out can reach s - U - V > -margin in float32, since V >= 0).
        fresh = unc_rows[~(U[unc_rows] - 2 * margin >= self.floor[unc_rows])]
        self._forget(fresh)
        self.rows_computed += len(fresh)
        found, new, room = [], [], self.max_entries - len(self.e_row)
        for r, block in self._blocks(fresh):
            floor = (U[r] - (KEEP_SLACK + 2 * margin)).astype(np.float32)
            *got, used = self._entries(r, block, floor)
            if len(got[0]) <= room:  # kept for later rounds, scanned below with the other kept rows
                new.append(got)
                room -= len(got[0])
                self.floor[r] = used
            else:
                found.append(self._scan_block(r, block.float(), U, V, margin, per_row))
        if new:
            rows, cols, vals = zip(*new)
            self.e_row = np.concatenate([self.e_row, *rows])
            self.e_col = np.concatenate([self.e_col, *cols])
            self.e_val = np.concatenate([self.e_val, *vals])
        kept = unc_rows[np.isfinite(self.floor[unc_rows])]
        if len(kept):
            found.append(self._scan_kept(kept, U, V, margin, per_row))
        found = [f for f in found if f is not None]
        if not found:
            return empty, empty, False, len(unc_rows)
        return (np.concatenate([f[0] for f in found]).astype(np.int64),
                np.concatenate([f[1] for f in found]).astype(np.int64), any(f[2] for f in found), len(unc_rows))


def _verify_graph(g: _Graph, solver: _SparseSolver, tol: float) -> bool:
    """Exact float64 check of the sparse optimality conditions the certificate rests on."""
    U, V = solver.potentials
    if np.any(solver.row2col < 0) or np.any(V < -tol):
        return False
    if np.any(g.scores - U[g.rows] - V[g.cols] > tol):
        return False
    rows = np.arange(solver.n)
    matched = solver.row2col
    idx = np.searchsorted(g.keys, rows * g.m + matched)
    if np.any(np.abs(g.scores[idx] - U - V[matched]) > tol):
        return False
    free = solver.col2row < 0
    return not np.any(V[free] > tol)


def _dense_fallback(a_n: torch.Tensor, b_n: torch.Tensor, sign: str, info: dict, edges: int) -> Assignment:
    """The reference solver, for problems small enough where the candidate graph did not pay off."""
    sol = solve_dense(a_n, b_n, sign)
    info["seconds"]["dense_fallback"] = sum(sol.info["seconds"].values())
    info.update(certified=True, fallback="dense", edges=edges)
    top2, _ = exact_best_two(a_n, b_n, sign)
    return Assignment(sol.rows, sol.cols, sol.scores, info, top2)


def _best_two(a_n, b_n, sign, g: _Graph, sel, bound, t_row: np.ndarray, block_bytes: int) -> tuple[Top2, dict]:
    """Each side's exact best two: the graph's edges are exact and t_row bounds every other entry of a
    row; a column's screened best rows, scored too, and the screen's bound below them settle columns."""
    cr, cc = column_candidates(sel)
    new = g.missing(cr, cc)
    cr, cc = cr[new], cc[new]
    rows, cols = np.concatenate([g.rows, cr]), np.concatenate([g.cols, cc])
    scores = np.concatenate([g.scores, pair_scores(a_n, b_n, cr, cc, sign)])
    top2, info = settle_both(a_n, b_n, sign, rows, cols, scores, t_row, column_ceiling(sel, bound), block_bytes)
    info["scored"] = len(cr)
    return top2, info


def _swap(sol: Assignment) -> Assignment:
    order = np.argsort(sol.cols, kind="stable")
    top2 = None if sol.top2 is None else sol.top2[2:] + sol.top2[:2]
    return Assignment(sol.cols[order], sol.rows[order], sol.scores[order], sol.info, top2)


def certified_assignment(a_n: torch.Tensor, b_n: torch.Tensor, sign: str = "signed", k: int = DEFAULT_K,
                         tol: float = DEFAULT_TOL, max_rounds: int = 50,
                         dense_fallback_cells: int = DENSE_FALLBACK_CELLS,
                         block_bytes: int = DEFAULT_BLOCK_BYTES, cache_bytes: int = DEFAULT_CACHE_BYTES,
                         progress: Progress | None = None, screen: str = "auto") -> Assignment:
    """Exact maximum-similarity one-to-one matching of unit rows a_n to unit rows b_n (same device).

    Same optimum as the dense solver (within n * tol), memory O((n + m) * (d_in + k)) plus one
    similarity block. screen: dtype of the candidate pass ('auto': bfloat16 where it is fast).
    info: method, certified, k, rounds, edges, violations per round, seconds per stage, screen and its
    widest bound, what was recomputed, fallback ('dense' when independent dictionaries made the
    candidate graph useless and n*m is small). top2: each side's exact best two (float64 values).
    """
    check_sign(sign)
    if a_n.shape[0] > b_n.shape[0]:
        return _swap(certified_assignment(b_n, a_n, sign, k, tol, max_rounds, dense_fallback_cells, block_bytes,
                                          cache_bytes, progress, screen))
    n, m = a_n.shape[0], b_n.shape[0]
    seconds = {"candidates": 0.0, "edge_scores": 0.0, "solve": 0.0, "certify": 0.0, "runner_ups": 0.0}
    info = {"method": "certified", "certified": False, "k": 0, "rounds": 0, "edges": 0, "violations": [],
            "fallback": None, "seconds": seconds}
    if n == 0:
        info["certified"] = True
        return Assignment(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), info)
    k = max(1, min(k, m))
    info["k"] = k
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] += now - clock
        clock = now

    k_wide = min(m, WIDE_FACTOR * k)
    dtype = screen_dtype(screen, a_n.device)
    with exact_accumulation(a_n.device):
        sel = select(a_n, b_n, sign, k_wide, block_bytes, c=COL_DEPTH, dtype=dtype)
    bound = screen_bound(a_n, b_n, dtype)
    info["screen"] = {"dtype": str(dtype).removeprefix("torch."), "widest_bound": bound.widest}
    row_val, row_idx = sel.row_val, sel.row_idx.cpu().numpy()
    col_arg = sel.col_idx[0].cpu().numpy()
    # Rows without a standout best column (best < 2 × k-th: no counterpart, or one among several) keep
    # k_wide candidates; so does a row that is not its best column's best row, as it will likely lose
    # that column.
    wide = row_val[:, 0] < 2 * row_val[:, k - 1]
    wide |= col_arg[row_idx[:, 0]] != np.arange(n)
    scanner = _Scanner(a_n, b_n, sign, block_bytes, cache_bytes, dtype)
    # Rows are rescanned in the screen's dtype: its bound joins the float32 margin of every reduced cost.
    scan_err = bound.widest if dtype != torch.float32 else 0.0
    width = np.where(wide, k_wide, k)
    # t_i: a proven bound on every entry of row i outside its first width_i screened candidates.
    t_row = bound.row_ceiling(row_val[np.arange(n), width - 1], np.arange(n))
    t_row[width == m] = -np.inf
    keep = np.arange(k_wide)[None, :] < width[:, None]
    has_best = col_arg >= 0
    rows = np.concatenate([np.repeat(np.arange(n, dtype=np.int64), k_wide)[keep.flatten()], col_arg[has_best],
                           np.arange(n, dtype=np.int64)])
    cols = np.concatenate([row_idx[keep], np.nonzero(has_best)[0], np.arange(n, dtype=np.int64)])
    info["wide_rows"] = int(wide.sum())
    del row_val, row_idx
    rows, cols = np.divmod(distinct_keys(rows * m + cols)[0], m)
    lap("candidates")
    g = _Graph(n, m)
    g.add(rows, cols, pair_scores(a_n, b_n, rows, cols, sign))
    scored = len(rows)
    lap("edge_scores")

    solver = _SparseSolver(n, m)
    per_row = 4 * k
    d_in = a_n.shape[1]
    for rnd in range(1, max_rounds + 1):
        info["rounds"] = rnd
        solver.solve(g)
        lap("solve")
        U, V = solver.potentials
        if rnd == 1:
            uncleared = float(np.mean(t_row + rounding_margin(d_in, device=a_n.device) > U))
            info["screen"]["uncleared"] = uncleared
            if n * m <= dense_fallback_cells and uncleared > FALLBACK_UNCERTIFIED_FRAC:
                return _dense_fallback(a_n, b_n, sign, info, len(g.rows))
            if scan_err and uncleared > FLOAT32_RESCAN_FRAC:
                scanner, scan_err = _Scanner(a_n, b_n, sign, block_bytes, cache_bytes, torch.float32), 0.0
        margin = rounding_margin(d_in, float(np.abs(U).max() + np.abs(V).max()), a_n.device)
        cr, cc, overflow, n_rows = scanner.scan(U, V, t_row, margin + scan_err, per_row, margin)
        new = g.missing(cr, cc)
        cr, cc = cr[new], cc[new]
        lap("certify")
        cs = pair_scores(a_n, b_n, cr, cc, sign)
        scored += len(cr)
        lap("edge_scores")
        violating = int(np.sum(cs - U[cr] - V[cc] > tol))
        info["violations"].append(violating)
        info.setdefault("rows_rechecked", []).append(n_rows)
        if progress is not None:
            progress(rnd, max_rounds, f"round {rnd}: {violating} excluded pairs violate the certificate")
        if violating == 0 and not overflow:
            info["certified"] = _verify_graph(g, solver, tol)
            break
        if overflow and len(cr) == 0:
            per_row *= 4
        g.add(cr, cc, cs)
    info["edges"] = len(g.rows)
    if not info["certified"] and n * m <= dense_fallback_cells:
        return _dense_fallback(a_n, b_n, sign, info, len(g.rows))
    top2, redone = _best_two(a_n, b_n, sign, g, sel, bound, t_row, block_bytes)
    info["screen"]["rescan"] = str(scanner.dtype).removeprefix("torch.")
    info["recomputed"] = {"rows_rescanned": scanner.rows_computed, "pairs_float64": scored + redone.pop("scored"),
                          **redone}
    lap("runner_ups")
    rows = np.arange(n, dtype=np.int64)
    cols = solver.row2col.copy()
    idx = np.searchsorted(g.keys, rows * m + cols)
    return Assignment(rows, cols, g.scores[idx].copy(), info, top2)
