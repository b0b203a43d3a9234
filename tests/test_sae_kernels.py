"""Tests for the compiled CPU gradient of standard and TopK SAEs: equal to torch's, deterministic, used in training."""

from __future__ import annotations

import numba
import numpy as np
import pandas as pd
import pytest
import torch

from saecore import sae_kernels
from saecore.errors import InputError
from saecore.sae import BatchedSAE, SAEConfig
from saecore.synthetic import (DataConfig, TrainConfig, _adam_step, _autograd_step, _closed_form_step, generate,
                               train_family)

PARAMS = ("W_enc", "b_enc", "W_dec", "b_dec")


def _model(arch: str, d_in: int, d_sae: int, k: int, seeds=(1, 2, 3)) -> BatchedSAE:
    """A model with random non-zero biases (so every term of the gradient matters)."""
    model = BatchedSAE(SAEConfig(arch, d_in, d_sae, k=k if arch == "topk" else None), list(seeds))
    with torch.no_grad():
        model.b_dec.normal_(0, 0.3, generator=torch.Generator().manual_seed(0))
        model.b_enc.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    return model


def _data(n: int, d_in: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d_in)).astype(np.float32)


def _kernel(model: BatchedSAE, x: np.ndarray, l1: float = 0.01) -> sae_kernels.SAEGradients:
    params = [getattr(model, name).detach().numpy() for name in PARAMS]
    return sae_kernels.gradients(sae_kernels.feature_major(x), *params, model.cfg.arch, model.cfg.k, l1)


def _assert_grads_close(kernel: sae_kernels.SAEGradients, reference: dict[str, torch.Tensor]) -> None:
    for name in PARAMS:
        ref = reference[name].numpy()
        np.testing.assert_allclose(getattr(kernel, name), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max(),
                                   err_msg=name)


# (arch, d_in, d_sae, k, rows): k=1, k=d_sae, widths that are multiples of nothing, the redundant regime's
# 40 dims/160 latents, and enough rows for full and partial row blocks in every chunk.
SHAPES = [("topk", 16, 32, 3, 700), ("standard", 16, 32, None, 700), ("topk", 7, 13, 1, 333),
          ("topk", 5, 9, 9, 250), ("standard", 5, 9, None, 250), ("topk", 40, 160, 8, 400),
          ("standard", 40, 160, None, 400), ("topk", 40, 80, 8, 9000), ("standard", 3, 2, None, 20000)]


@pytest.mark.parametrize("arch,d_in,d_sae,k,n", SHAPES)
def test_kernel_equals_closed_form_and_autograd(arch, d_in, d_sae, k, n):
    model = _model(arch, d_in, d_sae, k)
    x = _data(n, d_in)
    got = _kernel(model, x)
    train = TrainConfig(arch, d_sae, k=k, chunk_size=256)
    mse, l1, l0 = _closed_form_step(model, torch.from_numpy(x), train, stats=True)
    _assert_grads_close(got, {name: getattr(model, name).grad for name in PARAMS})
    for p in model.parameters():
        p.grad = None
    _autograd_step(model, torch.from_numpy(x), train)
    _assert_grads_close(got, {name: getattr(model, name).grad for name in PARAMS})
    np.testing.assert_allclose(got.sq_error / (n * d_in), mse.numpy(), rtol=1e-5)
    np.testing.assert_allclose(got.l1 / n, l1.numpy(), rtol=1e-5)
    np.testing.assert_array_equal((got.active / n).astype(np.float32), l0.numpy())  # the same codes are active


def test_kernel_gradient_after_training_steps_equals_closed_form():
    data = generate(DataConfig(n_samples=1500))
    model = _model("topk", 16, 32, 3, seeds=(4, 5))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    train = TrainConfig("topk", 32, k=3)
    for _ in range(20):
        _closed_form_step(model, torch.from_numpy(data.x), train, stats=False)
        opt.step()
    got = _kernel(model, data.x)
    _closed_form_step(model, torch.from_numpy(data.x), train, stats=False)
    _assert_grads_close(got, {name: getattr(model, name).grad for name in PARAMS})


