"""The certified sparse matcher must reach scipy's dense optimum on every input, and say it did."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saecore.certified import WIDE_FACTOR, certified_assignment
from saecore.instances import adversarial_pairs, duplicate_rows_pair, random_pair, realistic_pair, tied_pair, with_zero_rows
from saecore.matching import choose_method, match_decoders, solve_dense
from saecore.similarity import normalize_rows


def unit(x: torch.Tensor) -> torch.Tensor:
    return normalize_rows(x)[0]


def as_map(rows: np.ndarray, cols: np.ndarray) -> dict[int, int]:
    return dict(zip(rows.tolist(), cols.tolist()))


def solve_both(a: torch.Tensor, b: torch.Tensor, sign: str = "signed", **kw):
    a_n, b_n = unit(a), unit(b)
    return solve_dense(a_n, b_n, sign), certified_assignment(a_n, b_n, sign, dense_fallback_cells=0, **kw)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("shape", [(40, 40), (30, 55), (55, 30)])
@pytest.mark.parametrize("sign", ["signed", "abs"])
def test_random_pairs_reach_the_dense_optimum_and_matching(seed, shape, sign):
    ref, ours = solve_both(*random_pair(shape[0], shape[1], 12, seed), sign, k=2)
    assert ours.info["certified"] is True
    assert abs(ours.scores.sum() - ref.scores.sum()) < 1e-6
    assert as_map(ours.rows, ours.cols) == as_map(ref.rows, ref.cols)


@pytest.mark.parametrize("seed", range(4))
def test_realistic_pairs_with_splits_reach_the_dense_matching(seed):
    ref, ours = solve_both(*realistic_pair(150, 24, seed, n_b=170, split_frac=0.2), k=2)
    assert ours.info["certified"] is True
    assert as_map(ours.rows, ours.cols) == as_map(ref.rows, ref.cols)
    assert np.allclose(ours.scores, ref.scores[np.argsort(ref.rows)][np.searchsorted(np.sort(ref.rows), ours.rows)])


@pytest.mark.parametrize("name", sorted(adversarial_pairs(0)))
@pytest.mark.parametrize("sign", ["signed", "abs"])
def test_adversarial_cases_reach_the_dense_objective(name, sign):
    a, b = adversarial_pairs(3)[name]
    ref, ours = solve_both(a, b, sign, k=1)
    assert ours.info["certified"] is True
    assert len(ours.rows) == min(len(a), len(b)) == len(set(ours.cols.tolist()))
    assert abs(ours.scores.mean() - ref.scores.mean()) < 1e-9


@pytest.mark.parametrize("maker", [tied_pair, duplicate_rows_pair])
def test_tied_optima_give_equal_objective(maker):
    ref, ours = solve_both(*maker(64, 5, seed=1), k=1)
    assert abs(ours.scores.sum() - ref.scores.sum()) < 1e-9


@pytest.mark.parametrize("dead", ["include", "exclude"])
@pytest.mark.parametrize("sign", ["signed", "abs"])
def test_zero_rows_through_match_decoders(dead, sign):
    a, b = realistic_pair(80, 16, seed=5, n_b=90)
    a, b = with_zero_rows(a, 9, seed=1), with_zero_rows(b, 4, seed=2)
    ref = match_decoders(a, b, sign, dead, device="cpu", method="dense")
    ours = match_decoders(a, b, sign, dead, device="cpu", method="certified")
    assert ours.info["method"] == "certified" and ours.info["certified"] is True
    assert ours.n_matched == ref.n_matched == (80 if dead == "include" else 71)
    assert abs(ours.mcc - ref.mcc) < 1e-9
    if dead == "exclude":
        assert np.array_equal(ours.partner_a, ref.partner_a)


def test_missing_optimal_edges_are_found_by_repair_rounds():
    a, b = realistic_pair(120, 16, seed=11, split_frac=0.3)
    a_n, b_n = unit(a), unit(b)
    s = (a_n.double() @ b_n.double().T).numpy()
    ref = solve_dense(a_n, b_n, "signed")
    top = np.argsort(-s, axis=1)[:, :WIDE_FACTOR * 1]
    col_best = s.argmax(axis=0)
    outside = [(i, j) for i, j in zip(ref.rows, ref.cols)
               if j not in top[i] and col_best[j] != i and i != j]
    assert outside, "the first candidate graph must lack an optimal edge for this test to mean anything"
    ours = certified_assignment(a_n, b_n, "signed", k=1, dense_fallback_cells=0)
    assert ours.info["rounds"] > 1
    assert ours.info["certified"] is True
    assert as_map(ours.rows, ours.cols) == as_map(ref.rows, ref.cols)


def test_info_reports_the_certificate_and_stage_times():
    a, b = realistic_pair(100, 16, seed=2)
    info = certified_assignment(unit(a), unit(b), k=2, dense_fallback_cells=0).info
    assert info["method"] == "certified" and info["certified"] is True and info["fallback"] is None
    assert info["k"] == 2 and info["rounds"] >= 1 and info["edges"] > 0
    assert {"candidates", "edge_scores", "solve", "certify"} <= set(info["seconds"])


def test_independent_dictionaries_fall_back_to_dense_when_small():
    a, b = random_pair(300, 300, 32, seed=4)
    ref = solve_dense(unit(a), unit(b), "signed")
    ours = certified_assignment(unit(a), unit(b), k=1)
    assert ours.info["fallback"] == "dense" and ours.info["certified"] is True
    assert abs(ours.scores.sum() - ref.scores.sum()) < 1e-9


def test_auto_uses_certified_only_for_large_problems():
    assert choose_method(100, 100) == "dense"
    assert choose_method(20000, 20000) == "certified"


@pytest.mark.parametrize("shape", [(120, 150), (150, 120)])
def test_rectangular_warm_started_repairs_stay_exact(shape):
    rounds = []
    for seed in range(3):
        ref, ours = solve_both(*realistic_pair(shape[0], 24, seed, n_b=shape[1], split_frac=0.3), k=1)
        assert ours.info["certified"] is True
        assert as_map(ours.rows, ours.cols) == as_map(ref.rows, ref.cols)
        rounds.append(ours.info["rounds"])
    assert max(rounds) > 1


@pytest.mark.parametrize("shape", [(300, 300), (250, 320), (320, 250)])
@pytest.mark.parametrize("dead", ["include", "exclude"])
def test_runner_ups_from_the_candidate_pass_equal_the_separate_pass(shape, dead):
    a, b = realistic_pair(shape[0], 24, seed=3, n_b=shape[1])
    a, b = with_zero_rows(a, 5, seed=1), with_zero_rows(b, 3, seed=2)
    ref = match_decoders(a, b, "signed", dead, device="cpu", method="dense")
    ours = match_decoders(a, b, "signed", dead, device="cpu", method="certified")
    assert abs(ours.mcc - ref.mcc) < 1e-9
    for side in ("a", "b"):
        ru_ref, ru = getattr(ref, f"runner_up_{side}"), getattr(ours, f"runner_up_{side}")
        partner_ref, partner = getattr(ref, f"partner_{side}"), getattr(ours, f"partner_{side}")
        same_partner = partner_ref == partner
        assert same_partner.mean() > 0.95
        assert np.array_equal(ru[same_partner], ru_ref[same_partner])
        np.testing.assert_allclose(getattr(ours, f"runner_up_score_{side}")[same_partner],
                                   getattr(ref, f"runner_up_score_{side}")[same_partner], atol=1e-6)


def test_certified_assignment_reports_each_sides_best_two():
    a, b = realistic_pair(200, 16, seed=4, n_b=260)
    a_n, b_n = unit(a), unit(b)
    s = (a_n @ b_n.T).numpy()
    for x, y, sim in ((a_n, b_n, s), (b_n, a_n, s.T)):  # the second call puts the larger side on the rows
        rv, ri, cv, ci = certified_assignment(x, y, dense_fallback_cells=0).top2
        np.testing.assert_array_equal(ri, np.argsort(-sim, axis=1, kind="stable")[:, :2])
        np.testing.assert_array_equal(ci, np.argsort(-sim.T, axis=1, kind="stable")[:, :2])
        np.testing.assert_allclose(rv, -np.sort(-sim, axis=1)[:, :2], atol=1e-6)
        np.testing.assert_allclose(cv, -np.sort(-sim.T, axis=1)[:, :2], atol=1e-6)


@pytest.mark.parametrize("sign", ["signed", "abs"])
def test_edge_scores_equal_float64_dot_products(sign):
    from saecore.matching import pair_scores

    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(300, 771, generator=g), torch.randn(200, 771, generator=g)  # d_in not a multiple of the vector width
    rows = torch.randint(0, 300, (5000,), generator=g).numpy()
    cols = torch.randint(0, 200, (5000,), generator=g).numpy()
    want = (a[rows].double() * b[cols].double()).sum(1).numpy()
    want = np.abs(want) if sign == "abs" else want
    np.testing.assert_allclose(pair_scores(a, b, rows, cols, sign), want, rtol=0, atol=1e-11)


@pytest.mark.parametrize("cache_bytes", [0, 4 * 40 * 25])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("sign", ["signed", "abs"])
def test_uncached_rows_and_crowded_rows_still_reach_the_dense_matching(cache_bytes, k, sign):
    """No (or a tiny) row cache makes the certificate recompute its rows; k=1 on random dictionaries makes
    rows hold more candidates than the scan keeps (its top-k fallback)."""
    for seed in range(3):
        ref, ours = solve_both(*random_pair(40, 50, 6, seed), sign, k=k, cache_bytes=cache_bytes, block_bytes=4 * 50 * 7)
        assert ours.info["certified"] is True
        assert as_map(ours.rows, ours.cols) == as_map(ref.rows, ref.cols)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("shape", [(60, 60), (45, 70)])
@pytest.mark.parametrize("ties", [False, True])
def test_sparse_solver_reaches_scipys_sparse_optimum_with_feasible_duals(seed, shape, ties):
    """The candidate-graph solver alone (greedy start, row reduction, shortest paths) against scipy's
    sparse bipartite matching; integer scores make ties and price wars between rows common."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    from saecore.certified import _Graph, _SparseSolver

    n, m = shape
    rng = np.random.default_rng(seed)
    keep = rng.random((n, m)) < 0.15
    keep[np.arange(n), np.arange(n)] = True  # a full matching exists
    rows, cols = np.nonzero(keep)
    scores = rng.integers(-3, 4, len(rows)).astype(float) if ties else rng.standard_normal(len(rows))
    g = _Graph(n, m)
    g.add(rows.astype(np.int64), cols.astype(np.int64), scores)
    solver = _SparseSolver(n, m)
    solver.solve(g)
    got = g.scores[np.searchsorted(g.keys, np.arange(n) * m + solver.row2col)].sum()
    # scipy minimises and drops explicit zeros: shift every score to a positive cost.
    ref_r, ref_c = min_weight_full_bipartite_matching(csr_matrix((10.0 - g.scores, (g.rows, g.cols)), shape=(n, m)))
    want = g.scores[np.searchsorted(g.keys, ref_r * m + ref_c)].sum()
    assert len(set(solver.row2col.tolist())) == n and got == pytest.approx(want, abs=1e-9)
    U, V = solver.potentials
    assert np.all(g.scores - U[g.rows] - V[g.cols] <= 1e-9) and np.all(V >= -1e-12)


