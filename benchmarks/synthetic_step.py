"""Training speed of the synthetic model organism: ms per full-batch step, compiled kernel vs torch, 1 and 2 threads.

Times `train_family` (all five seeds, logging every 100 steps, no cache; minus a 0-step run, so set-up and the
final evaluation are not counted) after a warm-up that loads or compiles the kernels, and projects the time of
the full SPEC §3 reproduction (both architectures × 30,000 steps).

    python benchmarks/synthetic_step.py                        # matched regime, 200 steps, kernel and torch
    python benchmarks/synthetic_step.py --regime redundant --steps 20 --paths auto
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numba  # noqa: E402
import torch  # noqa: E402

from saecore.synthetic import TrainConfig, generate, regime_config, train_family  # noqa: E402

FULL_STEPS = 30_000


def family_seconds(data, d_sae: int, arch: str, steps: int, gradient: str) -> float:
    """Wall seconds of training one seed family for `steps` steps."""
    t0 = time.perf_counter()
    train_family(data, TrainConfig(arch, d_sae, steps=steps, log_every=100), use_cache=False, gradient=gradient)
    return time.perf_counter() - t0


def step_ms(data, d_sae: int, arch: str, steps: int, gradient: str) -> float:
    """Wall milliseconds per training step (logging included), without the fixed cost of setting up a family."""
    fixed = family_seconds(data, d_sae, arch, 0, gradient)
    return (family_seconds(data, d_sae, arch, steps, gradient) - fixed) / steps * 1e3


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--regime", default="matched", choices=("matched", "redundant", "compressive"))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                   help="CPU threads of the gradient: numba's for the kernel (torch then keeps 1, as the CLI "
                        "does), torch's for the torch path")
    p.add_argument("--paths", nargs="+", default=["auto", "torch"], choices=("auto", "torch"))
    args = p.parse_args()
    data_cfg, d_sae = regime_config(args.regime)
    data = generate(data_cfg)
    t0 = time.perf_counter()
    for arch in ("topk", "standard"):
        train_family(data, TrainConfig(arch, d_sae, steps=2, log_every=1), use_cache=False)
    print(f"warm-up (kernels loaded or compiled): {time.perf_counter() - t0:.1f} s")
    print(f"\n{args.regime}: {data_cfg.n_samples:,} rows, d_in {data_cfg.d_in}, d_sae {d_sae}, 5 seeds, "
          f"{args.steps} steps\n")
    print("| path | threads | topk ms/step | standard ms/step | projected 2 × 30k steps |")
    print("|---|---|---|---|---|")
    for gradient in args.paths:
        for threads in args.threads:
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            torch.set_num_threads(1 if gradient == "auto" else threads)
            ms = {arch: step_ms(data, d_sae, arch, args.steps, gradient) for arch in ("topk", "standard")}
            total = sum(ms.values()) * FULL_STEPS / 1e3 / 60
            print(f"| {'kernel' if gradient == 'auto' else 'torch'} | {threads} | {ms['topk']:.1f} | "
                  f"{ms['standard']:.1f} | {total:.1f} min |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
