"""Tests for the batched SAE architectures."""

import pytest
import torch

from saecore.errors import InputError
from saecore.sae import ARCHITECTURES, BatchedSAE, SAEConfig

D_IN, D_SAE, K, B = 8, 24, 3, 40


def make(arch: str, seeds=(1, 2, 3), **kw) -> BatchedSAE:
    k = K if arch in ("topk", "batchtopk") else None
    return BatchedSAE(SAEConfig(arch=arch, d_in=D_IN, d_sae=D_SAE, k=k, **kw), seeds)


def data(seed: int = 0, n: int = B) -> torch.Tensor:
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_forward_shapes_and_nonnegative_codes(arch):
    sae = make(arch)
    x_hat, f = sae(data())
    assert x_hat.shape == (3, B, D_IN)
    assert f.shape == (3, B, D_SAE)
    assert (f >= 0).all()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_encode_accepts_per_model_inputs(arch):
    sae = make(arch)
    x = data().expand(3, B, D_IN)
    torch.testing.assert_close(sae.encode(x), sae.encode(data()))


def test_topk_keeps_at_most_k_per_row():
    f = make("topk").encode(data())
    assert int((f > 0).sum(-1).max()) <= K


def test_batchtopk_keeps_at_most_k_times_batch_per_model():
    f = make("batchtopk").encode(data())
    assert ((f > 0).sum(dim=(1, 2)) <= K * B).all()


def test_batchtopk_eval_uses_estimated_threshold():
    sae = make("batchtopk")
    sae.encode(data())
    assert (sae.threshold > 0).all()
    sae.eval()
    f = sae.encode(data(1))
    assert (f[f > 0] > sae.threshold.view(3, 1, 1).expand_as(f)[f > 0]).all()


def test_standard_init_is_tied_with_small_unit_directions():
    sae = make("standard")
    torch.testing.assert_close(sae.W_enc, sae.W_dec.transpose(1, 2))
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.full((3, D_SAE), 0.1))
    assert (sae.b_enc == 0).all() and (sae.b_dec == 0).all()


def test_topk_init_has_unit_decoder_rows():
    sae = make("topk")
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(3, D_SAE))
    torch.testing.assert_close(sae.W_enc, sae.W_dec.transpose(1, 2))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_same_seed_gives_same_model(arch):
    a, b = make(arch), make(arch)
    for name, p in a.named_parameters():
        assert torch.equal(p, dict(b.named_parameters())[name])


def test_different_seeds_give_different_models():
    sae = make("topk", seeds=(5, 6))
    assert not torch.equal(sae.decoder(0), sae.decoder(1))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_batching_does_not_change_a_model(arch):
    batched = make(arch, seeds=(7, 11, 13))
    single = make(arch, seeds=(11,))
    x = data()
    x_hat_b, f_b = batched(x)
    x_hat_s, f_s = single(x)
    torch.testing.assert_close(f_b[1], f_s[0])
    torch.testing.assert_close(x_hat_b[1], x_hat_s[0])
    torch.testing.assert_close(batched.decoder(1), single.decoder(0))


def test_jumprelu_threshold_receives_gradient():
    sae = make("jumprelu", jumprelu_threshold=0.1, jumprelu_bandwidth=0.5)
    x = data(n=200)
    pre = sae.pre_activations(x)
    x_hat = sae.decode(sae.activate(pre))
    loss = ((x_hat - x) ** 2).mean() + 0.1 * sae.l0_penalty(pre).sum()
    loss.backward()
    assert sae.log_threshold.grad is not None
    assert sae.log_threshold.grad.abs().sum() > 0


def test_jumprelu_l0_penalty_counts_active_latents():
    sae = make("jumprelu")
    pre = sae.pre_activations(data())
    f = sae.activate(pre)
    torch.testing.assert_close(sae.l0_penalty(pre), (f > 0).float().sum(-1).mean(-1))


def test_l0_penalty_rejects_other_architectures():
    sae = make("topk")
    with pytest.raises(InputError, match="only defined for jumprelu"):
        sae.l0_penalty(sae.pre_activations(data()))


def test_normalize_decoder_gives_unit_rows():
    sae = make("standard")
    sae.normalize_decoder_()
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(3, D_SAE))


def test_decoder_is_detached_float32_cpu():
    d = make("topk").decoder(2)
    assert d.shape == (D_SAE, D_IN) and d.dtype == torch.float32 and not d.requires_grad


def test_unknown_architecture_is_rejected():
    with pytest.raises(InputError, match="unknown architecture 'gated'"):
        SAEConfig(arch="gated", d_in=4, d_sae=8)


def test_topk_needs_k():
    with pytest.raises(InputError, match="k: topk needs"):
        SAEConfig(arch="topk", d_in=4, d_sae=8)


def test_wrong_input_shape_is_rejected():
    with pytest.raises(InputError, match=r"x: expected shape \(B, 8\)"):
        make("standard").encode(torch.zeros(5, 7))


def _topk_reference(pre: torch.Tensor, k: int) -> torch.Tensor:
    vals, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))


def test_topk_codes_equal_the_topk_definition():
    sae = make("topk")
    pre = sae.pre_activations(data(n=500))
    torch.testing.assert_close(sae.activate(pre), _topk_reference(pre, K), rtol=0, atol=0)


def test_topk_keeps_k_entries_when_values_tie():
    pre = torch.tensor([[[3.0, 2.0, 2.0, 2.0, 1.0, -1.0]]])
    sae = BatchedSAE(SAEConfig(arch="topk", d_in=2, d_sae=6, k=3), [0])
    f = sae.activate(pre)
    assert int((f > 0).sum()) == 3
    assert f[0, 0, 0] == 3.0
