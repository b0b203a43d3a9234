"""Row top-k and column top-c of similarity blocks: the compiled scan against a plain sort."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numba import njit

from saecore.selection import BlockSelector


def reference(s: np.ndarray, k: int):
    """Stable descending sort: ties keep the lower index first."""
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    corder = np.argsort(-s.T, axis=1, kind="stable")[:, :2]
    return np.take_along_axis(s, order, 1), order, np.take_along_axis(s.T, corder, 1), corder


def top2(sel: BlockSelector):
    """(row vals, row idx, col vals, col idx) of each side's best two, best first, as numpy."""
    kr, kc = min(2, sel.k), min(2, sel.kc)
    return (sel.row_val[:, :kr], sel.row_idx[:, :kr].numpy(), sel.col_val[:kc].T, sel.col_idx[:kc].T.numpy())


def select(s: np.ndarray, k: int, block: int) -> BlockSelector:
    sel = BlockSelector(s.shape[0], s.shape[1], k, torch.device("cpu"))
    for start in range(0, s.shape[0], block):
        sel.add(start, torch.from_numpy(s[start:start + block]))
    return sel


@pytest.mark.parametrize("shape,k,block", [((50, 70), 5, 7), ((70, 50), 16, 70), ((33, 40), 40, 4), ((9, 5000), 64, 3),
                                           ((30, 4100), 8, 7), ((12, 9000), 64, 5)])  # the last two: gated runs
def test_compiled_scan_equals_a_stable_sort(shape, k, block):
    s = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    sel = select(s, k, block)
    rv, ri, cv, ci = reference(s, min(k, shape[1]))
    np.testing.assert_array_equal(sel.row_val, rv)
    np.testing.assert_array_equal(sel.row_idx.numpy(), ri)
    top = top2(sel)
    np.testing.assert_array_equal(top[2], cv)
    np.testing.assert_array_equal(top[3], ci)


def select_bf16(s: torch.Tensor, k: int, c: int, block: int, compiled: bool | None = None) -> BlockSelector:
    sel = BlockSelector(s.shape[0], s.shape[1], k, torch.device("cpu"), c, torch.bfloat16, compiled)
    for start in range(0, s.shape[0], block):
        sel.add(start, s[start:start + block])
    return sel


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("shape,k,c,block", [((50, 70), 5, 4, 7), ((70, 50), 16, 3, 70), ((6, 40), 40, 8, 4),
                                             ((20, 3000), 6, 8, 6)])
def test_bfloat16_blocks_select_as_a_stable_sort_of_their_values(shape, k, c, block, compiled):
    """bfloat16 blocks (int16 order keys in the compiled scan), with negatives, signed zeros, infinities
    and many ties, give the selection of a stable sort of the same bfloat16 values."""
    g = torch.Generator().manual_seed(7)
    s = (torch.randn(shape, generator=g) * 3).round().bfloat16()  # few distinct values: ties everywhere
    s[0, :3] = torch.tensor([-0.0, 0.0, -torch.inf])
    s[-1, -2:] = torch.tensor([torch.inf, -1e-38])
    sel = select_bf16(s, k, c, block, compiled)
    v = s.float().numpy()
    rv, ri, _, _ = reference(v, min(k, shape[1]))
    np.testing.assert_array_equal(sel.row_val, rv)
    if compiled:  # torch.topk does not promise the lower index first among ties
        np.testing.assert_array_equal(sel.row_idx.numpy(), ri)
    order = np.argsort(-v.T, axis=1, kind="stable")[:, :min(c, shape[0])]
    np.testing.assert_array_equal(sel.col_val, np.take_along_axis(v.T, order, 1).T)
    if compiled:
        np.testing.assert_array_equal(sel.col_idx.numpy(), order.T)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("block", [17, 40])
