"""CLI: `score` (detection, fuzzing and embedding scores of a run's explanations, or an import of delphi scores)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from saecore.text import plural


def parse_feature_ranges(spec: str) -> list[int]:
    """'0-99' or '3,7,10-12' -> sorted feature indices."""
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m or (m[2] is not None and int(m[2]) < int(m[1])):
            raise ValueError(f"--features must look like 0-99 or 3,7,10-12, got {spec!r}")
        out.update(range(int(m[1]), int(m[2] or m[1]) + 1))
    return sorted(out)


def _features(args) -> list[int] | None:
    from saecore.explain import sample_features
    from saecore.explanations import pick_explainer, read_explanations

    if args.features and args.n:
        raise ValueError("give either --features or --n, not both")
    if args.features:
        return parse_feature_ranges(args.features)
    if args.n:
        explained = pick_explainer(read_explanations(args.run), args.explainer)
        return sample_features(explained["feature"].tolist(), args.n, args.seed)
    return None


def _print_import(report) -> None:
    print(f"{report.source}: delphi scores of module {report.module!r}")
    for scorer, n in report.files.items():
        print(f"  {scorer}: {plural(n, 'latent file')}")
    for method, s in report.to_json()["methods"].items():
        mean = "-" if s["mean"] is None else f"{s['mean']:.3f}"
        print(f"  {method}: {plural(s['features'], 'feature')}, mean balanced accuracy {mean}")
    for w in report.warnings:
        print(f"  ! {w}")
    if report.stored_to:
        print(f"  stored in {report.stored_to}")


def _phased_progress(desc: str):
    """A progress callback that starts a fresh tqdm bar for each phase (embedding, then the judge's batches)."""
    from saecore.cli import _tqdm_progress

    phase: dict = {"total": None, "update": None}

    def update(done: int, total: int, message: str) -> None:
        if phase["update"] is None or total != phase["total"]:
            phase.update(total=total, update=_tqdm_progress(desc))
        phase["update"](done, total, message)

    return update


def cmd_score(args) -> int:
    from saecore.delphi import import_delphi_scores
    from saecore.examples import SamplingConfig
    from saecore.scoring import score_run

    if args.import_delphi:
        report = import_delphi_scores(args.import_delphi, args.run, module=args.module,
                                      explainer=args.explainer or "delphi", store=not args.dry_run)
        if args.json:
            print(json.dumps(report.to_json()))
        else:
            _print_import(report)
        return 0
    methods = args.method
    client = config = embedder = store = cache = None
    if any(m in ("detection", "fuzzing") for m in methods):
        from saecore.explain import AnswerCache, ExplainerConfig, build_client

        config = ExplainerConfig(base_url=args.base_url, model=args.model, concurrency=args.concurrency,
                                 timeout=args.timeout, max_retries=args.max_retries)
        client = build_client(config, key_env=args.key_env)
        cache = AnswerCache(Path(args.cache) if args.cache else None)
    if "embedding" in methods:
        from saecore.semantic import Embedder

        embedder = Embedder(args.embedder, device=args.device)
    if args.acts:
        from saecore.activations import open_activations

        store = open_activations(args.acts)
    sampling = SamplingConfig(n_activating=args.n_activating, n_non_activating=args.n_non_activating, seed=args.seed)
    report = score_run(args.run, methods, _features(args), args.explainer, client, config, store, embedder, sampling,
                       args.batch_size, cache, args.retry_failed,
                       None if args.json else _phased_progress("score"), device=args.device_encode,
                       constrain=_constrain(args))
    if args.json:
        print(json.dumps(report.to_json()))
        return 0
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    for method, s in report.summary().items():
        mean = "-" if s["mean"] is None else f"{s['mean']:.3f}"
        print(f"{method}: {s['scored']}/{s['features']} features scored, mean {mean}"
              + (f", {s['nan']} with too few answers" if s["nan"] else "")
              + (f", {plural(s['failed_examples'], 'example')} unanswered" if s["failed_examples"] else ""))
        for e, c in s["errors"].items():
            print(f"  {c} × {e}")
    print(f"{report.requests} requests, {report.n_cached} results from cache, {report.wall_seconds:.1f} s")
    if report.stored_to:
        print(f"stored in {report.stored_to}")
    return 0


def _constrain(args) -> bool:
    """Whether judge requests carry a response schema: asked for, or the built-in local explainer by default."""
    from saecore.explain import DEFAULT_ENDPOINT

    local = args.base_url.rstrip("/") == DEFAULT_ENDPOINT.rstrip("/")
    return args.constrain == "on" or (args.constrain == "auto" and local)


def register(sub: argparse._SubParsersAction) -> None:
    from saecore.explain import API_KEY_ENV, DEFAULT_ENDPOINT, DEFAULT_MODEL

    p = sub.add_parser("score", help="score a run's explanations (detection, fuzzing, embedding) or import delphi "
                                     "scores")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--method", nargs="+", choices=["detection", "fuzzing", "embedding"],
                   default=["detection", "fuzzing"], help="scores to compute (default detection fuzzing)")
    p.add_argument("--features", default=None, help="feature indices, e.g. 0-99 or 3,7,10-12 (default: all explained)")
    p.add_argument("--n", type=int, default=None, help="score a seeded random sample of n explained features")
    p.add_argument("--seed", type=int, default=0, help="seed of the feature sample and of the examples")
    p.add_argument("--explainer", default=None, help="score this explainer's explanations (default: the one covering "
                                                     "the most features)")
    p.add_argument("--acts", default=None, help="held-out activations folder for non-activating examples (without "
                                                "it: other features' contexts)")
    p.add_argument("--n-activating", type=int, default=10)
    p.add_argument("--n-non-activating", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=5, help="examples per judge prompt")
    p.add_argument("--base-url", "--endpoint", dest="base_url", default=DEFAULT_ENDPOINT,
                   help=f"judge endpoint (default {DEFAULT_ENDPOINT})")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"judge model (default {DEFAULT_MODEL})")
    p.add_argument("--key-env", default=API_KEY_ENV, help=f"environment variable holding the API key "
                                                          f"(default {API_KEY_ENV})")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--max-retries", type=int, default=4)
    p.add_argument("--retry-failed", action="store_true", help="ask again where a cached answer was unparseable")
    p.add_argument("--cache", default=None, help="answer cache folder (default <cache>/explanations)")
    p.add_argument("--embedder", default=None, help="sentence-transformers model folder (default all-MiniLM-L6-v2)")
    p.add_argument("--device", default="cpu", help="device of the embedder (cpu, cuda, auto)")
    p.add_argument("--device-encode", default="cpu", help="device that encodes the activations")
    p.add_argument("--import-delphi", default=None, metavar="DIR", help="import delphi scores (results, scores/ or "
                                                                       "one scorer folder) instead of scoring")
    p.add_argument("--module", default=None, help="with --import-delphi: the hookpoint to read when there are several")
    p.add_argument("--dry-run", action="store_true", help="with --import-delphi: report only, store nothing")
    p.add_argument("--constrain", choices=["auto", "on", "off"], default="auto",
                   help="ask the judge for a JSON-schema-constrained list of 0/1 answers (llama.cpp servers honour it); "
                        "auto: on for the local explainer endpoint only")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_score)
