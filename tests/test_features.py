"""Feature statistics and contexts: frequencies match a direct count, top contexts hold the maximum."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from saecore.activations import ActivationStore
from saecore.errors import LoadError
from saecore.features import (CONTEXTS_FILE, STATS_FILE, compute_feature_data, compute_run_features, read_contexts,
                              read_stats)
from saecore.sae import BatchedSAE, SAEConfig
from saecore.train import TrainConfig, load_sae, train_family

D_IN, D_SAE, N = 8, 16, 3000


def make_store(tmp_path, seed: int = 0) -> ActivationStore:
    """A small in-memory store: random activations, tokens from a 50-word vocabulary, documents of 37 tokens."""
    g = np.random.default_rng(seed)
    acts = (g.standard_normal((N, D_IN)) * 2).astype(np.float16)
    tokens = g.integers(0, 50, N).astype(np.int32)
    docs = (np.arange(N) // 37).astype(np.int32)
    offsets = (np.arange(N) % 37).astype(np.int32)
    (tmp_path / "vocab.json").write_text(json.dumps([f"w{i}" for i in range(50)]))
    return ActivationStore(tmp_path, {"d_model": D_IN, "model_name": "toy", "hook_name": "h"}, [acts[:1000], acts[1000:]],
                           tokens, docs, offsets)


def make_sae(arch: str = "topk") -> BatchedSAE:
    torch.manual_seed(0)
    sae = BatchedSAE(SAEConfig(arch, D_IN, D_SAE, k=3 if arch == "topk" else None), [0])
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
    return sae.eval()


def direct_codes(sae: BatchedSAE, store: ActivationStore, start: int, stop: int) -> np.ndarray:
    with torch.no_grad():
        return sae.encode(torch.from_numpy(store.rows(start, stop).astype(np.float32)))[0].numpy()


@pytest.mark.parametrize("arch", ["topk", "standard"])
def test_frequencies_match_a_direct_count(tmp_path, arch):
    store, sae = make_store(tmp_path), make_sae(arch)
    data = compute_feature_data(sae, store, 500, 2500, batch_size=256)
    f = direct_codes(sae, store, 500, 2500)
    fires = (f > 0).sum(0)
    assert np.allclose(data.stats["frequency"], fires / 2000)
    assert np.allclose(data.stats["per_million"], fires / 2000 * 1e6)
    assert np.allclose(data.stats["max_activation"], f.max(0), atol=1e-5)
    mean = np.where(fires > 0, f.sum(0) / np.maximum(fires, 1), 0)
    assert np.allclose(data.stats["mean_activation"], mean, atol=1e-5)
    if arch == "topk":
        assert 2.5 < data.stats["frequency"].sum() <= 3.0


def test_top_contexts_hold_the_maximum_activation(tmp_path):
    store, sae = make_store(tmp_path), make_sae()
    data = compute_feature_data(sae, store, 0, N, n_top=5, before=4, after=2)
    f = direct_codes(sae, store, 0, N)
    for feat in range(D_SAE):
        tops = [c for c in data.contexts.itertuples() if c.feature == feat and c.kind == "top"]
        if not tops:
            assert f[:, feat].max() == 0
            continue
        best = min(tops, key=lambda c: c.rank)
        assert best.activation == pytest.approx(f[:, feat].max(), abs=1e-5)
        assert best.activations[best.position] == pytest.approx(best.activation, abs=1e-5)
        # The window carries the feature's activation on every token, cut at document borders.
        row0 = best.row - best.position
        assert np.allclose(best.activations, f[row0:row0 + len(best.activations), feat], atol=1e-5)
        assert len(set(store.docs[row0:row0 + len(best.activations)])) == 1
        assert [int(t[1:]) for t in best.tokens] == list(store.tokens[row0:row0 + len(best.tokens)])
        assert sorted((c.activation for c in tops), reverse=True) == [c.activation for c in sorted(tops, key=lambda c: c.rank)]


def test_quantile_samples_are_weaker_than_top_examples(tmp_path):
    store, sae = make_store(tmp_path), make_sae()
    data = compute_feature_data(sae, store, 0, N, n_top=5)
    q = data.contexts[data.contexts.kind == "quantile"]
    assert len(q) > 0
    for feat, group in q.groupby("feature"):
        weakest_top = data.contexts[(data.contexts.feature == feat) & (data.contexts.kind == "top")].activation.min()
        assert (group.activation <= weakest_top + 1e-6).all()


def test_written_files_read_back(tmp_path):
    (tmp_path / "acts").mkdir()
    store = make_store(tmp_path / "acts")
    x = torch.from_numpy(store.rows(0, N).astype(np.float32))
    cfg = TrainConfig(arch="topk", d_sae=D_SAE, k=3, seeds=(0,), epochs=1, batch_size=256, device="cpu")
    run = train_family(x, cfg, tmp_path / "runs")[0].path
    data = compute_run_features(run, store, 2000, N)
    assert (run / STATS_FILE).is_file() and (run / CONTEXTS_FILE).is_file()
    stats = read_stats(run)
    assert list(stats.columns[:5]) == ["feature", "frequency", "per_million", "mean_activation", "max_activation"]
    assert np.allclose(stats["frequency"], data.stats["frequency"])
    feat = int(stats["max_activation"].idxmax())
    ctx = read_contexts(run, feature=feat)
    assert ctx and all(c.feature == feat for c in ctx)
    assert ctx[0].kind == "top" and ctx[0].rank == 0
    assert ctx[0].max_activation == pytest.approx(stats.loc[feat, "max_activation"], abs=1e-3)
    assert len(read_contexts(run)) == len(data.contexts)
    # The run's own encoder reproduces the statistics.
    f = direct_codes(load_sae(run), store, 2000, N)
    assert np.allclose(stats["frequency"], (f > 0).mean(0))


def test_missing_statistics_name_the_file(tmp_path):
    with pytest.raises(LoadError, match=STATS_FILE):
        read_stats(tmp_path)
    with pytest.raises(LoadError, match=CONTEXTS_FILE):
        read_contexts(tmp_path)
