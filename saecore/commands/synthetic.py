"""`python -m saecore synthetic`: train SAE seed families on the synthetic model organism; curves, finals, figure."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

RESULT_FILE = "result.json"
CURVES_FILE = "curves.parquet"
FIGURE_PNG = "figure.png"
FIGURE_HTML = "figure.html"
COMMAND_FILE = "COMMAND.txt"
FIRST_SEED = 42


def register(subparsers) -> None:
    p = subparsers.add_parser("synthetic", help="GT-MCC and PW-MCC of SAE seed families on synthetic sparse data",
                              description="Train SAE seed families (full batch, SPEC §3) on data with a known "
                                          "dictionary; write curves (Parquet), finals (JSON) and a figure.")
    p.add_argument("--regime", default="matched", choices=("matched", "redundant", "compressive"))
    p.add_argument("--arch", nargs="+", default=["topk", "standard"],
                   choices=("standard", "topk", "batchtopk", "jumprelu"))
    p.add_argument("--seeds", type=int, default=5, help=f"number of seeds ({FIRST_SEED}, {FIRST_SEED + 1}, ...)")
    p.add_argument("--steps", type=int, default=30_000)
    p.add_argument("--out", default=None, help="folder for result.json, curves.parquet, figure.png/html")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    g = p.add_argument_group("setting (defaults: the regime's)")
    g.add_argument("--n-features", type=int, default=None, help="true features")
    g.add_argument("--d-in", type=int, default=None, help="data dimension")
    g.add_argument("--k", type=int, default=None, help="active true features per sample")
    g.add_argument("--n-samples", type=int, default=None)
    g.add_argument("--data-seed", type=int, default=None)
    g.add_argument("--zipf", type=float, default=None, help="Zipf exponent of feature frequencies (default uniform)")
    g.add_argument("--noise", type=float, default=None, help="std of gaussian noise added to X")
    g.add_argument("--d-sae", type=int, default=None, help="SAE latents")
    g.add_argument("--sae-k", type=int, default=None, help="k of topk/batchtopk SAEs (default: the data's k)")
    t = p.add_argument_group("training")
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--l1", type=float, default=0.01, help="L1 coefficient (all architectures)")
    t.add_argument("--log-every", type=int, default=100)
    t.add_argument("--chunk-size", type=int, default=2048, help="rows per piece of the full-batch gradient")
    t.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads, for what torch computes (batchtopk/jumprelu gradients, evaluation); "
                        "the compiled standard/TopK kernel uses every core (NUMBA_NUM_THREADS caps it)")
    t.add_argument("--time-limit", type=float, default=None,
                   help="stop each architecture after this many seconds of training and report the partial "
                        "run (a later call resumes it from the cache)")
    t.add_argument("--cache", default=None, help="cache folder (default $SAECORE_CACHE_DIR or ~/.cache/saecore)")
    t.add_argument("--no-cache", action="store_true", help="neither read nor write cached families")
    t.add_argument("--no-figure", action="store_true", help="skip the PNG/HTML figure")
    p.set_defaults(func=cmd_synthetic)


def cmd_synthetic(args: argparse.Namespace) -> int:
    import torch

    from saecore.cli import _tqdm_progress
    from saecore.synthetic import regime_config, run_experiment

    torch.set_num_threads(max(1, args.threads))
    data, d_sae = regime_config(args.regime, n_features=args.n_features, d_in=args.d_in, k=args.k,
                                n_samples=args.n_samples, seed=args.data_seed, zipf_exponent=args.zipf,
                                noise_std=args.noise, d_sae=args.d_sae)
    seeds = list(range(FIRST_SEED, FIRST_SEED + args.seeds))
    result = run_experiment(data, d_sae, args.arch, seeds, args.steps, k=args.sae_k, regime=args.regime,
                            device=args.device, progress=_tqdm_progress("synthetic"),
                            cache_dir=Path(args.cache) if args.cache else None, use_cache=not args.no_cache,
                            time_limit=args.time_limit,
                            lr=args.lr, l1_coefficient=args.l1, log_every=args.log_every, chunk_size=args.chunk_size)
    summary = result.summary()
    if args.out:
        write_outputs(Path(args.out), result, summary, not args.no_figure)
    if args.json:
        print(json.dumps(summary))
    else:
        print_summary(summary)
    return 0


def write_outputs(out: Path, result, summary: dict, figure: bool) -> None:
    """result.json, curves.parquet, COMMAND.txt and (optionally) figure.png + figure.html in `out`."""
    from saecore.cache import atomic_write_bytes, atomic_write_json, atomic_write_parquet, atomic_write_text

    atomic_write_json(out / RESULT_FILE, summary)
    atomic_write_parquet(out / CURVES_FILE, result.curves(), {"regime": summary["regime"], "data": summary["data"],
                                                              "d_sae": summary["d_sae"]})
    atomic_write_text(out / COMMAND_FILE, "python -m saecore " + shlex.join(sys.argv[1:]) + "\n")
    if figure:
        from saecore.plots.export import figure_image
        from saecore.plots.style import with_caption
        from saecore.plots.synthetic import experiment_figure

        fig = experiment_figure(summary, result.curves())
        atomic_write_bytes(out / FIGURE_PNG, figure_image(fig, "png"))
        atomic_write_text(out / FIGURE_HTML, with_caption(fig).to_html(include_plotlyjs=True, full_html=True))


def print_summary(summary: dict) -> None:
    print(f"{summary['regime']}: {summary['description']}; {summary['steps']} steps, seeds {summary['seeds']}"
          + ("" if summary["completed"] else " (stopped early: partial)"))
    print(f"chance: GT-MCC {summary['chance']['gt_mcc']:.4f}  PW-MCC {summary['chance']['pw_mcc']:.4f}")
    for arch, r in summary["results"].items():
        print(f"  {arch:<10} GT-MCC {r['gt_mcc_mean']:.4f}  PW-MCC {r['pw_mcc_mean']:.4f}  L0 {r['l0_mean']:.2f}  "
              f"MSE {r['mse_mean']:.4g}  (step {r['steps_done']}, {r['seconds']:.0f} s)")
    print(f"{summary['seconds']:.1f} s")
