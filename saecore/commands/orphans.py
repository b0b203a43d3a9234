"""`python -m saecore orphans RUNS_OR_FOLDER` and `python -m saecore partners A B`: latents no other seed learned,
and many-to-one partners between runs of different widths."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from saecore.text import plural

DEFAULT_COMPARE = ("frequency",)
# Larger-run latents shown in the human-readable partners summary.
SHOWN_FAN_IN = 10


def _family_runs(paths: list[str], d_in: int | None, checkpoints: bool) -> list[tuple[str, list]]:
    """(family key, runs) to analyse: every family (≥ 2 runs) of one folder that is not itself a run, or the given runs."""
    from saecore.cli import load_runs
    from saecore.errors import InputError, LoadError
    from saecore.loaders import detect

    if len(paths) == 1:
        try:
            detect(paths[0])
        except LoadError:
            if not Path(paths[0]).is_dir():
                raise
        else:
            raise InputError(f"{paths[0]} is a single run: give two or more runs, or a folder holding a family")
        return _scanned_families(paths[0], d_in, checkpoints)
    return [("given runs", load_runs(paths, d_in))]


def _scanned_families(root: str, d_in: int | None, checkpoints: bool) -> list[tuple[str, list]]:
    """Families found under a folder (final runs only unless checkpoints), each with its runs loaded and named."""
    from saecore.cli import D_IN_OPTION, load_runs
    from saecore.errors import InputError
    from saecore.workspace import scan

    ws = scan(root, d_in=d_in, d_in_source=D_IN_OPTION)
    out = []
    for key, metas in ws.families.items():
        if not checkpoints and any(m.step is not None for m in metas):
            continue
        if len(metas) < 2:
            print(f"skipping {key}: only one run", file=sys.stderr)
            continue
        runs = load_runs([m.path for m in metas], d_in)
        out.append((key, [r.renamed(m.name) for r, m in zip(runs, metas)]))
    if not out:
        raise InputError(f"{root}: no family with at least two runs"
                         + ("" if checkpoints else " (checkpoint families are skipped; add --checkpoints)"))
    return out


def _scores_tables(runs: list) -> list:
    """Explanation scores of each run from saecore.scoring (None where a run has none)."""
    from saecore.errors import InputError, LoadError

    try:
        from saecore.scoring import scores_table
    except ImportError as exc:
        raise InputError("--scores needs saecore.scoring, which this installation lacks") from exc
    out = []
    for r in runs:
        try:
            df = scores_table(r.meta.path)
        except LoadError:
            df = None
        out.append(df if df is not None and len(df) else None)
    return out


def _pct(n: int, total: int) -> str:
    return f"{n} ({100 * n / total:.1f}%)" if total else str(n)


def _fmt(x: float | None, spec: str = ".4g") -> str:
    return "—" if x is None else format(x, spec)


def _print_report(key: str, report, compare: list[str]) -> None:
    print(f"{key}: {plural(len(report.runs), 'run')}, orphan = best {report.sign} cosine < {report.threshold:g} "
          f"against every other run (dead rows {report.dead}d; PW-MCC {_fmt(report.info.get('pw_mcc'), '.4f')})")
    width = max(len(r) for r in report.runs) + 2
    print(f"  {'run':<{width}}{'latents':>8}{'dead':>6}{'orphan':>16}{'shared':>16}{'partial':>16}")
    for r in report.per_run:
        live = r.n_live
        print(f"  {r.run:<{width}}{r.n_latents:>8}{r.count('dead'):>6}{_pct(r.n_orphan, live):>16}"
              f"{_pct(r.count('shared'), live):>16}{_pct(r.count('partial'), live):>16}")
    for column in compare:
        if not report.has_column(column):
            print(f"  ({column}: not available)")
            continue
        print(f"  {column}, orphan vs shared (means, medians, orphan − shared mean with 95% bootstrap CI, "
              f"Mann-Whitney p):")
        for g in report.compare(column):
            print(f"    {g.label:<{width}} n {g.n_orphan}/{g.n_shared}  mean {_fmt(g.mean_orphan)} vs {_fmt(g.mean_shared)}"
                  f"  median {_fmt(g.median_orphan)} vs {_fmt(g.median_shared)}  diff {_fmt(g.diff)} "
                  f"[{_fmt(g.ci_low)}, {_fmt(g.ci_high)}]  p {_fmt(g.p_value, '.3g')}")
    seconds = report.info.get("seconds", {})
    print(f"  matched in {seconds.get('matching', 0):.2f} s ({report.cached} of "
          f"{plural(len(report.runs) * (len(report.runs) - 1) // 2, 'pair')} cached)")


def cmd_orphans(args) -> int:
    import pandas as pd

    from saecore.cli import _cache, _tqdm_progress
    from saecore.orphans import family_orphans

    t0 = time.perf_counter()
    families = _family_runs(args.runs, args.d_in, args.checkpoints)
    compare = args.compare or list(DEFAULT_COMPARE)
    out, tables = [], []
    for key, runs in families:
        report = family_orphans(runs, args.threshold, "abs" if args.abs else "signed", args.dead, args.device,
                                args.method, _cache(args), None if args.json else _tqdm_progress("orphans"),
                                _scores_tables(runs) if args.scores else None)
        out.append({"family": key, **report.to_json(compare)})
        if args.out:
            tables.append(report.table())
            tables[-1].insert(0, "family", key)
        if not args.json:
            _print_report(key, report, compare)
    if args.out:
        pd.concat(tables, ignore_index=True).to_csv(args.out, index=False)
    if args.json:
        print(json.dumps({"threshold": args.threshold, "families": out, "seconds": time.perf_counter() - t0}))
    elif args.out:
        print(f"wrote {plural(sum(len(t) for t in tables), 'latent')} to {args.out}")
    return 0


def cmd_partners(args) -> int:
    from saecore.cli import _cache, _tqdm_progress, load_runs
    from saecore.partners import find_partners

    a, b = load_runs([args.run_a, args.run_b], args.d_in)
    res = find_partners(a, b, args.top, "abs" if args.abs else "signed", args.device, args.method, _cache(args),
                        progress=None if args.json else _tqdm_progress("partners"))
    if args.out:
        res.frame().to_csv(args.out, index=False)
    if args.fan_in_out:
        res.fan_in().to_csv(args.fan_in_out, index=False)
    summary = res.to_json()
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"top-{res.k} partners of {res.small} ({res.d_small} latents) in {res.large} ({res.d_large} latents), "
          f"{res.sign} cosine")
    print("  mean cosine of partner " + ", ".join(f"{i + 1}: {_fmt(c, '.4f')}" for i, c in enumerate(summary["mean_cos"]))
          + f"; 1-to-1 matched: {_fmt(summary['mean_matched_score'], '.4f')}")
    print(f"  top-1 is the 1-to-1 partner for {_fmt(100 * (summary['top1_is_matched'] or 0), '.1f')}% of latents")
    hist = ", ".join(f"{k}: {v}" for k, v in summary["fan_in_histogram"].items())
    print(f"  {res.large} latents by fan-in (how many {res.small} latents have them as top-1): {hist}")
    for row in summary["top_fan_in"][:SHOWN_FAN_IN]:
        print(f"    latent {row['latent']}: fan-in {row['fan_in']} from {row['pointers']} "
              f"(1-to-1 partner {row['matched_partner']})")
    print(f"  {res.info['seconds']['total']:.2f} s on {res.info['device']}")
    for path in (args.out, args.fan_in_out):
        if path:
            print(f"wrote {path}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--abs", action="store_true", help="use |cosine| instead of the signed cosine")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    p.add_argument("--method", default="auto", help="matching solver (auto, dense, ...)")
    p.add_argument("--d-in", type=int, default=None, help="d_in for plain array files")
    p.add_argument("--cache", default=None, help="cache folder (default $SAECORE_CACHE_DIR or ~/.cache/saecore)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached matches")


def register(subparsers) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "orphans", help="latents whose best cosine to every other seed of the family is below a threshold")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR_OR_RUNS",
                   help="two or more runs of one family, or a folder (every family under it is analysed)")
    p.add_argument("--threshold", type=float, default=0.7, help="orphan below, shared at or above (default 0.7)")
    p.add_argument("--dead", choices=("include", "exclude"), default="exclude",
                   help="zero-norm rows in the matching (they are never orphans or shared either way)")
    p.add_argument("--compare", action="append", default=None, metavar="COLUMN",
                   help="per-feature column to compare between orphan and shared latents (repeatable; "
                        "default frequency)")
    p.add_argument("--scores", action="store_true", help="join explanation scores (saecore.scoring) to the table")
    p.add_argument("--checkpoints", action="store_true", help="with a folder, also analyse checkpoint families")
    p.add_argument("--out", default=None, help="write one row per latent (all runs) to this CSV file")
    _common(p)
    p.set_defaults(func=cmd_orphans)
    p = subparsers.add_parser(
        "partners", help="each latent of the smaller run's top-k partners in the larger run, and fan-in")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--top", type=int, default=3, help="partners per latent (default 3)")
    p.add_argument("--out", default=None, help="write one row per smaller-run latent to this CSV file")
    p.add_argument("--fan-in-out", default=None, help="write one row per larger-run latent (fan-in) to this CSV file")
    _common(p)
    p.set_defaults(func=cmd_partners)
