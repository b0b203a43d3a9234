"""Trainers on tiny synthetic activations: each reduces reconstruction error and respects its sparsity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from saecore import load_run, scan
from saecore.errors import InputError
from saecore.sae import BatchedSAE
from saecore.train import TrainConfig, checkpoint_tokens, evaluate, load_sae, train_family

D_IN, N_TRUE, D_SAE = 16, 24, 32


def synthetic_activations(n: int = 4096, k: int = 3, seed: int = 0) -> torch.Tensor:
    """Sparse combinations of unit ground-truth directions, shifted and scaled like real activations."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(N_TRUE, D_IN, generator=g)
    truth = truth / truth.norm(dim=1, keepdim=True)
    codes = torch.zeros(n, N_TRUE)
    idx = torch.rand(n, N_TRUE, generator=g).argsort(dim=1)[:, :k]
    codes.scatter_(1, idx, torch.rand(n, k, generator=g) + 0.5)
    return (codes @ truth) * 7.0 + 3.0


def config(arch: str, **kw) -> TrainConfig:
    base = dict(arch=arch, d_sae=D_SAE, k=3, seeds=(0, 1), epochs=6, batch_size=128, lr=3e-3, warmup_steps=10,
                dead_tokens=2048, device="cpu")
    if arch == "standard":
        base.update(k=None, l1_coefficient=0.05)
    if arch == "jumprelu":
        base.update(k=None, l0_coefficient=0.01, jumprelu_threshold=0.05, jumprelu_bandwidth=0.05)
    base.update(kw)
    return TrainConfig(**base)