def test_the_torch_certificate_scan_used_on_gpus_reaches_the_same_matching(monkeypatch):
    """On a GPU the certificate scan runs as torch ops; force that path here and compare with the dense optimum."""
    import saecore.certified as certified

    monkeypatch.setattr(certified, "_compiled", lambda block: False)
    for seed in range(3):
        ref, ours = solve_both(*realistic_pair(120, 16, seed, n_b=140, split_frac=0.2), k=2)
        assert ours.info["certified"] is True and ours.info["rounds"] >= 1
        assert as_map(ours.rows, ours.cols) == as_map(ref.rows, ref.cols)


_MEMORY_PROBE = """
import json, resource, sys, torch
from saecore.certified import certified_assignment
from saecore.instances import realistic_pair
from saecore.similarity import normalize_rows
torch.set_num_threads(2)
a, b = realistic_pair({n}, 64, seed=1)
a_n, b_n = normalize_rows(a)[0], normalize_rows(b)[0]
certified_assignment(a_n[:64], b_n[:64])  # compiled kernels loaded before the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sol = certified_assignment(a_n, b_n, block_bytes=16 << 20, cache_bytes=16 << 20, dense_fallback_cells=0)
extra = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
print(json.dumps({{"extra_mb": extra / 1024, "certified": sol.info["certified"], "rounds": sol.info["rounds"]}}))
"""


