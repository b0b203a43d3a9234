"""Do matched features fire together? Activation agreement of matched pairs, and the encoder's view of matching.

Decoder matching says two features point the same way; this module checks what they do on held-out
tokens (Pearson correlation and Jaccard overlap of firing sets per matched pair) and whether their
encoders agree too (the shared-in-both fraction of Paulo & Belrose 2025).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from saecore.errors import InputError
from saecore.matching import Match, exact_scores, match_decoders
from saecore.runs import Run, RunMeta
from saecore.similarity import resolve_device

if TYPE_CHECKING:
    import pandas as pd

    from saecore.activations import ActivationStore
    from saecore.sae import BatchedSAE

Progress = Callable[[int, int, str], None]

# A side whose variance is below this fraction of its squared mean is constant (float64 rounding of a
# constant stream leaves a spread of ~1e-16 of its value, far below any real feature's).
CONSTANT_RELATIVE_VARIANCE = 1e-24
# Cosine above which a matched partner counts as the same feature (Paulo & Belrose 2025).
SHARED_THRESHOLD = 0.7
DEFAULT_BATCH = 2048


def _finite(x: float) -> float | None:
    """A float for JSON: NaN and infinities become None."""
    return float(x) if np.isfinite(x) else None


def _mean_median(values: np.ndarray) -> tuple[float, float]:
    """Mean and median over the defined (non-NaN) values; NaN when none is defined."""
    ok = values[~np.isnan(values)]
    return (float(ok.mean()), float(np.median(ok))) if len(ok) else (float("nan"), float("nan"))


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of x and y over the entries where both are defined; NaN when it is not."""
    ok = ~(np.isnan(x) | np.isnan(y))
    if ok.sum() < 2 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


# ----------------------------------------------------------------------------------------------------------
# Streaming moments


@dataclass
class Moments:
    """Per-pair count, means and centred (co-)moments of two latents, in float64 on one device.

    Batch-centred sums merged with Chan's update, because raw Σa² − (Σa)²/n cancels badly when a
    latent's mean dwarfs its spread.
    """

    n: int
    mean_a: torch.Tensor
    mean_b: torch.Tensor
    m2_a: torch.Tensor
    m2_b: torch.Tensor
    c_ab: torch.Tensor


def batch_moments(a: torch.Tensor, b: torch.Tensor) -> Moments:
    """Moments of one batch of paired latents a, b (B, P), centred on the batch's own float64 means."""
    a, b = a.double(), b.double()
    mean_a, mean_b = a.mean(0), b.mean(0)
    da, db = a - mean_a, b - mean_b
    return Moments(int(a.shape[0]), mean_a, mean_b, (da * da).sum(0), (db * db).sum(0), (da * db).sum(0))


def merge_moments(x: Moments | None, y: Moments) -> Moments:
    """The moments of two disjoint sets of tokens combined (Chan, Golub & LeVeque)."""
    if x is None or x.n == 0:
        return y
    if y.n == 0:
        return x
    n = x.n + y.n
    w = x.n * y.n / n
    da, db = y.mean_a - x.mean_a, y.mean_b - x.mean_b
    return Moments(n, x.mean_a + da * (y.n / n), x.mean_b + db * (y.n / n), x.m2_a + y.m2_a + da * da * w,
                   x.m2_b + y.m2_b + db * db * w, x.c_ab + y.c_ab + da * db * w)


def _constant(m2: np.ndarray, mean: np.ndarray, n: int) -> np.ndarray:
    """Which latents did not vary over the tokens (never fired, or fired at one value everywhere)."""
    return m2 <= CONSTANT_RELATIVE_VARIANCE * n * mean * mean


def pearson_from_moments(m: Moments) -> np.ndarray:
    """Pearson correlation per pair, NaN where either side is constant over the tokens."""
    mean_a, mean_b = m.mean_a.cpu().numpy(), m.mean_b.cpu().numpy()
    m2_a, m2_b, c_ab = m.m2_a.cpu().numpy(), m.m2_b.cpu().numpy(), m.c_ab.cpu().numpy()
    undefined = _constant(m2_a, mean_a, m.n) | _constant(m2_b, mean_b, m.n)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.clip(c_ab / (np.sqrt(m2_a) * np.sqrt(m2_b)), -1.0, 1.0)
    return np.where(undefined, np.nan, r)


