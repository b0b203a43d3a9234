"""Tests for the synthetic model organism: data generator, trainer, caching and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from saecore.errors import InputError
from saecore.sae import BatchedSAE, SAEConfig
from saecore.synthetic import (DataConfig, TrainConfig, _autograd_step, _closed_form_step, generate, regime_config,
                               run_experiment, train_family)

ROOT = Path(__file__).resolve().parents[1]
SMALL = DataConfig(n_features=32, d_in=16, k=3, n_samples=2000)


@pytest.fixture(scope="module")
def small_data():
    return generate(SMALL)


def test_codes_have_exactly_k_positive_entries(small_data):
    s = small_data.codes()
    assert ((s > 0).sum(axis=1) == 3).all()
    assert (s >= 0).all()


def test_truth_rows_are_unit_norm(small_data):
    np.testing.assert_allclose(np.linalg.norm(small_data.truth, axis=1), 1.0, rtol=1e-5)


def test_data_is_codes_times_truth(small_data):
    np.testing.assert_allclose(small_data.x, small_data.codes() @ small_data.truth, atol=1e-5)


def test_uniform_features_are_about_equally_frequent(small_data):
    freq = small_data.frequencies()
    np.testing.assert_allclose(freq.sum(), 3.0)
    assert freq.max() / freq.min() < 1.6


def test_zipf_frequencies_are_skewed():
    data = generate(DataConfig(n_features=32, d_in=16, k=3, n_samples=5000, zipf_exponent=1.2))
    freq = data.frequencies()
    assert freq[0] > 5 * freq[-1]
    assert np.corrcoef(np.arange(32), freq)[0, 1] < -0.6
    assert ((data.codes() > 0).sum(axis=1) == 3).all()


def test_noise_is_added():
    clean = generate(SMALL)
    noisy = generate(DataConfig(**{**SMALL.__dict__, "noise_std": 0.1}))
    residual = noisy.x - noisy.codes() @ noisy.truth
    assert 0.08 < residual.std() < 0.12
    assert not np.allclose(clean.x, noisy.x)


def test_generator_is_deterministic_in_its_seed():
    a, b, c = generate(SMALL), generate(SMALL), generate(DataConfig(**{**SMALL.__dict__, "seed": 7}))
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)


def test_regimes_have_the_published_sizes():
    data, d_sae = regime_config("matched")
    assert (data.n_features, data.d_in, data.k, data.n_samples, data.seed, d_sae) == (32, 16, 3, 50_000, 42, 32)
    data, d_sae = regime_config("redundant")
    assert (data.n_features, data.k, d_sae) == (80, 8, 160)
    data, d_sae = regime_config("compressive", n_samples=100)
    assert (data.n_features, d_sae, data.n_samples) == (800, 80, 100)


def test_unknown_regime_is_rejected():
    with pytest.raises(InputError, match="regime: unknown 'huge'"):
        regime_config("huge")


def test_k_larger_than_features_is_rejected():
    with pytest.raises(InputError, match="k=5 exceeds n_features=4"):
        DataConfig(n_features=4, d_in=3, k=5)


@pytest.mark.parametrize("arch", ["standard", "topk", "batchtopk"])
def test_closed_form_gradient_equals_autograd(arch, small_data):
    x = torch.as_tensor(small_data.x[:700])
    train = TrainConfig(arch, 32, k=3, chunk_size=256)
    model = BatchedSAE(SAEConfig(arch, 16, 32, k=None if arch == "standard" else 3), [1, 2])
    with torch.no_grad():
        model.b_dec.normal_(generator=torch.Generator().manual_seed(0))
        model.b_enc.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    stats = _closed_form_step(model, x, train, stats=True)
    fast = {n: p.grad.clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = None
    reference = _autograd_step(model, x, train)
    for name, p in model.named_parameters():
        torch.testing.assert_close(fast[name], p.grad, rtol=1e-4, atol=1e-6)
    for a, b in zip(stats, reference):
        torch.testing.assert_close(a, b)


def test_topk_beats_standard_on_ground_truth(small_data, tmp_path):
    # Short and with a larger learning rate than SPEC's 1e-4 (tests must be fast); the ordering is the claim.
    results = {arch: train_family(small_data, TrainConfig(arch, 32, seeds=(42, 43), steps=500, lr=3e-3,
                                                          log_every=250), use_cache=False)
               for arch in ("topk", "standard")}
    assert results["topk"].final["gt_mcc_mean"] > results["standard"].final["gt_mcc_mean"] + 0.1
    assert results["topk"].final["l0_mean"] <= 3.0
    assert results["standard"].final["l0_mean"] > 3.0


def test_training_is_deterministic(small_data):
    train = TrainConfig("topk", 32, seeds=(42, 43), steps=40, lr=1e-3, log_every=20)
    a = train_family(small_data, train, use_cache=False)
    b = train_family(small_data, train, use_cache=False)
    pd.testing.assert_frame_equal(a.curves, b.curves)
    assert set(a.curves.metric) == {"gt_mcc", "pw_mcc", "mse", "l1", "l0"}
    assert sorted(a.curves.step.unique()) == [0, 20, 40]


def test_stopped_run_resumes_to_the_uninterrupted_result(small_data, tmp_path):
    train = TrainConfig("standard", 32, seeds=(42, 43), steps=60, lr=1e-3, log_every=20)
    whole = train_family(small_data, train, use_cache=False)
    calls = []
    stopped = train_family(small_data, train, cache_dir=tmp_path,
                           should_stop=lambda: calls.append(1) or len(calls) >= 2)
    assert not stopped.completed and stopped.final["steps_done"] == 20
    resumed = train_family(small_data, train, cache_dir=tmp_path)
    assert resumed.completed
    pd.testing.assert_frame_equal(resumed.curves, whole.curves)


def test_finished_family_is_read_from_the_cache(small_data, tmp_path):
    train = TrainConfig("topk", 32, seeds=(42, 43), steps=20, lr=1e-3, log_every=10)
    first = train_family(small_data, train, cache_dir=tmp_path)
    progress = []
    again = train_family(small_data, train, cache_dir=tmp_path, progress=lambda *a: progress.append(a))
    assert progress == []
    pd.testing.assert_frame_equal(first.curves, again.curves)
    assert again.final == first.final


def test_experiment_summary_has_the_json_contract(tmp_path):
    data = DataConfig(n_samples=300)
    res = run_experiment(data, 32, ["topk", "standard"], seeds=[42, 43, 44], steps=10, log_every=5,
                         cache_dir=tmp_path)
    summary = res.summary()
    assert summary["seeds"] == [42, 43, 44] and summary["steps"] == 10
    block = summary["results"]["topk"]
    assert len(block["gt_mcc"]) == 3 and len(block["pw_mcc"]) == 3
    assert block["gt_mcc_mean"] == pytest.approx(np.mean(block["gt_mcc"]))
    assert 0.3 < summary["chance"]["pw_mcc"] < 0.6


def test_cli_writes_outputs_and_one_json_object(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SAECORE_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "saecore", "synthetic", "--regime", "matched", "--arch", "topk",
                           "standard", "--seeds", "2", "--steps", "20", "--log-every", "10", "--n-samples", "400",
                           "--out", str(out), "--json"], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert set(summary) >= {"regime", "steps", "seeds", "results", "seconds"}
    assert summary["regime"] == "matched" and summary["seeds"] == [42, 43] and summary["steps"] == 20
    for arch in ("topk", "standard"):
        assert set(summary["results"][arch]) >= {"gt_mcc_mean", "gt_mcc", "pw_mcc_mean", "pw_mcc", "l0_mean"}
    assert json.loads((out / "result.json").read_text())["results"] == summary["results"]
    curves = pd.read_parquet(out / "curves.parquet")
    assert set(curves.arch) == {"topk", "standard"}
    assert (out / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "figure.html").stat().st_size > 1000
    assert "--steps 20" in (out / "COMMAND.txt").read_text()


def test_cli_rejects_a_bad_setting(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SAECORE_CACHE_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "saecore", "synthetic", "--k", "40", "--steps", "1"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "k=40 exceeds n_features=32" in proc.stderr
