"""The screen's per-entry error bound against float64 on adversarial rows, and the certified matcher
with a bfloat16 screen against scipy's dense solve (matching, PW-MCC and runner-ups)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saecore.certified import certified_assignment
from saecore.instances import (
    adversarial_pairs,
    below_bf16_pair,
    random_pair,
    realistic_pair,
    worst_rounding_rows,
)
from saecore.matching import match_decoders, solve_dense
from saecore.screening import bf16_fast, screen_bound, screen_dtype
from saecore.selection import select
from saecore.similarity import normalize_rows, similarity_blocks
from saecore.top_two import column_ceiling, exact_best_two, row_ceiling

SCREENS = [torch.bfloat16, torch.float32]


def unit(x: torch.Tensor) -> torch.Tensor:
    return normalize_rows(x)[0]


def screened(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype, sign: str = "signed") -> np.ndarray:
    """The similarity values the candidate pass sees (same blocks, same dtype)."""
    out = np.empty((len(a), len(b)))
    for start, block in similarity_blocks(a, b, sign, dtype, budget_bytes=4096):
        out[start:start + len(block)] = block.float().numpy()
    return out


def exact(a: torch.Tensor, b: torch.Tensor, sign: str = "signed") -> np.ndarray:
    s = a.double().numpy() @ b.double().numpy().T
    return np.abs(s) if sign == "abs" else s


def cases() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(11)
    worst = worst_rounding_rows(40, 768, seed=1)
    tiny = unit(torch.randn(20, 300, generator=g))
    tiny[:, ::3] = 1e-30  # products and partial sums below the smallest normal number
    one_hot = torch.eye(24, 96)
    twins_a, twins_b = below_bf16_pair(30, 128, seed=2)
    real_a, real_b = realistic_pair(300, 768, seed=5)
    return {
        "worst_rounding_same_rows": (worst, worst.clone()),
        "worst_rounding_negated": (worst, -worst),
        "worst_rounding_vs_random": (worst, unit(torch.randn(50, 768, generator=g))),
        "tiny_entries": (tiny, tiny.flip(0)),
        "exactly_representable": (one_hot, one_hot.roll(1, 0)),
        "twins_below_resolution": (twins_a, twins_b),
        "realistic": (unit(real_a), unit(real_b)),
    }


@pytest.mark.parametrize("dtype", SCREENS, ids=str)
@pytest.mark.parametrize("sign", ["signed", "abs"])
@pytest.mark.parametrize("name", sorted(cases()))
def test_every_screened_entry_is_within_its_bound(name, sign, dtype):
    a, b = cases()[name]
    bound = screen_bound(a, b, dtype)
    got, want = screened(a, b, dtype, sign), exact(a, b, sign)
    rows, cols = np.indices(got.shape)
    radius = bound.radius(got, rows, cols)
    assert np.all(np.abs(got - want) <= radius), f"worst excess {np.max(np.abs(got - want) - radius):.3g}"
    assert np.abs(got).max() <= bound.largest and radius.max() <= bound.widest  # what the rescans' margin uses


def test_the_bound_is_nearly_reached_by_worst_case_rounding():
    """All entries rounding the same way to bfloat16: the error is most of the bound (so a missing term
    would show up above), and measuring each row's rounding keeps real rows far from the worst case."""
    worst = worst_rounding_rows(40, 768, seed=3)
    bound = screen_bound(worst, worst, torch.bfloat16)
    got, want = screened(worst, worst, torch.bfloat16), exact(worst, worst)
    diag = np.arange(40)
    used = np.abs(got - want)[diag, diag] / bound.radius(got[diag, diag], diag, diag)
    assert used.max() > 0.6
    a, b = realistic_pair(200, 768, seed=1)
    real = screen_bound(unit(a), unit(b), torch.bfloat16)
    assert real.row_err.max() < 0.6 * 2.0 ** -8  # measured rounding of real rows: well under the worst case
    assert 0.002 < real.widest < 0.009 and screen_bound(unit(a), unit(b), torch.float32).widest < 1e-4


@pytest.mark.parametrize("dtype", SCREENS, ids=str)
def test_ceilings_bound_every_entry_left_out_of_a_screen(dtype):
    a, b = (unit(x) for x in realistic_pair(150, 64, seed=4, n_b=170, split_frac=0.2))
    sel = select(a, b, "signed", 5, 4096, c=3, dtype=dtype)
    bound = screen_bound(a, b, dtype)
    s = exact(a, b)
    out = np.ones_like(s, bool)
    np.put_along_axis(out, sel.row_idx.numpy(), False, axis=1)
    assert np.all(s[out] <= np.broadcast_to(row_ceiling(sel, bound)[:, None], s.shape)[out])
    out = np.ones_like(s, bool)
    np.put_along_axis(out.T, sel.col_idx.numpy().T, False, axis=1)
    assert np.all(s[out] <= np.broadcast_to(column_ceiling(sel, bound)[None, :], s.shape)[out])


