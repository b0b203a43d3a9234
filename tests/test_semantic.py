"""Explanation similarity with the real all-MiniLM-L6-v2 model, statistics checked against numpy/scipy."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from workspaces import write_saelens

from saecore.errors import InputError
from saecore.explanations import store_explanations
from saecore.matching import match_decoders
from saecore.semantic import (Embedder, assign_bins, binned_means, compare_explanations, correlations, log_score_edges,
                              random_pair_indices)

TOPICS = ["cats and kittens", "numbers in a list", "the French language", "legal contracts", "rain and weather",
          "cooking pasta", "football matches", "computer programming", "music and songs", "trees in a forest"]
PARAPHRASES = ["pet cats", "lists of numbers", "French words", "contract law", "rainy weather", "making pasta",
               "soccer games", "writing code", "songs and melodies", "forest trees"]


@pytest.fixture(scope="module")
def embedder(tmp_path_factory) -> Embedder:
    return Embedder(cache_dir=tmp_path_factory.mktemp("emb"), device="cpu")


def test_related_explanations_score_higher_than_unrelated(embedder):
    related = embedder.similarity(TOPICS, PARAPHRASES)
    unrelated = embedder.similarity(TOPICS, PARAPHRASES[1:] + PARAPHRASES[:1])
    assert related.shape == (10,) and np.all(related <= 1.0)
    assert related.mean() > unrelated.mean() + 0.3
    assert (related > unrelated).sum() >= 9


def test_embeddings_are_unit_length_and_cached_on_disk(embedder):
    vecs = embedder.embed(["a cached sentence", "another one"])
    assert vecs.shape == (2, 384) and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    fresh = Embedder(cache_dir=embedder.cache_dir.parent, device="cpu")
    again = fresh.embed(["another one", "a cached sentence"])
    assert fresh.n_computed == 0 and fresh._model is None  # served from disk without loading the model
    assert np.array_equal(again, vecs[::-1])


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no sentence-transformers model here"):
        Embedder(tmp_path / "nope")


def test_correlations_match_scipy_and_bootstrap_is_seeded():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 300)
    y = x ** 2 + rng.normal(0, 0.2, 300)
    p, s = correlations(x, y, n_boot=300, seed=3)
    assert p.value == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert s.value == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    assert p.ci_low < p.value < p.ci_high and s.ci_low < s.value < s.ci_high
    assert correlations(x, y, n_boot=300, seed=3) == (p, s)
    idx = np.random.default_rng(3).integers(0, 300, size=(300, 300))  # same draws as the implementation
    direct = [stats.pearsonr(x[i], y[i])[0] for i in idx]
    assert p.ci_low == pytest.approx(np.percentile(direct, 2.5), abs=1e-9)


def test_correlation_needs_three_pairs():
    with pytest.raises(InputError, match="at least 3 pairs"):
        correlations([0.1, 0.2], [0.3, 0.4])


def test_bins_are_geometric_from_the_smallest_positive_score_to_one():
    scores = np.array([-0.2, 0.0, 0.065, 0.1, 0.2, 0.3, 0.5, 0.9, 1.0])
    sims = np.arange(len(scores), dtype=float)
    edges = log_score_edges(scores)
    assert edges[0] == pytest.approx(0.065) and edges[-1] == pytest.approx(1.0)
    assert np.allclose(np.diff(np.log(edges)), np.log(1 / 0.065) / 5)
    bins = binned_means(scores, sims)
    direct_idx = [int(np.clip(np.floor(np.log(s / 0.065) / np.log(edges[1] / edges[0]) + 1e-12), 0, 4))
                  for s in scores[2:]]
    counts = np.bincount(direct_idx, minlength=5)
    means = [sims[2:][np.array(direct_idx) == b].mean() if counts[b] else np.nan for b in range(5)]
    assert bins.counts == counts.tolist() and np.allclose(bins.means, means, equal_nan=True) and bins.n_nonpositive == 2
    assert assign_bins(np.array([0.01]), edges)[0] == -1


def test_random_pairs_avoid_matched_partners():
    partner = np.array([0, 1, 2, 3])
    ia, ib = random_pair_indices(4, 4, partner, 500, seed=1)
    assert len(ia) == 500 and np.all(partner[ia] != ib)


def matched_runs(tmp_path, n: int = 40):
    """Two saved runs whose features are matched (decoder scores spread out) with explanations."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, 16, generator=gen)
    b = a + torch.logspace(-1.5, 0.7, n)[:, None] * torch.randn(n, 16, generator=gen)
    paths = [write_saelens(tmp_path / "a", a), write_saelens(tmp_path / "b", b, seed=1)]
    return paths, match_decoders(a, b)