def jaccard_from_counts(fires_a: np.ndarray, fires_b: np.ndarray, fires_both: np.ndarray) -> np.ndarray:
    """|A ∧ B| / |A ∨ B| of firing sets per pair, NaN where neither side ever fires."""
    union = fires_a + fires_b - fires_both
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, fires_both / np.where(union > 0, union, 1), np.nan)


# ----------------------------------------------------------------------------------------------------------
# Results


@dataclass
class Agreement:
    """How matched features of runs A and B agree on the same tokens: one entry per matched pair.

    fires_a / fires_b / fires_both count tokens where the pair's A latent, B latent, or both are > 0;
    counts_a / counts_b are firing counts of every feature of each run (matched or not).
    """

    run_a: str
    run_b: str
    feature_a: np.ndarray
    feature_b: np.ndarray
    decoder_score: np.ndarray
    pearson: np.ndarray
    jaccard: np.ndarray
    fires_a: np.ndarray
    fires_b: np.ndarray
    fires_both: np.ndarray
    counts_a: np.ndarray
    counts_b: np.ndarray
    n_tokens: int
    start: int = 0
    stop: int = 0
    info: dict = field(default_factory=dict)

    @property
    def n_pairs(self) -> int:
        return int(len(self.feature_a))

    def frame(self) -> pd.DataFrame:
        """One row per matched pair, in A's feature order."""
        import pandas as pd

        return pd.DataFrame({"feature_a": self.feature_a, "feature_b": self.feature_b,
                             "decoder_score": self.decoder_score, "pearson": self.pearson, "jaccard": self.jaccard,
                             "fires_a": self.fires_a, "fires_b": self.fires_b, "fires_both": self.fires_both})

    def summary(self) -> dict:
        """Mean and median Pearson and Jaccard over pairs where defined, undefined counts, and how decoder
        cosine tracks activation Pearson across pairs (NaN where there is nothing to measure)."""
        p_mean, p_median = _mean_median(self.pearson)
        j_mean, j_median = _mean_median(self.jaccard)
        from scipy.stats import rankdata

        ok = ~np.isnan(self.pearson)
        spearman = (_correlation(rankdata(self.decoder_score[ok]), rankdata(self.pearson[ok]))
                    if ok.sum() >= 2 else float("nan"))
        return {"n_pairs": self.n_pairs, "n_tokens": int(self.n_tokens),
                "decoder_mcc": float(np.mean(self.decoder_score)) if self.n_pairs else float("nan"),
                "pearson_mean": p_mean, "pearson_median": p_median,
                "pearson_undefined": int(np.isnan(self.pearson).sum()),
                "jaccard_mean": j_mean, "jaccard_median": j_median,
                "jaccard_undefined": int(np.isnan(self.jaccard).sum()),
                "decoder_vs_pearson": _correlation(self.decoder_score, self.pearson),
                "decoder_vs_pearson_spearman": spearman}

    def swapped(self) -> "Agreement":
        """The same measurements seen from B's side (pairs in B's feature order)."""
        order = np.argsort(self.feature_b, kind="stable")
        return Agreement(self.run_b, self.run_a, self.feature_b[order], self.feature_a[order],
                         self.decoder_score[order], self.pearson[order], self.jaccard[order], self.fires_b[order],
                         self.fires_a[order], self.fires_both[order], self.counts_b, self.counts_a, self.n_tokens,
                         self.start, self.stop, dict(self.info))

    def of_feature(self, feature_a: int) -> dict | None:
        """Pearson, Jaccard and firing counts of A's feature and its partner, or None when it is not matched."""
        hit = np.flatnonzero(self.feature_a == feature_a)
        if not len(hit):
            return None
        k = int(hit[0])
        return {"feature_b": int(self.feature_b[k]), "pearson": float(self.pearson[k]),
                "jaccard": float(self.jaccard[k]), "fires_a": int(self.fires_a[k]), "fires_b": int(self.fires_b[k]),
                "fires_both": int(self.fires_both[k]), "n_tokens": int(self.n_tokens)}

    def to_json(self, pairs: bool = False) -> dict:
        """Runs, token range and summary (NaN as null); pairs=True adds the per-pair columns."""
        out: dict = {"run_a": self.run_a, "run_b": self.run_b, "start": int(self.start), "stop": int(self.stop),
                     **{k: _finite(v) if isinstance(v, float) else v for k, v in self.summary().items()},
                     "info": self.info}
        if pairs:
            out["pairs"] = {c: [_finite(v) if isinstance(v, float) else v for v in col.tolist()]
                            for c, col in self.frame().items()}
        return out