def as_map(rows: np.ndarray, cols: np.ndarray) -> dict[int, int]:
    return dict(zip(rows.tolist(), cols.tolist()))


def both(a: torch.Tensor, b: torch.Tensor, sign: str = "signed", **kw):
    return solve_dense(a, b, sign), certified_assignment(a, b, sign, dense_fallback_cells=0, screen="bfloat16", **kw)


@pytest.mark.parametrize("copies,k", [(2, 1), (2, 16), (6, 1), (10, 1), (10, 4)])
def test_rows_equal_below_bfloat16_are_told_apart_exactly(copies, k):
    """Each row's optimal partner has copies - 1 look-alikes with the same bfloat16 rows: the screen cannot
    tell them apart, the exact check must. Once look-alikes outnumber the candidates a row keeps (4k),
    the screen's bound cannot clear the row and it is rescanned; when most rows are like that, the
    rescans switch to float32 (the fall-back)."""
    a, b = below_bf16_pair(30, 96, seed=k, copies=copies)
    ref, ours = both(a, b, k=k)
    assert ours.info["certified"] is True and ours.info["screen"]["dtype"] == "bfloat16"
    assert as_map(ours.rows, ours.cols) == as_map(ref.rows, ref.cols)
    assert as_map(ours.rows, ours.cols) == {i: int(np.nonzero((b == a[i]).all(1))[0][0]) for i in range(len(a))}
    assert abs(ours.scores.mean() - ref.scores.mean()) < 1e-9
    assert (ours.info["recomputed"]["rows_rescanned"] > 0) == (copies > 4 * k)
    assert ours.info["screen"]["rescan"] == ("float32" if ours.info["screen"]["uncleared"] > 0.25 else "bfloat16")
    if copies > 4 * k:
        assert ours.info["screen"]["rescan"] == "float32"


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", ["realistic", "random", "rectangular"])
@pytest.mark.parametrize("sign", ["signed", "abs"])
def test_bfloat16_screen_reaches_the_dense_matching_and_runner_ups(kind, seed, sign):
    if kind == "realistic":
        a, b = realistic_pair(400, 64, seed, split_frac=0.2)
    elif kind == "random":
        a, b = random_pair(300, 300, 48, seed)
    else:
        a, b = realistic_pair(250, 64, seed, n_b=380)
    a_n, b_n = unit(a), unit(b)
    ref, ours = both(a_n, b_n, sign)
    assert ours.info["certified"] is True
    assert as_map(ours.rows, ours.cols) == as_map(ref.rows, ref.cols)
    assert abs(ours.scores.mean() - ref.scores.mean()) < 1e-9
    s = exact(a_n, b_n, sign)
    rv, ri, cv, ci = ours.top2
    for sim, vals, idx in ((s, rv, ri), (s.T, cv, ci)):
        order = np.argsort(-sim, axis=1, kind="stable")[:, :2]
        np.testing.assert_array_equal(idx, order)
        np.testing.assert_allclose(vals, np.take_along_axis(sim, order, 1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(adversarial_pairs(0)))
def test_adversarial_cases_with_a_bfloat16_screen(name):
    a, b = adversarial_pairs(5)[name]
    ref, ours = both(unit(a), unit(b), k=1)
    assert ours.info["certified"] is True
    assert abs(ours.scores.mean() - ref.scores.mean()) < 1e-9


def test_exact_best_two_equals_a_stable_sort_of_float64():
    a, b = below_bf16_pair(40, 32, seed=6)
    (rv, ri, cv, ci), info = exact_best_two(a, b)
    s = exact(a, b)
    for sim, vals, idx in ((s, rv, ri), (s.T, cv, ci)):
        order = np.argsort(-sim, axis=1, kind="stable")[:, :2]
        np.testing.assert_array_equal(idx, order)
        np.testing.assert_allclose(vals, np.take_along_axis(sim, order, 1), rtol=0, atol=1e-12)


def test_runner_ups_through_match_decoders_are_float64_exact():
    a, b = realistic_pair(500, 32, seed=8, n_b=520)
    ref = match_decoders(a, b, "signed", "include", device="cpu", method="dense")
    ours = match_decoders(a, b, "signed", "include", device="cpu", method="certified")
    np.testing.assert_array_equal(ours.runner_up_a, ref.runner_up_a)
    np.testing.assert_array_equal(ours.runner_up_b, ref.runner_up_b)
    np.testing.assert_allclose(ours.runner_up_score_a, ref.runner_up_score_a, rtol=0, atol=1e-12)


def test_screen_choice():
    cpu = torch.device("cpu")
    assert screen_dtype("float32", cpu) == torch.float32 and screen_dtype("bfloat16", cpu) == torch.bfloat16
    assert screen_dtype("auto", cpu) == (torch.bfloat16 if bf16_fast(cpu) else torch.float32)
    with pytest.raises(ValueError, match="screen must be one of"):
        screen_dtype("int8", cpu)