def explain_by_score(match, n_explained: int | None = None):
    """Explanations agree for well-matched pairs and drift apart as the score falls."""
    rows, cols, scores = match.rows, match.cols, match.scores
    order = np.argsort(-scores)
    ea, eb = [], []
    for rank, k in enumerate(order[:n_explained]):
        topic = TOPICS[k % 10]
        other = TOPICS[(k + 1 + rank // 4) % 10] if rank >= len(order) // 2 else PARAPHRASES[k % 10]
        ea.append((int(rows[k]), topic, "m", "t"))
        eb.append((int(cols[k]), other, "m", "t"))
    cols_ = ["feature", "explanation", "explainer", "source"]
    return pd.DataFrame(ea, columns=cols_), pd.DataFrame(eb, columns=cols_)


def test_compare_explanations_against_a_direct_computation(tmp_path, embedder):
    _, match = matched_runs(tmp_path)
    ea, eb = explain_by_score(match)
    ea = ea.iloc[:-3]  # three pairs lack an explanation on one side
    res = compare_explanations(match, ea, eb, embedder, n_boot=200, seed=0, n_baseline=200)
    assert res.n_pairs == 37 and res.n_matched == 40
    direct = embedder.model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(direct), device="cpu")
    va = model.encode(res.pairs["explanation_a"].tolist(), normalize_embeddings=True)
    vb = model.encode(res.pairs["explanation_b"].tolist(), normalize_embeddings=True)
    assert np.allclose(res.pairs["similarity"], (va * vb).sum(1), atol=1e-5)
    assert res.pearson.value == pytest.approx(stats.pearsonr(res.pairs["score"], res.pairs["similarity"])[0], abs=1e-9)
    assert res.spearman.value == pytest.approx(stats.spearmanr(res.pairs["score"], res.pairs["similarity"])[0], abs=1e-9)
    assert res.spearman.value > 0.3  # agreeing explanations sit at the high scores
    assert res.bins.counts == binned_means(res.pairs["score"], res.pairs["similarity"]).counts
    assert sum(res.bins.counts) + res.bins.n_nonpositive == 37
    assert res.baseline.n == 200 and res.baseline.mean < res.pairs["similarity"].mean()
    out = res.to_json()
    assert set(out) >= {"n_pairs", "pearson", "spearman", "bins", "baseline"}
    assert set(out["pearson"]) >= {"value", "ci_low", "ci_high"} and set(out["bins"]) >= {"edges", "counts", "means"}
    json.dumps(out)


def test_compare_needs_explanations_on_both_sides(tmp_path, embedder):
    _, match = matched_runs(tmp_path)
    ea, eb = explain_by_score(match, n_explained=2)
    with pytest.raises(InputError, match="only 2 matched pairs .* have explanations on both sides"):
        compare_explanations(match, ea, eb, embedder)


def test_cli_semantic_json_and_csv(tmp_path, embedder, capsys):
    from saecore.cli import main

    (run_a, run_b), match = matched_runs(tmp_path)
    ea, eb = explain_by_score(match)
    store_explanations(run_a, ea)
    store_explanations(run_b, eb)
    out_csv = tmp_path / "pairs.csv"
    code = main(["semantic", str(run_a), str(run_b), "--json", "--csv", str(out_csv), "--n-boot", "100",
                 "--device", "cpu"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["n_pairs"] == 40
    assert set(out["pearson"]) >= {"value", "ci_low", "ci_high"}
    assert len(out["bins"]["edges"]) == 6 and sum(out["bins"]["counts"]) == 40 - out["bins"]["n_nonpositive"]
    df = pd.read_csv(out_csv)
    assert list(df.columns) == ["feature_a", "feature_b", "score", "explanation_a", "explanation_b", "similarity"]
    assert len(df) == 40



def test_llm_judge_scores_are_summarised_beside_the_embeddings(tmp_path, embedder):
    from openai_server import FakeOpenAI

    from saecore.explain import AnswerCache, ExplainerConfig, build_client, judge_similarity

    _, match = matched_runs(tmp_path)
    ea, eb = explain_by_score(match)
    with FakeOpenAI(api_key="k") as srv:
        cfg = ExplainerConfig(base_url=srv.base_url, model="test-model", backoff=0.01)
        client = build_client(cfg, api_key="k")
        srv.rules.append(("B: cats and kittens", "empty"))  # one unscored pair
        res = compare_explanations(match, ea, eb, embedder, n_boot=50,
                                   judge=lambda pairs: judge_similarity(pairs, client, cfg, AnswerCache(tmp_path)))
    assert res.pairs["judge"].isna().sum() >= 1 and set(res.pairs["judge"].dropna()) == {7.0}
    assert res.judge.n_scored == res.pairs["judge"].notna().sum() and res.judge.mean == 7.0
    assert res.to_json()["judge"]["bins"]["counts"] == res.judge.bins.counts


def test_axes_correlations_pair_every_two_views_on_complete_rows():
    import pandas as pd

    from saecore.semantic import axes_correlations

    x = np.arange(10, dtype=float)
    df = pd.DataFrame({"score": x, "activation_r": x ** 2, "similarity": -x})
    df.loc[3, "activation_r"] = np.nan  # a pair with an undefined correlation is left out
    out = axes_correlations(df, n_boot=50)
    assert out["pairs"] == "9"
    assert out["decoder ~ activations"].startswith("1.000")
    assert out["decoder ~ explanations"].startswith("-1.000")
    assert out["activations ~ explanations"].startswith("-1.000")
    assert axes_correlations(df.iloc[:2], n_boot=10)["decoder ~ activations"] == "–"