@dataclass
class FamilyAgreement:
    """Activation agreement of every pair of runs in a family, and the family's mean over those pairs."""

    runs: list[str]
    paths: list[str]
    index: list[tuple[int, int]]
    pairs: list[Agreement]

    def between(self, i: int, j: int) -> Agreement:
        """The agreement of run i with run j, seen from i's side, whichever order it was measured in."""
        for (a, b), agreement in zip(self.index, self.pairs):
            if (a, b) == (i, j):
                return agreement
            if (a, b) == (j, i):
                return agreement.swapped()
        raise KeyError(f"runs {i} and {j} were not measured together")

    def _pair_means(self, key: str) -> np.ndarray:
        return np.array([a.summary()[key] for a in self.pairs], dtype=np.float64)

    @property
    def pearson_mean(self) -> float:
        """Mean over run pairs of each pair's mean Pearson (pairs where it is undefined are skipped)."""
        return _mean_median(self._pair_means("pearson_mean"))[0]

    @property
    def jaccard_mean(self) -> float:
        """Mean over run pairs of each pair's mean Jaccard."""
        return _mean_median(self._pair_means("jaccard_mean"))[0]

    def frame(self) -> pd.DataFrame:
        """One row per pair of runs: names, indices and that pair's summary."""
        import pandas as pd

        return pd.DataFrame([{"a": i, "b": j, "run_a": ag.run_a, "run_b": ag.run_b, **ag.summary()}
                             for (i, j), ag in zip(self.index, self.pairs)])

    def to_json(self) -> dict:
        """Runs, per-pair summaries and the family means (NaN as null)."""
        return {"runs": self.runs, "paths": self.paths,
                "pairs": [{"a": i, "b": j, **ag.to_json()} for (i, j), ag in zip(self.index, self.pairs)],
                "pearson_mean": _finite(self.pearson_mean), "jaccard_mean": _finite(self.jaccard_mean)}


# ----------------------------------------------------------------------------------------------------------
# Measuring


def _check_range(store: ActivationStore, start: int, stop: int | None) -> tuple[int, int]:
    stop = store.n_tokens if stop is None else int(stop)
    if not 0 <= start < stop <= store.n_tokens:
        raise InputError(f"rows [{start}, {stop}) are outside the {store.n_tokens:,} tokens of {store.path}")
    return int(start), stop


