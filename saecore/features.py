"""Per-feature statistics and top-activating contexts of a run, stored beside it as Parquet."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from saecore.cache import atomic_write_parquet, read_parquet
from saecore.errors import InputError, LoadError

# Files written into a run's folder (or beside a single-file run as <file>.<name>).
STATS_FILE = "feature_stats.parquet"
CONTEXTS_FILE = "contexts.parquet"

Progress = Callable[[int, int, str], None]
STATS_COLUMNS = ("feature", "frequency", "per_million", "mean_activation", "max_activation")
# Lower activation quantile bins sampled besides the top examples: (low, high) fractions of a feature's firings.
QUANTILE_BINS = ((0.5, 0.75), (0.25, 0.5), (0.0, 0.25))


@dataclass(frozen=True)
class Context:
    """A window of text around one activation of a feature: tokens and the feature's activation on each."""

    feature: int
    tokens: list[str]
    activations: list[float]
    kind: str = "top"  # "top" for the strongest examples, "quantile" for samples from lower activation levels
    rank: int = 0
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def max_activation(self) -> float:
        return max(self.activations) if self.activations else 0.0


@dataclass
class FeatureData:
    """Statistics (one row per feature) and context windows (one row per example) of one run."""

    stats: pd.DataFrame
    contexts: pd.DataFrame
    meta: dict


def feature_file(run_path: str | Path, name: str) -> Path:
    """Where a run's feature file lives: inside a run folder, or beside a single-file run as <file>.<name>."""
    run_path = Path(run_path)
    return run_path / name if run_path.is_dir() else run_path.parent / f"{run_path.name}.{name}"