def test_topk_ties_go_to_the_lower_latent_index():
    model = _model("topk", 4, 5, 1)
    with torch.no_grad():
        # Latents 1 and 3 both compute Σx, larger than any unit-norm direction's projection of x >= 0.
        model.W_enc[:, :, 1] = 1.0
        model.W_enc[:, :, 3] = 1.0
        model.b_enc.zero_()
        model.b_dec.zero_()
    got = _kernel(model, np.abs(_data(64, 4)))
    np.testing.assert_array_equal(got.active, 64.0)
    assert np.abs(got.W_dec[:, 1]).min() > 0
    np.testing.assert_array_equal(got.W_dec[:, 3], 0.0)


@pytest.mark.parametrize("arch", ["topk", "standard"])
def test_kernel_is_bit_identical_for_any_thread_count(arch):
    model = _model(arch, 16, 32, 3)
    x = _data(5000, 16)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _kernel(model, x)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = _kernel(model, x)
        again = _kernel(model, x)
    finally:
        numba.set_num_threads(before)
    for field in (*PARAMS, "sq_error", "l1", "active"):
        np.testing.assert_array_equal(getattr(one, field), getattr(two, field), err_msg=field)
        np.testing.assert_array_equal(getattr(two, field), getattr(again, field), err_msg=field)


def test_kernel_rejects_bad_input():
    model = _model("topk", 16, 32, 3)
    params = [getattr(model, name).detach().numpy() for name in PARAMS]
    with pytest.raises(InputError, match=r"x_t: expected feature-major shape \(16, N\)"):
        sae_kernels.gradients(_data(10, 16), *params, "topk", 3, 0.01)
    with pytest.raises(InputError, match="not 'jumprelu'"):
        sae_kernels.gradients(sae_kernels.feature_major(_data(10, 16)), *params, "jumprelu", 3, 0.01)
    with pytest.raises(InputError, match="k: topk needs 1 <= k <= d_sae=32, got k=33"):
        sae_kernels.gradients(sae_kernels.feature_major(_data(10, 16)), *params, "topk", 33, 0.01)


@pytest.mark.parametrize("arch", ["topk", "standard"])
def test_training_with_the_kernel_matches_the_torch_path(arch):
    data = generate(DataConfig(n_samples=2000))
    train = TrainConfig(arch, 32, seeds=(42, 43), steps=40, lr=1e-3, log_every=20)
    fast = train_family(data, train, use_cache=False)
    slow = train_family(data, train, use_cache=False, gradient="torch")
    pd.testing.assert_frame_equal(fast.curves, slow.curves, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fast.decoders, slow.decoders, atol=1e-5)
    assert not fast.curves.equals(slow.curves)  # really two paths (rounding differs)


def test_unknown_gradient_path_is_rejected():
    data = generate(DataConfig(n_samples=100))
    with pytest.raises(InputError, match="gradient: expected one of auto, torch, got 'numba'"):
        train_family(data, TrainConfig("topk", 32, steps=1), use_cache=False, gradient="numba")


def test_compiled_adam_equals_torch_adam():
    models = [_model("topk", 16, 32, 3, seeds=(1, 2)) for _ in range(2)]
    opts = [torch.optim.Adam(m.parameters(), lr=3e-3) for m in models]
    gen = torch.Generator().manual_seed(5)
    for _ in range(60):
        grads = [torch.randn(p.shape, generator=gen) * 0.1 for p in models[0].parameters()]
        for m in models:
            for p, g in zip(m.parameters(), grads):
                p.grad = g.clone()
        opts[0].step()
        _adam_step(opts[1])
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        # torch's vectorised sqrt is not exactly rounded: each of the 60 updates (size ≤ lr) may differ by a few
        # ulps of lr, so parameters near zero drift by up to ~60 · lr · 2^-20 in absolute terms.
        torch.testing.assert_close(b, a, rtol=2e-6, atol=60 * 3e-3 * 2.0 ** -20, msg=name)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(opts[1].state[b][key], opts[0].state[a][key], rtol=1e-6, atol=0)
    # The state has torch's layout: the compiled optimizer's state loads into a torch Adam.
    fresh = torch.optim.Adam(models[1].parameters(), lr=3e-3)
    fresh.load_state_dict(opts[1].state_dict())
    assert float(fresh.state[next(models[1].parameters())]["step"]) == 60
