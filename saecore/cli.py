"""Command line: `python -m saecore info|pwmcc|matches|...`. Parses arguments, calls the library, prints."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path

from saecore.errors import SaecoreError
from saecore.text import plural, shape_text

# How a d_in typed on the command line is named in messages.
D_IN_OPTION = "--d-in"


def _tqdm_progress(desc: str):
    """A progress callback drawing a tqdm bar on stderr."""
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int, message: str) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False, disable=total <= 1)
        bar.set_postfix_str(message[-60:], refresh=False)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def load_runs(paths: list[str], d_in: int | None = None) -> list:
    """Load runs given on the command line for matching (decoders only); plain arrays borrow d_in from runs that state it."""
    from concurrent.futures import ThreadPoolExecutor

    from saecore.loaders import arrays, detect, load_run

    def read(i: int):
        run = load_run(paths[i], d_in=d_in, with_encoder=False, d_in_source=D_IN_OPTION)
        run.fingerprint  # noqa: B018 (hashed now, while the weights are in cache; the match cache needs it)
        return run

    formats = [detect(p) for p in paths]
    stated = [i for i, fmt in enumerate(formats) if fmt != arrays.NAME]
    # Reading and hashing release the GIL: two runs read on two threads take the time of one.
    with ThreadPoolExecutor(max(1, min(4, len(stated)))) as pool:
        runs: dict[int, object] = dict(zip(stated, pool.map(read, stated)))
    borrowed = next(iter(runs.values()), None)
    known, source = ((d_in, D_IN_OPTION) if d_in or borrowed is None
                     else (borrowed.d_in, f"{borrowed.meta.d_in_source or 'd_in'} of {borrowed.name}"))
    for i, (p, fmt) in enumerate(zip(paths, formats)):
        if fmt == arrays.NAME:
            runs[i] = load_run(p, d_in=known, d_in_source=source)
    out = [runs[i] for i in range(len(paths))]
    names = [r.name for r in out]
    if len(set(names)) < len(names):
        out = [r.renamed(p) for r, p in zip(out, paths)]
    return out


def _cache(args):
    from saecore.consistency import MatchCache

    return None if args.no_cache else MatchCache(Path(args.cache) / "matches" if args.cache else None)


def cmd_info(args) -> int:
    from saecore.loaders import load_meta, no_runs_message
    from saecore.workspace import scan

    root = Path(args.path)
    if root.is_dir():
        ws = scan(root, d_in=args.d_in, d_in_source=D_IN_OPTION)
        metas, errors = ws.runs, ws.errors
        family = ws.family_of
    else:
        metas, errors = [load_meta(root, d_in=args.d_in, d_in_source=D_IN_OPTION)], []
        family = lambda m: m.family_key()  # noqa: E731
    families: dict[str, list[str]] = {}
    rows = []
    for m in metas:
        families.setdefault(family(m), []).append(m.name)
        rows.append({"name": m.name, "path": m.path, "format": m.format, "architecture": m.architecture,
                     "sparsity": m.sparsity, "d_in": m.d_in, "d_sae": m.d_sae, "seed": m.seed, "step": m.step,
                     "family": family(m), "warnings": []})
    for e in errors:
        rows.append({"name": Path(e.path).name, "path": e.path, "format": None, "architecture": None, "sparsity": None,
                     "d_in": None, "d_sae": None, "seed": None, "step": None, "family": None, "warnings": [e.reason]})
    if args.json:
        print(json.dumps({"runs": rows, "families": families}))
        return 0
    for r in rows:
        warn = f"  ! {'; '.join(r['warnings'])}" if r["warnings"] else ""
        shape = shape_text(r["d_in"], r["d_sae"]) if r["d_in"] else "?"
        print(f"{r['name']:<40} {str(r['format']):<20} {str(r['architecture']):<12} {str(r['sparsity']):<10} "
              f"{shape:<16} seed={r['seed']} step={r['step']}{warn}")
    if not metas:
        print(no_runs_message(root), file=sys.stderr)
        return 1
    print(f"\n{plural(len(metas), 'run')} in {plural(len(families), 'family', 'families')}"
          + (f", {len(errors)} unreadable" if errors else ""))
    for key, names in families.items():
        print(f"  {key}: {', '.join(names)}")
    return 0


def cmd_pwmcc(args) -> int:
    from saecore.consistency import compare_runs

    runs = load_runs(args.runs, args.d_in)
    sign = "abs" if args.abs else "signed"
    comp = compare_runs(runs, sign, args.dead, args.device, args.method, _cache(args),
                        None if args.json else _tqdm_progress("pw-mcc"))
    if args.json:
        print(json.dumps(comp.pw.to_json()))
        return 0
    print(f"PW-MCC ({sign} cosine, dead rows {args.dead}d)")
    for p in comp.pw.pairs:
        print(f"  {runs[p.a].name} ↔ {runs[p.b].name}: {p.pw_mcc:.4f}  ({plural(p.n_matched, 'pair')})")
    print(f"mean {comp.pw.mean:.4f}  std {comp.pw.std:.4f}  over {plural(len(comp.pw.pairs), 'pair')}")
    print(comp.solves().detail)
    return 0


def cmd_matches(args) -> int:
    from saecore.consistency import cached_match

    a, b = load_runs([args.run_a, args.run_b], args.d_in)
    match, _ = cached_match(a, b, "abs" if args.abs else "signed", args.dead, args.device, args.method, _cache(args))
    df = match.pairs()
    if args.csv:
        df.to_csv(args.csv, index=False)
        print(f"wrote {plural(len(df), 'matched pair')} to {args.csv} (MCC {match.mcc:.4f})")
    else:
        print(df.to_string(index=False, max_rows=40))
    return 0


def _matching_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--abs", action="store_true", help="use |cosine| instead of the signed cosine")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    p.add_argument("--dead", choices=("include", "exclude"), default="include",
                   help="zero-norm decoder rows: take part with score 0, or leave them out")
    p.add_argument("--method", default="auto", help="matching solver (auto, dense, ...)")
    p.add_argument("--d-in", type=int, default=None, help="d_in for plain array files")
    p.add_argument("--cache", default=None, help="cache folder (default $SAECORE_CACHE_DIR or ~/.cache/saecore)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached matches")


def build_parser(plugins: bool = True) -> argparse.ArgumentParser:
    """The argument parser; plugins=False leaves out the commands in saecore.commands (and their imports)."""
    parser = argparse.ArgumentParser(prog="python -m saecore", description="SAE feature consistency across seeds")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="list the runs found under PATH and their families")
    p.add_argument("path")
    p.add_argument("--json", action="store_true")
    p.add_argument("--d-in", type=int, default=None)
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("pwmcc", help="PW-MCC of two or more runs")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _matching_options(p)
    p.set_defaults(func=cmd_pwmcc)
    p = sub.add_parser("matches", help="the matched feature pairs of two runs")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--csv", default=None, help="write one row per matched pair to this file")
    _matching_options(p)
    p.set_defaults(func=cmd_matches)
    if not plugins:
        return parser
    import saecore.commands as commands

    for mod in pkgutil.iter_modules(commands.__path__):
        importlib.import_module(f"saecore.commands.{mod.name}").register(sub)
    return parser


# The commands defined in this module; the others are registered from saecore.commands.
BUILTIN_COMMANDS = ("info", "pwmcc", "matches")
# Read-only queries: `python -m saecore` exits right after them without tearing down the interpreter.
QUICK_EXIT_COMMANDS = BUILTIN_COMMANDS


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # A built-in command needs none of the other commands' modules (pandas, the explainer, ...).
    args = build_parser(plugins=not (argv and argv[0] in BUILTIN_COMMANDS)).parse_args(argv)
    if getattr(args, "func", None) is cmd_pwmcc and len(args.runs) < 2:
        print("error: pwmcc needs at least two runs", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except (SaecoreError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
