"""Pair browsing: the pair table, its filter, runner-up candidates, neighbours and one feature across runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from saecore import InputError, load_run
from saecore.consistency import compare_runs
from saecore.matching import match_runs
from saecore.pairs import (PairFilter, across_runs, candidates, clip_range, explanation_map, feature_to_open,
                           filter_bounds, filter_pairs, first_pair, frequencies_of, neighbours, pair_of, pair_table, partner_in_a, sort_pairs)
from workspaces import related_decoders, write_saelens


@pytest.fixture
def three_runs(tmp_path):
    decs = related_decoders(3, 24, 8, noise=0.2, seed=3)
    freq = np.linspace(1e-4, 1e-1, 24)
    return [load_run(write_saelens(tmp_path / f"s{i}", d, seed=i, frequencies=freq)).renamed(f"s{i}")
            for i, d in enumerate(decs)]


def test_pair_table_has_one_row_per_match_best_first(three_runs):
    m = match_runs(three_runs[0], three_runs[1])
    df = pair_table(m, three_runs[0].frequencies, three_runs[1].frequencies, {0: "cats"}, None)
    assert len(df) == 24 and df["score"].is_monotonic_decreasing
    row = df[df["feature_a"] == 0].iloc[0]
    assert row["explanation_a"] == "cats" and row["freq_a"] == pytest.approx(three_runs[0].frequencies[0], rel=1e-5)


def test_filter_keeps_score_range_and_text_matches():
    df = pd.DataFrame({"feature_a": [0, 1, 2], "feature_b": [5, 6, 7], "score": [0.9, 0.5, 0.2],
                       "freq_a": [1e-2, 1e-3, 1e-4], "freq_b": np.nan,
                       "explanation_a": ["Cat words", None, "dogs"], "explanation_b": [None, "cat food", None]})
    assert filter_pairs(df, PairFilter(score_min=0.4))["feature_a"].tolist() == [0, 1]
    assert filter_pairs(df, PairFilter(text="CAT"))["feature_a"].tolist() == [0, 1]
    assert filter_pairs(df, PairFilter(freq_max=2e-3))["feature_a"].tolist() == [1, 2]
    assert filter_pairs(df, PairFilter(explained=True))["feature_a"].tolist() == [0, 1, 2]


def test_text_search_is_literal_not_regex():
    df = pd.DataFrame({"feature_a": [0], "feature_b": [0], "score": [1.0], "freq_a": [np.nan], "freq_b": [np.nan],
                       "explanation_a": ["a(b"], "explanation_b": [None]})
    assert len(filter_pairs(df, PairFilter(text="a(b"))) == 1


def test_candidates_rank_the_matched_partner_first_for_a_clean_copy(tmp_path):
    dec = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    a = load_run(write_saelens(tmp_path / "a", dec))
    b = load_run(write_saelens(tmp_path / "b", dec[perm].contiguous()))
    c = candidates(a, 3, b, k=4)
    assert int(c.iloc[0]["feature"]) == int(torch.nonzero(perm == 3)[0, 0])
    assert c.iloc[0]["cosine"] == pytest.approx(1.0) and c["cosine"].is_monotonic_decreasing


def test_candidates_reject_out_of_range_feature(three_runs):
    with pytest.raises(InputError, match="feature 99 is out of range for s0"):
        candidates(three_runs[0], 99, three_runs[1])


def test_neighbours_walk_the_list():
    assert neighbours([4, 7, 9], 7) == (4, 9)
    assert neighbours([4, 7, 9], 4) == (None, 7)
    assert neighbours([4, 7, 9], 5) == (None, 4)
    assert neighbours([], 1) == (None, None)


def test_across_runs_follows_direct_matches(three_runs):
    comp = compare_runs(three_runs)
    chain = across_runs(comp, 1, 5)
    assert chain["run"].tolist() == ["s0", "s1", "s2"]
    assert chain.loc[1, "feature"] == 5 and chain.loc[1, "reference"]
    assert chain.loc[0, "feature"] == pair_of(match_runs(three_runs[1], three_runs[0]), 5)[0]


def test_stats_frequencies_win_over_sparsity_file(three_runs):
    stats = pd.DataFrame({"feature": [0, 1], "frequency": [0.5, 0.25]})
    freq = frequencies_of(three_runs[0], stats)
    assert freq[0] == 0.5 and np.isnan(freq[2])
    assert frequencies_of(three_runs[0], None)[0] == pytest.approx(1e-4, rel=1e-4)


def test_explanation_map_keeps_the_main_explainer():
    df = pd.DataFrame({"feature": [0, 0, 1], "explanation": ["x", "y", "z"], "explainer": ["a", "b", "b"],
                       "source": ["f", "f", "f"]})
    assert explanation_map(df) == {0: "y", 1: "z"}


def _shown(features_a, expl_a, expl_b) -> pd.DataFrame:
    return pd.DataFrame({"feature_a": features_a, "explanation_a": expl_a, "explanation_b": expl_b})


def test_first_pair_prefers_explanations_on_both_sides_then_on_one():
    both = _shown([4, 7, 9], [None, "x", "y"], [None, None, "z"])
    assert first_pair(both) == 9
    one = _shown([4, 7], [None, None], [None, "b"])
    assert first_pair(one) == 7
    assert first_pair(_shown([4, 7], [None, None], [None, None])) == 4
    assert first_pair(_shown([], [], [])) is None


def test_feature_to_open_keeps_a_typed_feature_unless_a_filter_hid_it():
    shown = _shown([4, 7, 9], [None, "x", "y"], [None, "w", None])
    assert feature_to_open(20, shown, d_sae=32) == 20  # typed, outside the list: kept
    assert feature_to_open(20, shown, d_sae=32, refiltered=True) == 7  # a filter hid it: first explained pair
    assert feature_to_open(9, shown, d_sae=32, refiltered=True) == 9  # still shown: stays open
    assert feature_to_open(None, shown, d_sae=32) == 7
    assert feature_to_open(40, shown, d_sae=32) == 7  # out of range
    assert feature_to_open(None, shown.iloc[:0], d_sae=32) == 0


def test_sort_pairs_orders_and_renumbers():
    df = pd.DataFrame({"feature_a": [2, 0, 1], "score": [0.5, 0.9, 0.1], "freq_a": [np.nan, 1e-3, 1e-2]})
    assert sort_pairs(df, "score-desc")["feature_a"].tolist() == [0, 2, 1]
    assert sort_pairs(df, "score-asc")["feature_a"].tolist() == [1, 2, 0]
    assert sort_pairs(df, "feature")["feature_a"].tolist() == [0, 1, 2]
    assert sort_pairs(df, "freq-desc")["feature_a"].tolist() == [1, 0, 2]  # missing frequency last
    assert sort_pairs(df, "feature").index.tolist() == [0, 1, 2]


def test_partner_in_a_inverts_the_match(three_runs):
    m = match_runs(three_runs[0], three_runs[1])
    for fa in range(24):
        fb, _ = pair_of(m, fa)
        assert partner_in_a(m, fb) == fa
    with pytest.raises(InputError, match="out of range"):
        partner_in_a(m, 24)


def test_filter_bounds_span_the_scores_and_whole_decades_of_frequency():
    df = pd.DataFrame({"score": [0.93, 0.2, -0.041], "freq_a": [3e-5, 0.0, 2e-2]})
    assert filter_bounds(df) == ((-0.05, 1.0), (-5, -1))
    same_decade = df.assign(score=[0.5, 0.2, 0.1], freq_a=[0.01, 0.01, np.nan])
    assert filter_bounds(same_decade) == ((0.0, 1.0), None)
    assert filter_bounds(df.iloc[:0]) == ((-1.0, 1.0), None)
    assert clip_range((-0.5, 2.0), (0.0, 1.0)) == (0.0, 1.0)
    assert clip_range(None, (-5, -1)) == (-5, -1)
