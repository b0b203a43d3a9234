"""Sweep throughput: a generated workspace matched with the local executor (1 worker) and with Ray (N workers).

    .venv/bin/python benchmarks/sweep.py                       # 4 families × 6 seeds × 4,096 latents, d_in 256
    .venv/bin/python benchmarks/sweep.py --latents 1024 --seeds 3   # smaller
    .venv/bin/python benchmarks/sweep.py --probe 16384              # also time one 16k × 16k matching

Prints a markdown table and writes benchmarks/results/sweep.md. Overhead per task is
(wall × workers − Σ in-task matching seconds) / tasks: scheduling, transfer, cache writes and
the driver's reading and fingerprinting of the runs, spread over the tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from saecore.cache import atomic_write_text  # noqa: E402
from saecore.consistency import MatchCache  # noqa: E402
from saecore.matching import match_decoders  # noqa: E402
from saecore.sweep import run_sweep  # noqa: E402


def write_workspace(root: Path, families: int, seeds: int, latents: int, d_in: int, noise: float = 0.25) -> None:
    """SAELens folders: per family one base dictionary; each seed = base + noise, rows shuffled."""
    for f in range(families):
        gen = torch.Generator().manual_seed(1000 + f)
        base = torch.randn(latents, d_in, generator=gen)
        for s in range(seeds):
            dec = (base + noise * torch.randn(latents, d_in, generator=gen))[torch.randperm(latents, generator=gen)]
            folder = root / f"topk_k{8 * (f + 1)}" / f"seed{s}"
            folder.mkdir(parents=True)
            (folder / "cfg.json").write_text(json.dumps({"architecture": "topk", "d_in": d_in, "d_sae": latents,
                                                         "k": 8 * (f + 1), "dtype": "float32"}))
            save_file({"W_dec": dec.contiguous(), "W_enc": dec.T.contiguous()}, str(folder / "sae_weights.safetensors"))


def task_seconds(cache: MatchCache) -> tuple[float, list[str]]:
    """Σ in-task matching seconds and the solvers used, from the cached entries' metadata."""
    total, methods = 0.0, set()
    for p in cache.root.glob("*.parquet"):
        m = cache.load(p.stem)
        total += m.info.get("seconds", {}).get("total", 0.0)
        methods.add(m.info.get("method", "?"))
    return total, sorted(methods)


def measure(root: Path, executor: str, workers: int, cache_dir: Path) -> dict:
    cache = MatchCache(cache_dir)
    t0 = time.perf_counter()
    res = run_sweep(root, executor, workers=workers, cache=cache, device="cpu")
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    again = run_sweep(root, executor, workers=workers, cache=cache, device="cpu")
    rerun = time.perf_counter() - t1
    assert again.tasks.computed == 0, "second sweep should be fully cached"
    busy, methods = task_seconds(cache)
    n = res.tasks.computed
    return {"executor": f"{executor} ×{workers}", "tasks": n, "wall": wall, "rate": n / wall,
            "task_mean": busy / n, "overhead": (wall * workers - busy) / n, "rerun": rerun, "methods": methods,
            "values": {(f, p.a, p.b): p.pw_mcc for f, fam in res.families.items() for p in fam.pairs}}


def _warm_up() -> int:
    import saecore.sweep  # noqa: F401

    return os.getpid()


def probe(latents: int, d_in: int) -> dict:
    """One realistic cross-seed matching of the given size with match_decoders."""
    gen = torch.Generator().manual_seed(7)
    base = torch.randn(latents, d_in, generator=gen)
    a = base + 0.25 * torch.randn(latents, d_in, generator=gen)
    b = (base + 0.25 * torch.randn(latents, d_in, generator=gen))[torch.randperm(latents, generator=gen)]
    t0 = time.perf_counter()
    m = match_decoders(a, b, device="cpu")
    return {"latents": latents, "d_in": d_in, "seconds": time.perf_counter() - t0, "method": m.info.get("method"),
            "parts": {k: round(v, 2) for k, v in m.info.get("seconds", {}).items()}}


def table(args, rows: list[dict], ray_start: float) -> list[str]:
    """The markdown report: set-up, one row per executor, notes."""
    diff = max(abs(rows[0]["values"][k] - rows[1]["values"][k]) for k in rows[0]["values"])
    cpu = platform.processor() or platform.machine()
    lines = [
        f"# Sweep benchmark ({args.families} families × {args.seeds} seeds × {args.latents:,} latents, "
        f"d_in {args.d_in} = {rows[0]['tasks']} matchings)", "",
        f"Machine: {os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}, CPU only, shared with other work "
        f"(timings are noisy). Solver: {', '.join(rows[0]['methods'])}.", "",
        "| executor | tasks | wall (s) | tasks/s | mean matching in task (s) | overhead per task (s) "
        "| all-cached rerun (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['executor']} | {r['tasks']} | {r['wall']:.1f} | {r['rate']:.2f} | {r['task_mean']:.2f} "
                     f"| {r['overhead']:.2f} | {r['rerun']:.2f} |")
    lines += ["", f"Ray start-up and worker warm-up (local, {args.ray_workers} CPUs; not in the wall times): "
              f"{ray_start:.1f} s. Largest |PW-MCC(ray) − PW-MCC(local)| over all pairs: {diff:.1e}.",
              "Overhead per task = (wall × workers − Σ in-task matching seconds) / tasks: reading and "
              "fingerprinting every run in the driver, scheduling, transfers and cache writes."]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--latents", type=int, default=4096)
    ap.add_argument("--d-in", type=int, default=256)
    ap.add_argument("--ray-workers", type=int, default=2)
    ap.add_argument("--probe", type=int, default=0, help="also time one N × N matching (e.g. 16384)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sweep.md"))
    args = ap.parse_args()

    import ray

    import saecore

    tmp = Path(tempfile.mkdtemp(prefix="saecore-sweep-bench-"))
    root = tmp / "ws"
    write_workspace(root, args.families, args.seeds, args.latents, args.d_in)
    rows = [measure(root, "local", 1, tmp / "cache-local")]
    t0 = time.perf_counter()
    ray.init(num_cpus=args.ray_workers, include_dashboard=False, log_to_driver=False,
             runtime_env={"py_modules": [saecore]})
    ray.get([ray.remote(_warm_up).remote() for _ in range(args.ray_workers)])  # start workers, import saecore
    ray_start = time.perf_counter() - t0
    rows.append(measure(root, "ray", args.ray_workers, tmp / "cache-ray"))
    ray.shutdown()

    lines = table(args, rows, ray_start)
    if args.probe:
        p = probe(args.probe, max(args.d_in, 768))
        lines += ["", f"One {p['latents']:,} × {p['latents']:,} matching (d_in {p['d_in']}, {p['method']}): "
                  f"{p['seconds']:.1f} s; parts {p['parts']}."]
    text = "\n".join(lines) + "\n"
    print(text)
    atomic_write_text(Path(args.out), text)


if __name__ == "__main__":
    main()
