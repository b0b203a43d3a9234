"""`python -m saecore sweep PATH`: PW-MCC of every family under a folder, on local threads or Ray."""

from __future__ import annotations

import argparse
import json
import sys

from saecore.text import plural


def _progress_bar():
    """A tqdm bar on stderr that starts afresh when the count switches from runs read to tasks done."""
    from tqdm import tqdm

    state: dict = {"bar": None, "total": None, "done": 0}

    def update(done: int, total: int, message: str) -> None:
        if state["bar"] is None or state["total"] != total or done < state["done"]:
            if state["bar"] is not None:
                state["bar"].close()
            state["bar"] = tqdm(total=total, desc="sweep", file=sys.stderr, leave=False, disable=total <= 1)
            state["total"] = total
        bar = state["bar"]
        bar.set_postfix_str(message[-70:], refresh=False)
        bar.n = state["done"] = done
        bar.refresh()

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].close()

    return update, close


def _print_table(result) -> None:
    print(f"PW-MCC per family ({result.sign} cosine, dead rows {result.dead}d)")
    for name, fam in result.families.items():
        if fam.mean is None:
            print(f"  {name}: {plural(len(fam.runs), 'run')}, no pairs")
        else:
            print(f"  {name}: {fam.mean:.4f} ± {fam.std:.4f} over {plural(len(fam.pairs), 'pair')} "
                  f"of {plural(len(fam.runs), 'run')}")
    t = result.tasks
    print(f"{plural(t.total, 'task')}: {t.computed} computed, {t.cached} cached, {t.failed} failed "
          f"in {result.seconds:.1f} s")
    for e in result.errors:
        print(f"  ! {e.path}: {e.reason}")


def cmd_sweep(args) -> int:
    from saecore.consistency import MatchCache
    from saecore.sweep import run_sweep

    cache = MatchCache(f"{args.cache}/matches" if args.cache else None)
    update, close = (None, None) if args.json else _progress_bar()
    try:
        result = run_sweep(args.path, args.executor, workers=args.workers, ray_address=args.ray_address,
                           sign="abs" if args.abs else "signed", dead=args.dead, device=args.device,
                           method=args.method, cache=cache, d_in=args.d_in, progress=update)
    finally:
        if close:
            close()
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        _print_table(result)
    return 0


def register(subparsers) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "sweep", help="PW-MCC of every family under PATH (all within-family pairs, cached, local or on Ray)")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local threads (default) or Ray tasks")
    p.add_argument("--ray-address", default=None,
                   help="join this Ray cluster (e.g. 'auto' or ray://host:10001); default starts a local Ray")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel tasks (local: threads, default 1; ray: CPUs of the local Ray it starts)")
    p.add_argument("--abs", action="store_true", help="use |cosine| instead of the signed cosine")
    p.add_argument("--dead", choices=("include", "exclude"), default="include",
                   help="zero-norm decoder rows: take part with score 0, or leave them out")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    p.add_argument("--method", default="auto", help="matching solver (auto, dense, ...)")
    p.add_argument("--d-in", type=int, default=None, help="d_in for plain array files")
    p.add_argument("--cache", default=None, help="cache folder (default $SAECORE_CACHE_DIR or ~/.cache/saecore)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_sweep)