def test_run_and_group_bounds_never_skip_an_entry_of_the_top(dtype, block):
    """Rows and column groups that are mostly or wholly negative (their bound is clamped at zero), signed
    zeros, rows with fewer positive runs than k, and shapes that are no multiple of the run or group
    length: the gated scans still give a stable sort's selection."""
    from saecore.selection import GROUP, LANES

    g = torch.Generator().manual_seed(11)
    n, m, k, c = 53, 20 * LANES + 13, 5, 3
    s = -((torch.randn((n, m), generator=g).abs() * 2).round() / 4 + 0.25)  # < 0, with many ties
    for i in range(0, n, 2):  # even rows: positives in i % 7 runs (fewer than k for some)
        for r in range(i % 7):
            s[i, r * 3 * LANES + i] = 1.0 + r / 8
    s[:, 5 * LANES: 5 * LANES + LANES] = -3.0  # a run that is negative in every row
    s[GROUP: 2 * GROUP, :7] = -0.0  # a column group of signed zeros only
    s[-3:, -5:] = torch.tensor([0.5, -0.0, 0.0, 2.0, 2.0])
    s = s.to(dtype)
    sel = BlockSelector(n, m, k, torch.device("cpu"), c, dtype)
    assert sel.compiled
    for start in range(0, n, block):
        sel.add(start, s[start:start + block])
    v = s.float().numpy()
    rv, ri, _, _ = reference(v, k)
    np.testing.assert_array_equal(sel.row_val, rv)
    np.testing.assert_array_equal(sel.row_idx.numpy(), ri)
    order = np.argsort(-v.T, axis=1, kind="stable")[:, :c]
    np.testing.assert_array_equal(sel.col_val, np.take_along_axis(v.T, order, 1).T)
    np.testing.assert_array_equal(sel.col_idx.numpy(), order.T)


def test_order_keys_round_trip_every_bfloat16_value():
    from saecore.selection import _key, bf16_keys, from_keys, order_keys

    bits = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
    vals = bits.view(torch.bfloat16)
    finite = ~torch.isnan(vals)
    keys = order_keys(bits.numpy())
    compiled_key = njit(lambda x: _key(x))  # the flip the compiled scans apply
    np.testing.assert_array_equal(keys[::97], [compiled_key(x) for x in bits.numpy()[::97]])
    np.testing.assert_array_equal(from_keys(keys)[finite.numpy()], vals.float().numpy()[finite.numpy()])
    ordered = np.argsort(keys[finite.numpy()], kind="stable")
    f = vals.float().numpy()[finite.numpy()]
    assert np.all(np.diff(f[ordered]) >= 0)
    assert bf16_keys(vals).dtype == np.int16


@pytest.mark.parametrize("m", [80, 5000])
def test_ties_keep_the_lower_index(m):
    s = np.round(np.random.default_rng(1).standard_normal((60, m)), 0).astype(np.float32)  # few distinct values
    sel = select(s, 6, 11)
    rv, ri, cv, ci = reference(s, 6)
    np.testing.assert_array_equal(sel.row_idx.numpy(), ri)
    np.testing.assert_array_equal(top2(sel)[3], ci)


def test_a_single_row_has_one_best_row_per_column():
    s = np.arange(12, dtype=np.float32).reshape(1, 12)
    top = top2(select(s, 3, 1))
    assert top[1].tolist() == [[11, 10]] and top[2].shape == (12, 1) and (top[3] == 0).all()


def test_torch_path_used_on_gpus_gives_the_same_selection():
    # float64 blocks take the torch.topk path (the one CUDA uses); no ties here, so indices must agree.
    s = np.random.default_rng(2).standard_normal((45, 64))
    compiled = select(s.astype(np.float32), 7, 8)
    torch_path = BlockSelector(45, 64, 7, torch.device("cpu"))
    for start in range(0, 45, 8):
        torch_path.add(start, torch.from_numpy(s[start:start + 8]))
    for got, want in zip(top2(torch_path), top2(compiled)):
        np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_array_equal(torch_path.row_idx.numpy(), compiled.row_idx.numpy())


@pytest.mark.parametrize("sign", ["signed", "abs"])
@pytest.mark.parametrize("budget_rows", [1, 7, 50, 64])
def test_blocks_cover_the_matrix_once_in_order(sign, budget_rows):
    from saecore.similarity import dense_similarity, similarity_blocks

    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(50, 9, generator=g), torch.randn(33, 9, generator=g)
    got = [(start, s.clone()) for start, s in similarity_blocks(a, b, sign, budget_bytes=budget_rows * 33 * 4)]
    assert [start for start, _ in got] == list(range(0, 50, min(50, budget_rows)))
    torch.testing.assert_close(torch.cat([s for _, s in got]), dense_similarity(a, b, sign, torch.float32))


