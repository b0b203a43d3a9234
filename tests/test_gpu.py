"""The CUDA path gives the CPU's numbers: same optimum, same matching where it is unique, same runner-ups.

Skipped without a GPU; on a machine with one, `python -m pytest tests/test_gpu.py` runs them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saecore.certified import certified_assignment
from saecore.instances import adversarial_pairs, random_pair, realistic_pair, with_zero_rows
from saecore.matching import match_decoders, solve_dense
from saecore.similarity import normalize_rows

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


def both(a: torch.Tensor, b: torch.Tensor, sign: str = "signed", **kw):
    """The same unit rows (normalised once, as `prepare` does) matched on the CPU and on the GPU."""
    a_n, b_n = normalize_rows(a)[0], normalize_rows(b)[0]
    cpu = certified_assignment(a_n, b_n, sign, **kw)
    gpu = certified_assignment(a_n.cuda(), b_n.cuda(), sign, **kw)
    return cpu, gpu


@pytest.mark.parametrize("sign", ["signed", "abs"])
@pytest.mark.parametrize("maker", ["realistic", "random", "rectangular"])
def test_certified_on_cuda_equals_cpu(sign, maker):
    if maker == "realistic":
        a, b = realistic_pair(3000, 96, seed=2, split_frac=0.2)
    elif maker == "random":
        a, b = random_pair(2000, 2000, 48, seed=2)
    else:
        a, b = realistic_pair(1500, 64, seed=3, n_b=2100)
    cpu, gpu = both(a, b, sign, dense_fallback_cells=0)
    assert cpu.info["certified"] and gpu.info["certified"]
    assert abs(cpu.scores.sum() - gpu.scores.sum()) < 1e-6 * len(cpu.scores)
    ref = solve_dense(normalize_rows(a)[0], normalize_rows(b)[0], sign)
    assert abs(gpu.scores.mean() - ref.scores.mean()) < 1e-9
    np.testing.assert_array_equal(gpu.rows, cpu.rows)
    np.testing.assert_array_equal(gpu.cols, cpu.cols)


@pytest.mark.parametrize("name", sorted(adversarial_pairs(0)))
def test_adversarial_cases_on_cuda_reach_the_dense_objective(name):
    a, b = adversarial_pairs(3)[name]
    cpu, gpu = both(a, b, k=1, dense_fallback_cells=0)
    assert gpu.info["certified"] and abs(gpu.scores.mean() - cpu.scores.mean()) < 1e-9


@pytest.mark.parametrize("dead", ["include", "exclude"])
def test_match_decoders_on_cuda_equals_cpu(dead):
    a, b = realistic_pair(2500, 64, seed=4)
    a, b = with_zero_rows(a, 7), with_zero_rows(b, 5, seed=1)
    cpu = match_decoders(a, b, dead=dead, device="cpu", method="certified")
    gpu = match_decoders(a, b, dead=dead, device="cuda", method="certified")
    assert gpu.info["device"].startswith("cuda") and abs(gpu.mcc - cpu.mcc) < 1e-9
    # Dead rows score 0 with everything: which leftover column they take, and their runner-ups, are ties.
    live_a, live_b = (a.norm(dim=1) > 0).numpy(), (b.norm(dim=1) > 0).numpy()

    def live_pairs(m):
        return {(i, j) for i, j in zip(m.rows.tolist(), m.cols.tolist()) if live_a[i] and live_b[j]}

    assert live_pairs(gpu) == live_pairs(cpu)
    np.testing.assert_array_equal(gpu.runner_up_a[live_a], cpu.runner_up_a[live_a])
    np.testing.assert_allclose(gpu.runner_up_score_a[live_a], cpu.runner_up_score_a[live_a], atol=1e-6)


@pytest.mark.parametrize("sign", ["signed", "abs"])
def test_cuda_bfloat16_screen_stays_within_its_bound(sign):
    """Tensor-core bfloat16 blocks (reduced-precision reductions off) stay within the proven bound on the
    adversarial rows of tests/test_screening.py."""
    from test_screening import cases, exact

    from saecore.screening import exact_accumulation, screen_bound
    from saecore.similarity import similarity_blocks

    for name, (a, b) in cases().items():
        a_c, b_c = a.cuda(), b.cuda()
        bound = screen_bound(a_c, b_c, torch.bfloat16)
        got = np.empty((len(a), len(b)))
        with exact_accumulation(a_c.device):
            for start, block in similarity_blocks(a_c, b_c, sign, torch.bfloat16, budget_bytes=1 << 16):
                got[start:start + len(block)] = block.float().cpu().numpy()
        rows, cols = np.indices(got.shape)
        assert np.all(np.abs(got - exact(a, b, sign)) <= bound.radius(got, rows, cols)), name


@pytest.mark.parametrize("screen", ["bfloat16", "float32"])
def test_both_screens_on_cuda_reach_the_cpu_matching_and_runner_ups(screen):
    a, b = realistic_pair(3000, 96, seed=5, split_frac=0.2)
    cpu, gpu = both(a, b, dense_fallback_cells=0, screen=screen)
    assert gpu.info["screen"]["dtype"] == screen and gpu.info["certified"]
    np.testing.assert_array_equal(gpu.cols, cpu.cols)
    rv, ri, cv, ci = gpu.top2
    np.testing.assert_array_equal(ri, cpu.top2[1])
    np.testing.assert_array_equal(ci, cpu.top2[3])
    np.testing.assert_allclose(rv, cpu.top2[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(cv, cpu.top2[2], rtol=0, atol=1e-12)