@torch.no_grad()
def _sparse_codes(sae, store, start: int, stop: int, batch_size: int, device: torch.device,
                  progress: Progress | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every non-zero activation over rows [start, stop): (row, feature, value), rows absolute."""
    rows, feats, vals = [], [], []
    total = stop - start
    for i in range(start, stop, batch_size):
        j = min(i + batch_size, stop)
        x = torch.from_numpy(np.asarray(store.rows(i, j), dtype=np.float32)).to(device)
        f = sae.encode(x)[0]
        nz = torch.nonzero(f > 0)
        rows.append((nz[:, 0] + i).cpu().numpy().astype(np.int64))
        feats.append(nz[:, 1].cpu().numpy().astype(np.int32))
        vals.append(f[nz[:, 0], nz[:, 1]].cpu().numpy().astype(np.float32))
        if progress is not None:
            progress(j - start, total, f"encoding {j - start:,}/{total:,} tokens")
    cat = lambda parts, dt: np.concatenate(parts) if parts else np.zeros(0, dt)  # noqa: E731
    return cat(rows, np.int64), cat(feats, np.int32), cat(vals, np.float32)


def feature_stats(feats: np.ndarray, vals: np.ndarray, d_sae: int, n_tokens: int) -> pd.DataFrame:
    """Firing fraction and count per 1M tokens, mean activation when firing, max activation, per feature."""
    counts = np.bincount(feats, minlength=d_sae).astype(np.int64)
    sums = np.bincount(feats, weights=vals.astype(np.float64), minlength=d_sae)
    maxes = np.zeros(d_sae, np.float64)
    np.maximum.at(maxes, feats, vals.astype(np.float64))
    freq = counts / max(n_tokens, 1)
    mean = np.divide(sums, counts, out=np.zeros(d_sae), where=counts > 0)
    return pd.DataFrame({"feature": np.arange(d_sae, dtype=np.int32), "frequency": freq, "per_million": freq * 1e6,
                         "mean_activation": mean, "max_activation": maxes, "count": counts})


def _pick_examples(order: np.ndarray, seg_start: int, seg_len: int, n_top: int, per_bin: int,
                   rng: np.random.Generator) -> list[tuple[str, int, int, str]]:
    """(kind, rank, index into the sorted arrays, bin label) of a feature's top and lower-quantile examples."""
    out = [("top", r, seg_start + r, "") for r in range(min(n_top, seg_len))]
    rest = seg_len - n_top
    if rest <= 0 or per_bin <= 0:
        return out
    for lo, hi in QUANTILE_BINS:
        # The segment is sorted by activation descending: quantile q sits at position (1 - q)·len.
        a, b = int(np.floor((1 - hi) * seg_len)), int(np.ceil((1 - lo) * seg_len))
        a = max(a, n_top)
        if b <= a:
            continue
        picks = np.sort(rng.choice(np.arange(a, b), size=min(per_bin, b - a), replace=False))
        out.extend(("quantile", r, seg_start + int(p), f"{lo:.2f}-{hi:.2f}") for r, p in enumerate(picks))
    return out


def compute_feature_data(sae, store, start: int = 0, stop: int | None = None, n_top: int = 20, before: int = 12,
                         after: int = 4, per_quantile_bin: int = 2, batch_size: int = 4096, seed: int = 0,
                         device: str | torch.device = "cpu", progress: Progress | None = None) -> FeatureData:
    """Statistics and context windows of every feature of `sae` (a single-model BatchedSAE) over stored rows.

    `store` is an ActivationStore; rows [start, stop) should be held out from training. A context is the
    `before` tokens before the activating token and `after` after it, cut at document borders, with the
    feature's activation on every token of the window.
    """
    stop = store.n_tokens if stop is None else stop
    if not 0 <= start < stop <= store.n_tokens:
        raise InputError(f"rows [{start}, {stop}) are outside the {store.n_tokens} stored tokens")
    if sae.n_models != 1:
        raise InputError(f"sae: expected a single model, got {sae.n_models}")
    d_sae = sae.cfg.d_sae
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    sae = sae.to(dev).eval()
    rows, feats, vals = _sparse_codes(sae, store, start, stop, batch_size, dev, progress)
    n_tokens = stop - start
    stats = feature_stats(feats, vals, d_sae, n_tokens)

    by_value = np.lexsort((-vals, feats))  # per feature, strongest first
    by_row = np.lexsort((rows, feats))  # per feature, in text order (for window lookups)
    seg = np.concatenate([[0], np.cumsum(stats["count"].to_numpy())])
    rows_by_row = rows[by_row]
    vals_by_row = vals[by_row]
    vocab = store.token_strings
    tokens, docs = store.tokens, store.docs
    rng = np.random.default_rng(seed)
    records = []
    for feat in range(d_sae):
        s0, s1 = int(seg[feat]), int(seg[feat + 1])
        if s1 == s0:
            continue
        f_rows, f_vals = rows_by_row[s0:s1], vals_by_row[s0:s1]
        for kind, rank, pos, label in _pick_examples(by_value, s0, s1 - s0, n_top, per_quantile_bin, rng):
            i = int(rows[by_value[pos]])
            lo, hi = max(start, i - before), min(stop, i + after + 1)
            window = np.arange(lo, hi)
            window = window[docs[lo:hi] == docs[i]]
            acts = np.zeros(len(window), np.float32)
            at = np.searchsorted(f_rows, window)
            ok = (at < len(f_rows)) & (f_rows[np.minimum(at, len(f_rows) - 1)] == window)
            acts[ok] = f_vals[at[ok]]
            records.append((feat, kind, rank, [vocab[t] for t in tokens[window]], acts, i, int(docs[i]),
                            int(np.nonzero(window == i)[0][0]), float(vals[by_value[pos]]), label))
        if progress is not None and (feat % 256 == 0 or feat == d_sae - 1):
            progress(feat + 1, d_sae, f"contexts of feature {feat + 1}/{d_sae}")
    contexts = pd.DataFrame.from_records(records, columns=["feature", "kind", "rank", "tokens", "activations", "row",
                                                           "doc", "position", "activation", "quantile_bin"])
    contexts = contexts.astype({"feature": np.int32, "rank": np.int16, "row": np.int64, "doc": np.int32,
                                "position": np.int16, "activation": np.float32})
    meta = {"n_tokens": int(n_tokens), "rows": [int(start), int(stop)], "activations": str(store.path),
            "model_name": store.manifest.get("model_name"), "hook_name": store.manifest.get("hook_name"),
            "n_top": n_top, "before": before, "after": after}
    return FeatureData(stats, contexts, meta)


def write_feature_data(run_path: str | Path, data: FeatureData) -> tuple[Path, Path]:
    """Store statistics and contexts beside the run (atomic writes)."""
    ctx = data.contexts.copy()
    ctx["activations"] = [np.round(np.asarray(a, np.float32), 4) for a in ctx["activations"]]
    return (atomic_write_parquet(feature_file(run_path, STATS_FILE), data.stats, data.meta),
            atomic_write_parquet(feature_file(run_path, CONTEXTS_FILE), ctx, data.meta))


def compute_run_features(run_path: str | Path, store, start: int = 0, stop: int | None = None,
                         device: str | torch.device = "cpu", progress: Progress | None = None,
                         **kwargs) -> FeatureData:
    """Load a SAELens run, compute its feature data over stored activations and write it beside the run."""
    from saecore.train import load_sae

    sae = load_sae(run_path, device=device)
    if sae.cfg.d_in != store.d_model:
        raise InputError(f"{run_path}: the SAE expects d_in={sae.cfg.d_in}, the activations have {store.d_model}")
    data = compute_feature_data(sae, store, start, stop, device=device, progress=progress, **kwargs)
    write_feature_data(run_path, data)
    return data


def read_stats(run_path: str | Path) -> pd.DataFrame:
    """Per-feature statistics of a run: feature, frequency, per_million, mean_activation, max_activation (+ count)."""
    path = feature_file(run_path, STATS_FILE)
    if not path.is_file():
        raise LoadError(path, "no feature statistics for this run (build them with the demo or features command)")
    df, _ = read_parquet(path)
    missing = [c for c in STATS_COLUMNS if c not in df.columns]
    if missing:
        raise LoadError(path, f"missing columns {', '.join(missing)}")
    return df


def read_feature_meta(run_path: str | Path) -> dict:
    """How the statistics were made (token count, activations source, window sizes)."""
    path = feature_file(run_path, STATS_FILE)
    if not path.is_file():
        raise LoadError(path, "no feature statistics for this run")
    return read_parquet(path)[1]


def read_contexts(run_path: str | Path, feature: int | None = None) -> list[Context]:
    """Context windows of one feature (or all), strongest first, then the lower-quantile samples."""
    import pyarrow.parquet as pq

    path = feature_file(run_path, CONTEXTS_FILE)
    if not path.is_file():
        raise LoadError(path, "no contexts for this run (build them with the demo or features command)")
    filters = [("feature", "=", int(feature))] if feature is not None else None
    df = pq.read_table(path, filters=filters).to_pandas()
    df = df.sort_values(["feature", "kind", "rank"], key=lambda c: c.map({"top": 0, "quantile": 1}) if c.name == "kind" else c,
                        kind="stable")
    out = []
    for r in df.itertuples(index=False):
        out.append(Context(int(r.feature), list(r.tokens), [float(a) for a in r.activations], str(r.kind), int(r.rank),
                           {"row": int(r.row), "doc": int(r.doc), "position": int(r.position),
                            "activation": float(r.activation), "quantile_bin": str(r.quantile_bin)}))
    return out
