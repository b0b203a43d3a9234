"""Matching agrees with a plain float64 scipy reference and has the invariances the metric promises."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from saecore import InputError, match_decoders
from saecore.matching import match_from_arrays, match_to_arrays
from workspaces import related_decoders


def reference_mcc(a: torch.Tensor, b: torch.Tensor, absolute: bool = False) -> float:
    """Independent reference: float64 numpy cosine matrix + scipy on the dense matrix."""
    a = a.double().numpy()
    b = b.double().numpy()
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    s = an @ bn.T
    if absolute:
        s = np.abs(s)
    r, c = linear_sum_assignment(-s)
    return float(s[r, c].mean())


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("shape", [(40, 40, 8), (64, 50, 16), (30, 70, 5)])
def test_random_cases_match_reference(seed, shape):
    n, m, d = shape
    gen = torch.Generator().manual_seed(seed)
    a, b = torch.randn(n, d, generator=gen), torch.randn(m, d, generator=gen)
    match = match_decoders(a, b)
    assert match.n_matched == min(n, m)
    assert match.mcc == pytest.approx(reference_mcc(a, b), abs=1e-9)


def test_structured_pair_matches_reference_and_recovers_permutation():
    a, b = related_decoders(2, 200, 24, noise=0.05, seed=1)
    match = match_decoders(a, b)
    assert match.mcc == pytest.approx(reference_mcc(a, b), abs=1e-9)
    # Rows of b are a permutation of rows of a plus small noise: each partner must be the true one.
    s = torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T
    assert np.array_equal(match.partner_a, s.argmax(dim=1).numpy())


def test_abs_sign_matches_reference():
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(30, 6, generator=gen)
    b = torch.cat([-a[:20], torch.randn(10, 6, generator=gen)])
    signed, absolute = match_decoders(a, b), match_decoders(a, b, sign="abs")
    assert absolute.mcc == pytest.approx(reference_mcc(a, b, absolute=True), abs=1e-9)
    assert absolute.mcc > signed.mcc and absolute.sign == "abs"


def test_invariant_to_row_permutation_and_rescaling():
    a, b = related_decoders(2, 80, 12, noise=0.3, seed=2)
    base = match_decoders(a, b).mcc
    perm = torch.randperm(80, generator=torch.Generator().manual_seed(0))
    scales = torch.rand(80, 1, generator=torch.Generator().manual_seed(1)) * 10 + 0.1
    assert match_decoders(a[perm] * scales, b).mcc == pytest.approx(base, abs=1e-9)
    assert match_decoders(a, b[perm] * scales).mcc == pytest.approx(base, abs=1e-9)


def test_symmetric_in_its_arguments():
    a, b = related_decoders(2, 60, 10, noise=0.5, seed=3)
    assert match_decoders(a, b).mcc == pytest.approx(match_decoders(b, a).mcc, abs=1e-12)


def test_identical_runs_score_one():
    a = related_decoders(1, 50, 10)[0]
    m = match_decoders(a, a.clone())
    assert m.mcc == pytest.approx(1.0) and np.array_equal(m.partner_a, np.arange(50))


def test_zero_rows_include_scores_zero_and_exclude_drops_them():
    a, b = related_decoders(2, 20, 8, noise=0.01, seed=4)
    a[[0, 1]] = 0
    inc = match_decoders(a, b, dead="include")
    exc = match_decoders(a, b, dead="exclude")
    assert inc.dead_a == 2 and not np.isnan(inc.mcc)
    assert inc.score_a[0] == 0.0 and inc.score_a[1] == 0.0
    assert exc.n_matched == 18 and exc.partner_a[0] == -1 and np.isnan(exc.score_a[0])
    assert exc.mcc > inc.mcc
    assert inc.mcc == pytest.approx(exc.mcc * 18 / 20, abs=1e-6)


def test_rectangular_pairs_match_min_size():
    a, b = related_decoders(1, 30, 8)[0], related_decoders(1, 45, 8, seed=9)[0]
    m = match_decoders(a, b)
    assert m.n_matched == 30
    assert (m.partner_b >= 0).sum() == 30 and np.isnan(m.score_b).sum() == 15


def test_runner_up_is_best_other_candidate():
    a, b = related_decoders(2, 40, 10, noise=0.4, seed=6)
    m = match_decoders(a, b)
    s = (torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T).numpy()
    for i in range(40):
        row = s[i].copy()
        row[m.partner_a[i]] = -np.inf
        assert m.runner_up_a[i] == row.argmax()
        assert m.runner_up_score_a[i] == pytest.approx(row.max(), abs=1e-5)
    for j in range(40):
        col = s[:, j].copy()
        col[m.partner_b[j]] = -np.inf
        assert m.runner_up_b[j] == col.argmax()


def test_different_d_in_is_refused():
    with pytest.raises(InputError, match="different d_in: 8 vs 9"):
        match_decoders(torch.randn(5, 8), torch.randn(5, 9))


def test_unknown_sign_is_refused():
    with pytest.raises(ValueError, match="sign must be one of"):
        match_decoders(torch.randn(5, 8), torch.randn(5, 8), sign="squared")


def test_explicit_cuda_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        match_decoders(torch.randn(5, 8), torch.randn(5, 8), device="cuda")


def test_match_survives_its_storage_format():
    a, b = related_decoders(2, 30, 8, noise=0.3, seed=7)
    m = match_decoders(a, b)
    back = match_from_arrays(*match_to_arrays(m))
    assert back.mcc == m.mcc
    for f in ("rows", "cols", "partner_a", "partner_b", "runner_up_a", "runner_up_score_b"):
        np.testing.assert_array_equal(getattr(back, f), getattr(m, f))


def test_pairs_table_and_swapped_view():
    a, b = related_decoders(2, 25, 8, noise=0.3, seed=8)
    m = match_decoders(a, b)
    df = m.pairs()
    assert list(df.columns[:3]) == ["feature_a", "feature_b", "score"] and df["score"].is_monotonic_decreasing
    s = m.swapped()
    assert s.mcc == pytest.approx(m.mcc) and np.array_equal(s.partner_a, m.partner_b)


def test_unit_rows_do_not_depend_on_the_order_of_the_norm_sum():
    """A GPU sums a row's squares in another order than the CPU; the unit rows must not notice, or
    PW-MCC moves by ~1e-8 between devices. Permuting the columns reorders the sum the same way."""
    from saecore.matching import prepare
    from saecore.similarity import normalize_rows

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 768, generator=gen) * torch.rand(3000, 1, generator=gen) * 10
    perm = torch.randperm(768, generator=gen)
    unit = normalize_rows(x)[0]
    assert unit.dtype == torch.float32
    assert torch.equal(normalize_rows(x[:, perm])[0], unit[:, perm])
    assert torch.equal(prepare(x, device="cpu").unit, unit)


def test_d_in_mismatch_names_where_each_d_in_came_from(tmp_path):
    from saecore import load_run, match_runs
    from workspaces import write_gemmascope, write_saelens

    a = load_run(write_saelens(tmp_path / "sl", torch.randn(12, 8)))
    b = load_run(write_gemmascope(tmp_path / "gs", torch.randn(12, 6)))
    with pytest.raises(InputError) as err:
        match_runs(a, b)
    message = str(err.value)
    assert f"{a.meta.path} (d_in=8, from cfg.json 'd_in')" in message
    assert f"{b.meta.path} (d_in=6, from W_enc shape in params.npz)" in message


def test_d_in_mismatch_of_runs_without_a_source_still_reads_well():
    from dataclasses import replace

    from saecore.matching import d_in_origin
    from saecore.runs import RunMeta

    meta = RunMeta(name="r", path="/r", format="arrays", d_in=5, d_sae=7)
    assert d_in_origin(meta) == "d_in=5"
    assert d_in_origin(replace(meta, d_in_source="sidecar r.npy.json")) == "d_in=5, from sidecar r.npy.json"


def test_summarize_solves_says_how_each_matching_was_proven():
    from saecore.certified import certified_assignment
    from saecore.matching import summarize_solves
    from saecore.similarity import normalize_rows

    a, b = related_decoders(2, 300, 24, noise=0.3, seed=3)
    dense = match_decoders(a, b, method="dense").info
    sparse = match_decoders(a, b, method="certified").info
    assert summarize_solves([dense]).headline == "exact optimum"
    assert summarize_solves([dense]).detail.startswith(
        "Exact matching of the pair: scipy's assignment on the dense float64 cosine matrix; solved on cpu in ")
    both = summarize_solves([sparse, sparse])
    assert both.proven and both.headline == "certified optimum"
    text = both.detail
    rescored = 2 * sparse["recomputed"]["pairs_float64"]
    assert rescored > 0 and f"certified optimal by a dual certificate ({sparse['screen']['dtype']} screen, {rescored:,} pairs" in text
    assert text.startswith("Exact matching of all 2 pairs")
    mixed = summarize_solves([dense, sparse]).detail
    assert "1 by scipy's dense float64 assignment; 1 certified optimal" in mixed
    # One round on independent dictionaries with k=1 and no dense fallback leaves excluded pairs unproven.
    gen = torch.Generator().manual_seed(0)
    x, y = (normalize_rows(torch.randn(200, 16, generator=gen))[0] for _ in range(2))
    unproven = certified_assignment(x, y, k=1, max_rounds=1, dense_fallback_cells=0).info
    assert unproven["certified"] is False
    warned = summarize_solves([dense, {**unproven, "device": "cpu"}])
    assert not warned.proven and warned.headline == "not proven optimal"
    assert warned.detail.startswith("Warning: 1 of 2 matchings could not be proven optimal.")
    assert "1 not certified: excluded pairs still violated the dual certificate after 1 round" in warned.detail
    assert "certified optimal" not in warned.detail
    assert not summarize_solves([{"method": "other", "device": "cpu"}]).proven
    assert summarize_solves([]).detail == "No pairs were matched."
