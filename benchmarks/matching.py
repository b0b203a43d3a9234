"""Exact matching benchmark: scipy dense float64 (reference) vs the certified sparse matcher.

Prints a markdown table (method × instance kind × n: seconds, peak memory, PW-MCC, |Δ| from the
reference, certified) plus the time of the float32 similarity matmul alone, and saves it to
benchmarks/results/matching.md. Each measurement runs in its own process so peak RSS (which
includes torch's CPU allocations) belongs to that method alone.

    python benchmarks/matching.py                      # quick: 2,048 and 4,096
    python benchmarks/matching.py --sizes 16384 --repeat 2
    python benchmarks/matching.py --full               # 16,384 and 65,536 (dense skipped above --dense-max)
    python benchmarks/matching.py --sizes 262144 --kinds realistic --methods matmul-cuda certified-cuda
    python benchmarks/matching.py --kinds demo-topk demo-standard --repeat 3   # the real demo runs

On a GPU, rows of the cuda methods compare wall time with the GPU matmul (× matmul) and with the
dense CPU reference (× dense), and show peak GPU memory beside peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from saecore.cache import atomic_write_text  # noqa: E402
from saecore.instances import random_pair, realistic_pair  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "matching.md"
# certified-*: the bfloat16 screen where the hardware runs it fast; certified-fp32-*: the float32 screen.
METHODS = ("matmul", "dense", "certified-cpu", "certified-fp32-cpu", "matmul-cuda", "certified-cuda",
           "certified-fp32-cuda")


def _rss_gb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def worker(method: str, path: str) -> dict:
    """Run one method on the saved pair and report time, memory and the matching's score."""
    from saecore.certified import certified_assignment
    from saecore.matching import solve_dense
    from saecore.similarity import normalize_rows, similarity_blocks

    a, b = torch.load(path)
    device = "cuda" if method.endswith("cuda") else "cpu"
    a_n, b_n = normalize_rows(a)[0].to(device), normalize_rows(b)[0].to(device)
    screen = "float32" if "fp32" in method else "auto"
    if method.startswith("certified"):
        certified_assignment(a_n[:64], b_n[:64], screen=screen)  # load the compiled kernels outside the timing
    elif method == "dense":
        solve_dense(a_n[:8], b_n[:8], "signed")  # scipy's import (lazy, ~0.3 s) outside the timing
    before = _rss_gb()
    t0, c0 = time.perf_counter(), time.process_time()
    out = {"method": method}
    if method.startswith("matmul"):
        for _, s in similarity_blocks(a_n, b_n):
            s.sum()
    elif method == "dense":
        sol = solve_dense(a_n, b_n, "signed")
    else:
        sol = certified_assignment(a_n, b_n, "signed", screen=screen)
    if device == "cuda":
        torch.cuda.synchronize()
    out["seconds"] = time.perf_counter() - t0
    out["cpu_seconds"] = time.process_time() - c0
    out["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    out["extra_gb"] = max(0.0, out["peak_gb"] - before)
    if device == "cuda":
        out["gpu_peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
    if not method.startswith("matmul"):
        out["mcc"] = float(sol.scores.mean())
        # The matching itself, for the same-matching check against the dense reference.
        np.save(f"{path}.{method}.npy", sol.cols[np.argsort(sol.rows)])
        out["certified"] = bool(sol.info.get("certified"))
        out["rounds"] = sol.info.get("rounds", "")
        out["fallback"] = sol.info.get("fallback") or ""
        out["stages"] = {k: round(v, 2) for k, v in sol.info.get("seconds", {}).items()}
        if "screen" in sol.info:
            out["screen"] = sol.info["screen"]["dtype"]
            out["recomputed"] = sol.info.get("recomputed", {})
    return out


def run_worker(method: str, path: str, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, path]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"method": method, "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"method": method, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# Real cross-seed pairs shipped in the demo workspace (SmolLM2-135M, 1,536 latents, d_in 576).
DEMO_PAIRS = {"demo-topk": ("topk_k32/seed0", "topk_k32/seed1"),
              "demo-standard": ("standard_l1_0.1/seed0", "standard_l1_0.1/seed1")}


def make_pair(kind: str, n: int, d_in: int, seed: int):
    if kind in DEMO_PAIRS:
        from saecore.loaders import load_run

        return tuple(load_run(ROOT / "data" / "demo" / p, with_encoder=False).decoder for p in DEMO_PAIRS[kind])
    return realistic_pair(n, d_in, seed) if kind == "realistic" else random_pair(n, n, d_in, seed)


def table(rows: list[dict]) -> str:
    head = ("| kind | n | method | run | seconds | CPU s | × dense | × matmul | peak RSS GB | extra RSS GB | PW-MCC "
            "| \\|Δ\\| vs dense | same matching | certified | rounds | stages (s) |")
    lines = [head, "|" + "---|" * 16]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['kind']} | {r['n']} | {r['method']} | {r['run']} | {r['error']} |" + " |" * 11)
            continue

        def fmt(key, spec):
            return format(r[key], spec) if isinstance(r.get(key), (int, float)) and r.get(key) != "" else ""
        stages = ", ".join(f"{k} {v}" for k, v in r.get("stages", {}).items())
        fb = f" ({r['fallback']})" if r.get("fallback") else ""
        gpu = f" (GPU {r['gpu_peak_gb']:.2f})" if "gpu_peak_gb" in r else ""
        lines.append(f"| {r['kind']} | {r['n']} | {r['method']}{fb} | {r['run']} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | "
                     f"{fmt('x_dense', '.2f')} | {fmt('x_matmul', '.2f')} | {r['peak_gb']:.2f}{gpu} | "
                     f"{r['extra_gb']:.2f} | {fmt('mcc', '.9f')} | {fmt('diff', '.1e')} | {r.get('same', '')} | "
                     f"{r.get('certified', '')} | {r.get('rounds', '')} | {stages} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", nargs=2, metavar=("METHOD", "PATH"), help=argparse.SUPPRESS)
    p.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    p.add_argument("--full", action="store_true", help="sizes 16,384 and 65,536")
    p.add_argument("--kinds", nargs="+", default=["realistic", "random"], choices=["realistic", "random", *DEMO_PAIRS],
                   help="demo-* kinds are the real demo runs (their own size; --sizes is ignored for them)")
    p.add_argument("--d-in", type=int, default=768)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=1, help="runs of every method, interleaved")
    p.add_argument("--dense-max", type=int, default=16384, help="largest n for the dense reference")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=None,
                   help="default: all (the cuda ones only where a GPU is present)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return 0
    sizes = [16384, 65536] if args.full else args.sizes
    methods = args.methods or [m for m in METHODS if not m.endswith("cuda") or torch.cuda.is_available()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds:
            for n in ([0] if kind in DEMO_PAIRS else sizes):
                pair = make_pair(kind, n, args.d_in, args.seed)
                n = n or len(pair[0])
                path = os.path.join(tmp, f"{kind}-{n}.pt")
                torch.save(pair, path)
                for run in range(1, args.repeat + 1):
                    got = {}
                    for method in methods:
                        if method == "dense" and n > args.dense_max:
                            continue
                        r = run_worker(method, path, args.timeout)
                        r.update(kind=kind, n=n, run=run)
                        got[method] = r
                        print(json.dumps(r), flush=True)
                    ref = got.get("dense", {})
                    for r in got.values():
                        if "error" in r:
                            continue
                        # GPU rows: wall time against the GPU matmul; CPU rows: CPU time against the CPU matmul.
                        on_gpu = r["method"].endswith("cuda")
                        mm = got.get("matmul-cuda" if on_gpu else "matmul", {})
                        clock = "seconds" if on_gpu else "cpu_seconds"
                        if "mcc" in ref and "mcc" in r:
                            r["diff"] = abs(r["mcc"] - ref["mcc"])
                            mine, theirs = (np.load(f"{path}.{m}.npy") for m in (r["method"], "dense"))
                            r["same"] = bool(np.array_equal(mine, theirs))
                        if "seconds" in ref:
                            r["x_dense"] = r[clock] / ref[clock]
                        if "seconds" in mm:
                            r["x_matmul"] = r[clock] / mm[clock]
                        rows.append(r)
                os.remove(path)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no"
    text = (f"# Exact matching benchmark\n\n{os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, "
            f"CUDA {gpu} (torch {torch.__version__}), d_in {args.d_in}, seed {args.seed}. "
            "seconds: wall clock; CPU s: process CPU time (all threads), steadier on a shared machine. "
            "× dense / × matmul: CPU time relative to the dense reference and to the float32 similarity "
            "matmul alone in the same run. PW-MCC is the mean matched cosine (signed).\n\n" + table(rows) + "\n")
    print(text)
    atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