def test_entries_above_equal_the_float32_torch_expression():
    from saecore.selection import entries_above

    g = torch.Generator().manual_seed(11)
    mat = torch.randn(30, 40, generator=g).round(decimals=1)  # many values sit exactly on the floor
    idx = torch.randperm(30, generator=g)[:17].numpy()
    u = torch.randn(17, generator=g).round(decimals=1).double().numpy()
    v = torch.rand(40, generator=g).round(decimals=1).double().numpy()
    rc = mat[torch.as_tensor(idx)] - torch.as_tensor(u, dtype=torch.float32)[:, None]
    rc -= torch.as_tensor(v, dtype=torch.float32)[None, :]
    want_t, want_j = torch.nonzero(rc > -0.1, as_tuple=True)
    t, j = entries_above(mat.numpy(), idx, u, v, -0.1)
    np.testing.assert_array_equal(t, want_t.numpy())
    np.testing.assert_array_equal(j, want_j.numpy())
    assert entries_above(mat.numpy(), idx, u, v, -0.1, limit=len(t) - 1) is None
    assert entries_above(mat.numpy(), idx[:0], u[:0], v, -0.1)[0].shape == (0,)


def test_bfloat16_entries_above_their_floor_equal_a_float_comparison():
    """Floors are rounded down to bfloat16 (never up), and the entries read as keys are exactly those whose
    value is above that rounded floor: a superset of the entries above the floor asked for."""
    from saecore.selection import bf16_entries_above, bf16_floor_keys

    g = torch.Generator().manual_seed(9)
    block = (torch.randn(40, 300, generator=g) * 0.3).bfloat16()
    floor = np.concatenate([np.linspace(-0.6, 0.6, 39), [0.0]]).astype(np.float32)
    floor[5] = float(block[5, 7].float())  # a floor equal to an entry: that entry is not above it
    # Runs whose bound is clamped at zero: a wholly negative row under a negative floor, a run of -0.
    block[10] = -block[10].abs() - 0.01
    floor[10] = float(block[10].float().max()) - 0.02
    block[11, 64:128] = -0.0
    floor[11] = -1e-30
    block[12, :] = -0.5
    block[12, 250] = 0.0
    floor[12] = -0.25
    t, j, vals, used = bf16_entries_above(block, floor)
    v = block.float().numpy()
    assert np.all(used <= floor) and np.array_equal(used, bf16_floor_keys(floor)[1])
    assert np.all(torch.tensor(used).bfloat16().float().numpy() == used)  # bfloat16 numbers
    want_t, want_j = np.nonzero(v > used[:, None])
    np.testing.assert_array_equal(t, want_t)
    np.testing.assert_array_equal(j, want_j)
    np.testing.assert_array_equal(vals, v[want_t, want_j])
    assert set(zip(*np.nonzero(v > floor[:, None]))) <= set(zip(t.tolist(), j.tolist()))
    assert {10, 11, 12} <= set(t.tolist())


def test_listed_entries_above_equal_the_float32_numpy_expression():
    from saecore.selection import listed_above

    rng = np.random.default_rng(4)
    n, m, e = 30, 50, 2000
    e_row, e_col = rng.integers(0, n, e), rng.integers(0, m, e)
    e_val = rng.standard_normal(e).astype(np.float32)
    u, v = rng.standard_normal(n) * 0.5, np.abs(rng.standard_normal(m)) * 0.5
    want = rng.random(n) < 0.6
    u[e_row[0]] = float(e_val[0]) - float(np.float32(v[e_col[0]]))  # a reduced cost of (about) zero
    for floor in (-0.3, 0.0, 0.4):
        rc = (e_val - u.astype(np.float32)[e_row]) - v.astype(np.float32)[e_col]
        np.testing.assert_array_equal(listed_above(e_row, e_col, e_val, want, u, v, floor),
                                      np.flatnonzero(want[e_row] & (rc > np.float32(floor))))