def initial_fvu(cfg: TrainConfig, x: torch.Tensor) -> np.ndarray:
    from saecore.train import activation_scale

    model = BatchedSAE(cfg.sae_config(D_IN), cfg.seeds)
    return evaluate(model, x, activation_scale(x)).fvu


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Each architecture trained once on the same synthetic activations (two seeds), shared by the tests below."""
    cache: dict = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = train_family(synthetic_activations(), config(arch), tmp_path_factory.mktemp(arch))
        return cache[arch]

    return get


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "standard", "jumprelu"])
def test_training_reduces_reconstruction_error(trained, arch):
    results = trained(arch)
    before = initial_fvu(config(arch), synthetic_activations())
    for r, b in zip(results, before):
        assert r.fvu < 0.5 * b and r.fvu < 0.3


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_topk_trainers_respect_k(trained, arch):
    results = trained(arch)
    for r in results:
        if arch == "topk":
            assert r.l0 <= 3 + 1e-9
        else:  # BatchTopK keeps k per token on average (inference threshold)
            assert r.l0 > 1.5 and r.l0 < 6


def test_l1_penalty_makes_codes_sparser(tmp_path):
    x = synthetic_activations()
    weak = train_family(x, config("standard", l1_coefficient=1e-4, seeds=(0,)), tmp_path / "weak")[0]
    strong = train_family(x, config("standard", l1_coefficient=0.3, seeds=(0,)), tmp_path / "strong")[0]
    assert strong.l0 < 0.5 * weak.l0
    assert strong.l0 < D_SAE / 2


def test_jumprelu_l0_penalty_makes_codes_sparser(tmp_path):
    x = synthetic_activations()
    weak = train_family(x, config("jumprelu", l0_coefficient=0.0, seeds=(0,)), tmp_path / "weak")[0]
    strong = train_family(x, config("jumprelu", l0_coefficient=0.02, seeds=(0,)), tmp_path / "strong")[0]
    assert strong.l0 < weak.l0


def test_topk_decoder_rows_stay_unit_norm(tmp_path):
    x = synthetic_activations()
    train_family(x, config("topk", seeds=(0,)), tmp_path)
    runner = json.loads((tmp_path / "seed0" / "runner_cfg.json").read_text())
    w = load_file(tmp_path / "seed0" / "sae_weights.safetensors")["W_dec"]
    # Saved weights act on raw activations: rows are unit norm divided by the normalisation scale.
    norms = w.norm(dim=1) * runner["activation_scale"]
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4)


def test_seeds_share_data_order_and_differ_only_in_init(tmp_path):
    x = synthetic_activations(n=2048)
    together = train_family(x, config("topk", seeds=(0, 1), epochs=2), tmp_path / "together")
    alone = train_family(x, config("topk", seeds=(1,), epochs=2), tmp_path / "alone")
    a = load_file(together[1].path / "sae_weights.safetensors")
    b = load_file(alone[0].path / "sae_weights.safetensors")
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.allclose(a[name], b[name], atol=1e-5), name
    c = load_file(together[0].path / "sae_weights.safetensors")
    assert not torch.allclose(a["W_dec"], c["W_dec"])


def test_vary_data_order_changes_the_batches(tmp_path):
    x = synthetic_activations(n=2048)
    shared = train_family(x, config("topk", seeds=(0, 1), epochs=1), tmp_path / "shared")
    varied = train_family(x, config("topk", seeds=(0, 1), epochs=1, vary_data_order=True), tmp_path / "varied")
    a = load_file(shared[1].path / "sae_weights.safetensors")["W_dec"]
    b = load_file(varied[1].path / "sae_weights.safetensors")["W_dec"]
    assert not torch.allclose(a, b, atol=1e-4)


def test_saelens_round_trip_through_load_run_and_scan(tmp_path):
    x = synthetic_activations(n=2048)
    cfg = config("topk", seeds=(3, 4), epochs=4, n_checkpoints=2)
    results = train_family(x, cfg, tmp_path / "topk", model_name="toy", hook_name="blocks.1.hook_resid_post")
    run = load_run(results[0].path)
    assert (run.meta.seed, run.meta.architecture, run.meta.k, run.meta.step) == (3, "topk", 3, None)
    assert run.meta.model == "toy" and run.meta.hook == "blocks.1.hook_resid_post"
    assert run.decoder.shape == (D_SAE, D_IN) and run.encoder.shape == (D_SAE, D_IN)
    assert run.frequencies is not None and abs(run.frequencies.sum() - results[0].l0) < 1e-3
    ws = scan(tmp_path)
    steps = sorted({m.step for m in ws.runs if m.step is not None})
    assert steps == results[0].checkpoints and len(steps) == 2
    assert not ws.errors
    finals = [m for m in ws.runs if m.step is None]
    assert sorted(m.seed for m in finals) == [3, 4]
    assert len({ws.family_of(m) for m in finals}) == 1
    ck = [m for m in ws.runs if m.step == steps[0]]
    assert sorted(m.seed for m in ck) == [3, 4]
    assert all(m.extra.get("checkpoint") is True and m.extra.get("tokens_seen") == steps[0] for m in ck)


def test_batchtopk_saved_as_jumprelu_and_reloads_for_encoding(tmp_path):
    x = synthetic_activations(n=2048)
    res = train_family(x, config("batchtopk", seeds=(0,), epochs=3), tmp_path)[0]
    cfg = json.loads((res.path / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu" and cfg["metadata"]["training_architecture"] == "batchtopk"
    assert load_run(res.path).meta.architecture == "batchtopk"
    sae = load_sae(res.path)
    ev = evaluate(sae, x, 1.0)
    assert abs(ev.fvu[0] - res.fvu) < 1e-3 and abs(ev.l0[0] - res.l0) < 1e-3


def test_standard_run_records_l1_coefficient(tmp_path):
    res = train_family(synthetic_activations(n=1024), config("standard", seeds=(0,), epochs=1), tmp_path)[0]
    meta = load_run(res.path).meta
    assert meta.architecture == "standard" and meta.l1_coefficient == 0.05 and meta.sparsity == "l1=0.05"


def test_checkpoints_are_log_spaced_batch_multiples():
    steps = checkpoint_tokens(10_000_000, 4, 1000)
    assert len(steps) == 4 and all(s % 1000 == 0 and s < 10_000_000 for s in steps)
    ratios = np.diff(np.log(steps))
    assert np.allclose(ratios, ratios[0], rtol=0.05)


def test_standard_needs_l1_coefficient():
    with pytest.raises(InputError, match="l1_coefficient"):
        TrainConfig(arch="standard", k=None)


def test_too_few_activations_is_an_error(tmp_path):
    with pytest.raises(InputError, match="fewer than one batch"):
        train_family(torch.zeros(10, D_IN), config("topk"), tmp_path)


def test_finished_runs_are_reused_only_with_the_same_settings(tmp_path):
    x = synthetic_activations(n=1024)
    first = train_family(x, config("topk", seeds=(0,), epochs=1), tmp_path)[0]
    again = train_family(x, config("topk", seeds=(0,), epochs=1), tmp_path)[0]
    assert again.path == first.path and again.fvu == pytest.approx(first.fvu, abs=1e-6)
    with pytest.raises(InputError, match=r"other settings: epochs=1 \(asked 2\)"):
        train_family(x, config("topk", seeds=(0,), epochs=2), tmp_path)
