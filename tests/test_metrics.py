"""PW-MCC summaries, per-feature consistency, shared fraction, chance level and frequency bins."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saecore import match_decoders
from saecore.metrics import (chance_level, feature_consistency, frequency_bins, gt_mcc, mcc, pair_cosines, pw_mcc,
                             shared_fraction, shared_fraction_curve)
from workspaces import related_decoders


def test_pw_mcc_over_three_runs_uses_population_std():
    decs = related_decoders(3, 50, 10, noise=0.5, seed=1)
    matches = {(i, j): match_decoders(decs[i], decs[j]) for i, j in [(0, 1), (0, 2), (1, 2)]}
    res = pw_mcc(["a", "b", "c"], matches)
    vals = np.array([matches[k].mcc for k in [(0, 1), (0, 2), (1, 2)]])
    assert res.mean == pytest.approx(vals.mean()) and res.std == pytest.approx(vals.std(ddof=0))
    mat = res.matrix()
    assert mat.shape == (3, 3) and mat[0, 2] == mat[2, 0] == pytest.approx(vals[1]) and mat[1, 1] == 1
    assert res.to_json()["pairs"][2] == {"a": 1, "b": 2, "pw_mcc": vals[2], "n_matched": 50}


def test_feature_consistency_mean_and_min():
    decs = related_decoders(3, 40, 10, noise=0.5, seed=2)
    matches = {(i, j): match_decoders(decs[i], decs[j]) for i, j in [(0, 1), (0, 2), (1, 2)]}
    fc = feature_consistency(1, 3, matches, 40)
    s10 = matches[0, 1].score_b  # run 1's features against run 0
    s12 = matches[1, 2].score_a
    np.testing.assert_allclose(fc["mean_score"], (s10 + s12) / 2)
    np.testing.assert_allclose(fc["min_score"], np.minimum(s10, s12))


def test_shared_fraction_with_and_without_encoder():
    a, b = related_decoders(2, 100, 16, noise=0.6, seed=3)
    m = match_decoders(a, b)
    expected = float((m.scores > 0.7).sum()) / 100
    assert shared_fraction(m) == pytest.approx(expected)
    enc = pair_cosines(a, b, m.rows, m.cols, "signed")
    np.testing.assert_allclose(enc, m.scores, atol=1e-6)  # decoders as their own encoders: same cosines
    noisy = pair_cosines(a + torch.randn_like(a), b, m.rows, m.cols, "signed")
    assert shared_fraction(m, encoder_scores=noisy) <= shared_fraction(m)
    curve = shared_fraction_curve(m, [0.0, 0.7, 1.0])
    assert curve["shared_fraction"].tolist()[1] == pytest.approx(expected)
    assert curve["shared_fraction"].is_monotonic_decreasing


def test_chance_level_matches_published_small_case():
    # SPEC: 32 x 16 random dictionaries: ≈ 0.459 signed, ≈ 0.530 abs.
    signed = chance_level(32, 16, draws=40, seed=0)
    absolute = chance_level(32, 16, sign="abs", draws=40, seed=0)
    assert signed.mean == pytest.approx(0.459, abs=0.02)
    assert absolute.mean == pytest.approx(0.530, abs=0.02)
    assert len(signed.values) == 40 and signed.std > 0


def test_gt_mcc_of_truth_against_itself_is_one():
    truth = torch.randn(32, 16)
    assert gt_mcc(truth, truth[torch.randperm(32)] * 3) == pytest.approx(1.0)
    assert mcc(truth.numpy(), truth.numpy()) == pytest.approx(1.0)


def test_frequency_bins_are_equal_width_in_log_and_sum_up():
    freq = np.array([1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 0.0])
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.05])
    df = frequency_bins(freq, scores, n_bins=5)
    binned = df[df["bin"] >= 0]
    # Edges at log10 = -6, -5, ..., -1; bins are half-open except the last, as numpy.histogram.
    assert binned["count"].tolist() == [1, 1, 1, 1, 2]
    assert binned["count"].tolist() == np.histogram(np.log10(freq[:6]), bins=5)[0].tolist()
    assert binned["mean"].iloc[4] == pytest.approx(0.55)
    never = df[df["bin"] == -1].iloc[0]
    assert never["count"] == 1
    assert df["contribution"].sum() == pytest.approx(scores.mean())
    assert df["cumulative"].iloc[-1] == pytest.approx(scores.mean())
    assert df["share"].sum() == pytest.approx(1.0)