@torch.no_grad()
def measure_agreement(saes: Sequence[BatchedSAE], pairs: Sequence[tuple[int, int, Match]], store: ActivationStore,
                      start: int = 0, stop: int | None = None, batch_size: int = DEFAULT_BATCH,
                      device: str | torch.device = "auto", names: Sequence[str] | None = None,
                      progress: Progress | None = None) -> list[Agreement]:
    """Stream rows [start, stop) of `store` once, encode them with every single-model SAE, and measure each
    (i, j, match) pair of SAEs on its matched features. Memory: one batch of codes per SAE, never all tokens."""
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    start, stop = _check_range(store, start, stop)
    dev = resolve_device(device)
    names = list(names) if names is not None else [f"run{i}" for i in range(len(saes))]
    for i, sae in enumerate(saes):
        if sae.n_models != 1:
            raise InputError(f"{names[i]}: expected a single-model SAE, got {sae.n_models} models")
        if sae.cfg.d_in != store.d_model:
            raise InputError(f"{names[i]} has d_in={sae.cfg.d_in} but the activations in {store.path} have "
                             f"d_model={store.d_model}")
    for i, j, m in pairs:
        if len(m.rows) and (m.rows.max() >= saes[i].cfg.d_sae or m.cols.max() >= saes[j].cfg.d_sae):
            raise InputError(f"the match of {names[i]} with {names[j]} names features beyond their d_sae "
                             f"({saes[i].cfg.d_sae:,}, {saes[j].cfg.d_sae:,}): is it the match of other runs?")
    saes = [s.to(dev).eval() for s in saes]
    index = [(torch.as_tensor(m.rows, device=dev), torch.as_tensor(m.cols, device=dev)) for _, _, m in pairs]
    counts = [torch.zeros(s.cfg.d_sae, dtype=torch.int64, device=dev) for s in saes]
    both = [torch.zeros(len(m.rows), dtype=torch.int64, device=dev) for _, _, m in pairs]
    moments: list[Moments | None] = [None] * len(pairs)
    used = sorted({i for i, _, _ in pairs} | {j for _, j, _ in pairs}) or list(range(len(saes)))
    t0, total = time.perf_counter(), stop - start
    for lo in range(start, stop, batch_size):
        hi = min(lo + batch_size, stop)
        x = torch.from_numpy(np.asarray(store.rows(lo, hi), dtype=np.float32)).to(dev)
        codes = {r: saes[r].encode(x)[0] for r in used}
        for r in used:
            counts[r] += (codes[r] > 0).sum(0)
        for p, (i, j, _) in enumerate(pairs):
            a, b = codes[i][:, index[p][0]], codes[j][:, index[p][1]]
            both[p] += ((a > 0) & (b > 0)).sum(0)
            moments[p] = merge_moments(moments[p], batch_moments(a, b))
        if progress is not None:
            progress(hi - start, total, f"encoding {hi - start:,}/{total:,} tokens")
    seconds = time.perf_counter() - t0
    counts_np = [c.cpu().numpy() for c in counts]
    out = []
    for p, (i, j, m) in enumerate(pairs):
        fires_a, fires_b = counts_np[i][m.rows], counts_np[j][m.cols]
        fires_both = both[p].cpu().numpy()
        out.append(Agreement(names[i], names[j], np.asarray(m.rows, np.int64), np.asarray(m.cols, np.int64),
                             np.asarray(m.scores, np.float64), pearson_from_moments(moments[p]),
                             jaccard_from_counts(fires_a, fires_b, fires_both), fires_a, fires_b, fires_both,
                             counts_np[i], counts_np[j], total, start, stop,
                             {"store": str(store.path), "device": str(dev), "batch_size": int(batch_size),
                              "sign": m.sign, "dead": m.dead, "seconds": seconds}))
    return out


def _describe(meta: RunMeta) -> str:
    return f"model {meta.model or '?'}, hook {meta.hook or '?'}"


def check_same_source(metas: Sequence[RunMeta], store: ActivationStore | None = None) -> None:
    """Refuse runs trained on another model or hook than each other or than the stored activations (where
    both sides say), and runs whose d_in is not the store's d_model, naming the files."""
    first = metas[0]
    for other in metas[1:]:
        for what in ("model", "hook"):
            x, y = getattr(first, what), getattr(other, what)
            if x is not None and y is not None and x != y:
                raise InputError(f"{first.path} ({_describe(first)}) and {other.path} ({_describe(other)}) "
                                 f"read different activations: {what} {x!r} vs {y!r}")
    if store is None:
        return
    manifest = Path(store.path) / "manifest.json"
    for meta in metas:
        for what, key in (("model", "model_name"), ("hook", "hook_name")):
            x, y = getattr(meta, what), store.manifest.get(key)
            if x is not None and y is not None and x != y:
                raise InputError(f"{meta.path} ({_describe(meta)}) was trained on other activations than "
                                 f"{manifest} ({key} {y!r}): {what} {x!r} vs {y!r}")
        if meta.d_in != store.d_model:
            raise InputError(f"{meta.path} has d_in={meta.d_in} (from {meta.d_in_source or 'its config'}) but "
                             f"{manifest} has d_model={store.d_model}")


def _open_store(store: ActivationStore | str | Path) -> ActivationStore:
    from saecore.activations import open_activations

    return open_activations(store) if isinstance(store, (str, Path)) else store