def test_memory_stays_bounded_by_the_block_budgets():
    """The large-n design at reduced scale: with 16 MB blocks and a 16 MB row cache, a 12,000² problem
    must stay far below one n x m float32 matrix (576 MB; float64: 1.15 GB)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE.format(n=12000)], capture_output=True, text=True,
                         cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["certified"] is True
    assert res["extra_mb"] < 200, res  # measured ~120 MB; default 256 MB budgets give ~270 MB


@pytest.mark.parametrize("family", ["topk_k32", "standard_l1_0.1"])
def test_real_demo_seed_pairs_reach_the_dense_matching(family):
    """Real cross-seed SAEs (the shipped demo runs, SmolLM2-135M, 1,536 latents)."""
    from pathlib import Path

    from saecore.loaders import load_run

    root = Path(__file__).resolve().parents[1] / "data" / "demo" / family
    a, b = (load_run(root / f"seed{s}", with_encoder=False).decoder for s in (0, 2))
    ref, ours = solve_both(a, b)
    assert ours.info["certified"] is True
    assert as_map(ours.rows, ours.cols) == as_map(ref.rows, ref.cols)
    assert abs(ours.scores.mean() - ref.scores.mean()) < 1e-9


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cache_bytes", [0, 20 * 300, 1 << 20])
def test_certificate_scan_equals_brute_force_as_potentials_move(cache_bytes, dtype):
    """The scan over kept rows, recomputed rows and uncached blocks finds exactly the pairs a dense
    evaluation in the scan's dtype finds, round after round, also when potentials fall below what a
    kept row covers."""
    from saecore.certified import _Scanner

    rng = np.random.default_rng(0)
    a_n, b_n = unit(torch.randn(60, 12, generator=torch.Generator().manual_seed(1))), unit(torch.randn(80, 12))
    s = (a_n.to(dtype) @ b_n.to(dtype).T).float().numpy()
    block = 4 * 80 * 9 * (3 if dtype == torch.bfloat16 else 1)
    scanner = _Scanner(a_n, b_n, "signed", block_bytes=block, cache_bytes=cache_bytes, dtype=dtype)
    U = np.sort(s, axis=1)[:, -3].astype(np.float64)
    margin = 1e-4
    for rnd in range(6):
        V = np.abs(rng.normal(0, 0.03, 80))
        t_row = U + rng.normal(0, 0.05, 60)  # some rows cleared by their threshold, others scanned
        got_r, got_c, overflow, n_rows = scanner.scan(U, V, t_row, margin, per_row=80, clear_margin=margin)
        unc = t_row + margin > U
        rc = (s - U.astype(np.float32)[:, None]) - V.astype(np.float32)[None, :]
        want = {(i, j) for i, j in zip(*np.nonzero((rc > np.float32(-margin)) & unc[:, None]))}
        assert not overflow and n_rows == unc.sum()
        assert set(zip(got_r.tolist(), got_c.tolist())) == want and len(got_r) == len(want)
        U = U + rng.normal(0, 0.04, 60) - (0.1 if rnd == 2 else 0.0)  # round 3: every potential falls


def test_column_adjacency_and_edge_merging_keep_their_definitions():
    """The counting-sort column adjacency equals a stable argsort by column, and merging edges into the
    graph equals re-sorting the union with the first score of each pair kept."""
    from saecore.certified import _Graph
    from saecore.selection import distinct_keys as _distinct
    from saecore.sparse_assignment import csc

    rng = np.random.default_rng(0)
    rows, cols = np.sort(rng.integers(0, 300, 5000)), rng.integers(0, 200, 5000)
    cptr, crows = csc(cols, rows, 200)
    order = np.argsort(cols, kind="stable")
    np.testing.assert_array_equal(crows, rows[order])
    np.testing.assert_array_equal(cptr, np.searchsorted(cols[order], np.arange(201)))

    g, first = _Graph(30, 20), {}
    for _ in range(25):
        r, c, s = rng.integers(0, 30, 40), rng.integers(0, 20, 40), rng.random(40)
        g.add(r, c, s)
        for key in zip(r.tolist(), c.tolist(), s.tolist()):
            first.setdefault(key[:2], key[2])
    assert np.all(np.diff(g.keys) > 0)
    assert dict(zip(zip(g.rows.tolist(), g.cols.tolist()), g.scores.tolist())) == first

    keys = rng.integers(0, 500, 3000)
    np.testing.assert_array_equal(_distinct(keys)[0], np.unique(keys))
    for got, want in zip(_distinct(keys, first=True), np.unique(keys, return_index=True)):
        np.testing.assert_array_equal(got, want)
