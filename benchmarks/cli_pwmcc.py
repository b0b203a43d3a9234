"""End-to-end command line benchmark: `python -m saecore pwmcc A B --json` vs scipy's solve alone.

Writes a realistic cross-seed pair (saecore.instances.realistic_pair) as two SAELens folders, then
times, in one run on the same machine:
- scipy: `linear_sum_assignment` alone on the precomputed dense float64 cost matrix (the matrix,
  imports and loading not counted: the most favourable reading of "scipy's solve"),
- the command line end to end in a fresh process (imports, loading, matching, runner-ups, JSON),
  with an empty match cache each time; the first call also compiles the numba kernels (cold),
- the same command with the cache from the previous call (a repeat question).
Prints a markdown table with the ratios and saves it to benchmarks/results/cli_pwmcc.md.

    python benchmarks/cli_pwmcc.py                 # 16,384 × 16,384, d_in 768
    python benchmarks/cli_pwmcc.py --n 4096 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from saecore.cache import atomic_write_text  # noqa: E402
from saecore.instances import realistic_pair  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "cli_pwmcc.md"


def write_run(folder: Path, decoder: torch.Tensor, seed: int) -> Path:
    """A minimal SAELens folder (TopK, encoder = decoderᵀ) for the pair member."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    d_sae, d_in = decoder.shape
    cfg = {"architecture": "topk", "d_in": d_in, "d_sae": d_sae, "k": 32, "dtype": "float32",
           "apply_b_dec_to_input": True, "normalize_activations": "none",
           "metadata": {"model_name": "bench", "hook_name": "blocks.0.hook_resid_post"}}
    save_file({"W_dec": decoder.contiguous(), "W_enc": decoder.T.contiguous(),
               "b_dec": torch.zeros(d_in), "b_enc": torch.zeros(d_sae)}, str(folder / "sae_weights.safetensors"))
    (folder / "runner_cfg.json").write_text(json.dumps({"seed": seed}))
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def scipy_solve_seconds(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Seconds of linear_sum_assignment alone on the dense float64 cost, and the PW-MCC it finds."""
    from scipy.optimize import linear_sum_assignment

    a64 = torch.nn.functional.normalize(a.double(), dim=1)
    b64 = torch.nn.functional.normalize(b.double(), dim=1)
    cost = (a64 @ b64.T).numpy()
    t0 = time.perf_counter()
    rows, cols = linear_sum_assignment(cost, maximize=True)
    seconds = time.perf_counter() - t0
    return seconds, float(cost[rows, cols].mean())


def cli_seconds(a_dir: Path, b_dir: Path, cache: Path, fresh: bool) -> tuple[float, dict]:
    """Wall seconds of the command in a new process, and its JSON output."""
    if fresh:
        for p in sorted(cache.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
    env = dict(os.environ, SAECORE_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "saecore", "pwmcc", str(a_dir), str(b_dir), "--json"],
                          capture_output=True, text=True, env=env, cwd=str(ROOT))
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"pwmcc failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return seconds, json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--d-in", type=int, default=768)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="timed calls of each kind")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    a, b = realistic_pair(args.n, args.d_in, seed=args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        a_dir, b_dir = write_run(tmp / "seed0", a, 0), write_run(tmp / "seed1", b, 1)
        cache = tmp / "cache"
        cache.mkdir()
        ref_seconds, ref_mcc = scipy_solve_seconds(a, b)
        rows.append(("scipy linear_sum_assignment alone (dense float64 cost precomputed)", ref_seconds, ref_mcc))
        for i in range(args.repeat):
            s, out = cli_seconds(a_dir, b_dir, cache, fresh=True)
            rows.append((f"`python -m saecore pwmcc A B --json`, empty cache{' (first call)' if i == 0 else ''}",
                         s, out["mean"]))
        s, out = cli_seconds(a_dir, b_dir, cache, fresh=False)
        rows.append(("`python -m saecore pwmcc A B --json`, cached match", s, out["mean"]))

    head = (f"{args.n:,} × {args.n:,} realistic pair, d_in {args.d_in}, seed {args.seed}; {os.cpu_count()} CPU cores "
            f"({platform.processor() or platform.machine()}), torch {torch.__version__}, "
            f"CUDA {'yes' if torch.cuda.is_available() else 'no'}. Wall seconds; × faster = scipy solve / row.")
    lines = [head, "", "| what | seconds | × faster than scipy's solve | PW-MCC | \\|Δ\\| vs scipy |", "|---|---|---|---|---|"]
    for name, s, m in rows:
        lines.append(f"| {name} | {s:.2f} | {ref_seconds / s:.2f} | {m:.9f} | {abs(m - ref_mcc):.1e} |")
    text = "\n".join(lines)
    print(text)
    atomic_write_text(args.out, "# Command line end to end (`benchmarks/cli_pwmcc.py`)\n\n" + text + "\n")
    # Exactness is part of the benchmark: a fast wrong answer must not print a good table silently.
    if any(abs(m - ref_mcc) > 1e-6 for _, _, m in rows):
        raise SystemExit("PW-MCC differs from scipy by more than 1e-6")


if __name__ == "__main__":
    main()