def family_agreement(paths: Sequence[str | Path], store: ActivationStore | str | Path,
                     matches: Mapping[tuple[int, int], Match] | None = None, start: int = 0,
                     stop: int | None = None, batch_size: int = DEFAULT_BATCH, device: str | torch.device = "auto",
                     sign: str = "signed", dead: str = "include", method: str = "auto",
                     progress: Progress | None = None) -> FamilyAgreement:
    """Activation agreement of every pair (i < j) of a family's runs (SAELens folders) over one token range.

    `matches[(i, j)]` (run i's features matched to run j's) is used when given, else the decoders are
    matched here. Each run encodes every batch once, whatever the number of pairs.
    """
    from saecore.loaders import load_meta
    from saecore.train import load_sae

    if len(paths) < 2:
        raise InputError(f"need at least two runs to compare, got {len(paths)}")
    store = _open_store(store)
    metas = [load_meta(p) for p in paths]
    check_same_source(metas, store)
    saes = [load_sae(p) for p in paths]
    names = [m.name for m in metas]
    if len(set(names)) < len(names):
        names = [str(p) for p in paths]
    matches = dict(matches or {})
    index, pairs = [], []
    for i in range(len(paths)):
        for j in range(i + 1, len(paths)):
            m = matches.get((i, j))
            if m is None:
                m = match_decoders(saes[i].decoder(0), saes[j].decoder(0), sign, dead, device, method,
                                   (names[i], names[j]))
            index.append((i, j))
            pairs.append((i, j, m))
    result = measure_agreement(saes, pairs, store, start, stop, batch_size, device, names, progress)
    return FamilyAgreement(names, [str(p) for p in paths], index, result)


def activation_agreement(path_a: str | Path, path_b: str | Path, store: ActivationStore | str | Path,
                         match: Match | None = None, start: int = 0, stop: int | None = None,
                         batch_size: int = DEFAULT_BATCH, device: str | torch.device = "auto", sign: str = "signed",
                         dead: str = "include", method: str = "auto", progress: Progress | None = None) -> Agreement:
    """Activation agreement of runs A and B (SAELens folders) on their matched features over rows [start, stop)."""
    fam = family_agreement([path_a, path_b], store, {(0, 1): match} if match is not None else None, start, stop,
                           batch_size, device, sign, dead, method, progress)
    return fam.pairs[0]


# ----------------------------------------------------------------------------------------------------------
# Encoder matching and the shared fraction


@dataclass
class EncoderDecoder:
    """Decoder and encoder matchings of runs A and B side by side, per feature of A.

    decoder_partner / decoder_cosine: the decoder matching; encoder_cosine: the encoder cosine of that same
    pair; encoder_partner / encoder_score: the encoder matching (-1 / NaN where a feature is unmatched).
    Shared fractions are over all of A's features: decoder cosine > threshold, encoder matched cosine >
    threshold, and both cosines of the decoder pair > threshold (Paulo & Belrose's criterion).
    """

    run_a: str
    run_b: str
    threshold: float
    sign: str
    decoder_pw_mcc: float
    encoder_pw_mcc: float
    shared_decoder: float
    shared_encoder: float
    shared_both: float
    same_partner: float
    decoder_partner: np.ndarray
    decoder_cosine: np.ndarray
    encoder_cosine: np.ndarray
    encoder_partner: np.ndarray
    encoder_score: np.ndarray

    def frame(self) -> pd.DataFrame:
        """One row per feature of A."""
        import pandas as pd

        return pd.DataFrame({"feature_a": np.arange(len(self.decoder_partner)),
                             "decoder_partner": self.decoder_partner, "decoder_cosine": self.decoder_cosine,
                             "encoder_cosine": self.encoder_cosine, "encoder_partner": self.encoder_partner,
                             "encoder_score": self.encoder_score})

    def summary(self) -> dict:
        """The scalar results."""
        return {"run_a": self.run_a, "run_b": self.run_b, "threshold": self.threshold, "sign": self.sign,
                "n_features": int(len(self.decoder_partner)), "decoder_pw_mcc": self.decoder_pw_mcc,
                "encoder_pw_mcc": self.encoder_pw_mcc, "shared_decoder": self.shared_decoder,
                "shared_encoder": self.shared_encoder, "shared_both": self.shared_both,
                "same_partner": self.same_partner}

    def to_json(self) -> dict:
        """The summary with NaN as null."""
        return {k: _finite(v) if isinstance(v, float) else v for k, v in self.summary().items()}


def _above(values: np.ndarray, threshold: float) -> np.ndarray:
    """values > threshold, with NaN (no partner) counted as not above."""
    return np.nan_to_num(values, nan=-np.inf) > threshold


