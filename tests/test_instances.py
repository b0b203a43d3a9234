"""Benchmark and test instances must be reproducible and have the structure their names promise."""

from __future__ import annotations

import torch

from saecore.instances import adversarial_pairs, duplicate_rows_pair, random_pair, realistic_pair, tied_pair, with_zero_rows


def cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a.double() / a.double().norm(dim=1, keepdim=True)
    b = b.double() / b.double().norm(dim=1, keepdim=True)
    return a @ b.T


def test_realistic_pair_is_reproducible_per_seed():
    a1, b1 = realistic_pair(64, 32, seed=3)
    a2, b2 = realistic_pair(64, 32, seed=3)
    a3, _ = realistic_pair(64, 32, seed=4)
    assert torch.equal(a1, a2) and torch.equal(b1, b2) and not torch.equal(a1, a3)


def test_realistic_pair_has_shapes_dtype_and_unit_rows():
    a, b = realistic_pair(100, 48, seed=0, n_b=120)
    assert a.shape == (100, 48) and b.shape == (120, 48) and a.dtype == torch.float32
    assert torch.allclose(a.norm(dim=1), torch.ones(100), atol=1e-5)


def test_realistic_pair_gives_most_features_a_close_partner():
    a, b = realistic_pair(2000, 256, seed=1, split_frac=0.0)
    best = cosines(a, b).max(dim=1).values
    close = (best >= 0.8).double().mean().item()
    assert 0.85 * 0.9 - 0.05 < close < 0.85 * 0.9 + 0.05
    assert (best < 0.4).double().mean().item() > 0.1


def test_realistic_pair_contains_near_duplicate_features():
    a, _ = realistic_pair(1000, 256, seed=2, split_frac=0.05)
    s = cosines(a, a)
    s.fill_diagonal_(0)
    assert 30 <= int((s.max(dim=1).values > 0.84).sum()) <= 120


def test_random_pair_is_independent_and_rectangular():
    a, b = random_pair(50, 70, 512, seed=0)
    assert a.shape == (50, 512) and b.shape == (70, 512)
    assert cosines(a, b).abs().max() < 0.35


def test_tied_pair_has_repeated_cosines():
    a, b = tied_pair(30, 4, seed=0)
    values = cosines(a, b).flatten()
    assert len(torch.unique(values.round(decimals=12))) < len(values) / 10


def test_duplicate_rows_pair_repeats_rows():
    a, _ = duplicate_rows_pair(40, 8, seed=0, n_unique=5)
    assert len(torch.unique(a, dim=0)) <= 5


def test_with_zero_rows_zeroes_exactly_count_rows():
    a, _ = random_pair(20, 20, 8, seed=0)
    z = with_zero_rows(a, 6, seed=1)
    assert int((z.norm(dim=1) == 0).sum()) == 6 and int((a.norm(dim=1) == 0).sum()) == 0


def test_adversarial_pairs_cover_rectangular_both_ways_and_zero_rows():
    cases = adversarial_pairs(0)
    shapes = {name: (len(a), len(b)) for name, (a, b) in cases.items()}
    assert shapes["rows_fewer"][0] < shapes["rows_fewer"][1]
    assert shapes["rows_more"][0] > shapes["rows_more"][1]
    a, b = cases["zero_rows"]
    assert (a.norm(dim=1) == 0).any() and (b.norm(dim=1) == 0).any()