def encoder_decoder(run_a: Run, run_b: Run, threshold: float = SHARED_THRESHOLD, sign: str = "signed",
                    dead: str = "include", device: str | torch.device = "auto", method: str = "auto",
                    decoder_match: Match | None = None) -> EncoderDecoder:
    """Match encoder directions (feature-major encoder rows) as decoders are matched, and set both matchings
    side by side; `decoder_match` is reused when given."""
    for run in (run_a, run_b):
        if run.encoder is None:
            raise InputError(f"{run.meta.path}: has no encoder weights (W_enc); the encoder matching and "
                             "the shared-in-both fraction need them")
    if run_a.d_in != run_b.d_in:
        raise InputError(f"{run_a.meta.path} (d_in={run_a.d_in}) and {run_b.meta.path} (d_in={run_b.d_in}) "
                         "live in different spaces")
    dm = decoder_match if decoder_match is not None else match_decoders(
        run_a.decoder, run_b.decoder, sign, dead, device, method, (run_a.name, run_b.name))
    em = match_decoders(run_a.encoder, run_b.encoder, sign, dead, device, method, (run_a.name, run_b.name))
    n = run_a.d_sae
    enc_cos = np.full(n, np.nan)
    enc_cos[dm.rows] = exact_scores(run_a.encoder.float(), run_b.encoder.float(), dm.rows, dm.cols, sign)
    dec_cos = np.asarray(dm.score_a, np.float64)
    both = _above(dec_cos, threshold) & _above(enc_cos, threshold)
    same = (dm.partner_a >= 0) & (em.partner_a == dm.partner_a)
    return EncoderDecoder(run_a.name, run_b.name, float(threshold), sign, dm.mcc, em.mcc,
                          float(_above(dec_cos, threshold).mean()) if n else float("nan"),
                          float(_above(em.score_a, threshold).mean()) if n else float("nan"),
                          float(both.mean()) if n else float("nan"), float(same.mean()) if n else float("nan"),
                          np.asarray(dm.partner_a, np.int64), dec_cos, enc_cos,
                          np.asarray(em.partner_a, np.int64), np.asarray(em.score_a, np.float64))


def compare_encoders(path_a: str | Path, path_b: str | Path, threshold: float = SHARED_THRESHOLD,
                     sign: str = "signed", dead: str = "include", device: str | torch.device = "auto",
                     method: str = "auto") -> EncoderDecoder:
    """`encoder_decoder` of two runs read from disk with their encoders."""
    from saecore.loaders import load_run

    a, b = load_run(path_a, with_encoder=True), load_run(path_b, with_encoder=True)
    if a.name == b.name:
        a, b = a.renamed(str(path_a)), b.renamed(str(path_b))
    return encoder_decoder(a, b, threshold, sign, dead, device, method)


# The per-seed-pair columns of agreement_frame, in order.
ENCODER_COLUMNS = ("encoder_pw_mcc", "shared_decoder", "shared_encoder", "shared_both", "same_partner")


def agreement_frame(names: Sequence[str], matches: Mapping[tuple[int, int], Match],
                    encoders: Mapping[tuple[int, int], EncoderDecoder | None],
                    agreement: FamilyAgreement | None = None) -> pd.DataFrame:
    """One row per seed pair: decoder MCC, the encoder measures (where encoders were compared) and the mean
    activation r and Jaccard (where activations were measured)."""
    import pandas as pd

    by_pair = {} if agreement is None else dict(zip(agreement.index, agreement.pairs))
    rows = []
    for (i, j), match in sorted(matches.items()):
        row = {"pair": f"{names[i]} ↔ {names[j]}", "decoder_pw_mcc": match.mcc}
        enc = encoders.get((i, j))
        if enc is not None:
            row.update({k: getattr(enc, k) for k in ENCODER_COLUMNS})
        if (i, j) in by_pair:
            s = by_pair[i, j].summary()
            row.update({"pearson_mean": s["pearson_mean"], "jaccard_mean": s["jaccard_mean"]})
        rows.append(row)
    return pd.DataFrame(rows)


def with_activation_r(pairs: pd.DataFrame, agreement: Agreement) -> pd.DataFrame:
    """A pair table (feature_a, score, ...) with each pair's activation correlation (activation_r) after its score."""
    r = agreement.frame()[["feature_a", "pearson"]].rename(columns={"pearson": "activation_r"})
    out = pairs.merge(r, on="feature_a", how="left")
    cols = list(pairs.columns)
    cols.insert(cols.index("score") + 1, "activation_r")
    return out[cols]
