"""Examples that test an explanation, as delphi's scorers draw them: activating contexts spread over a feature's
activation bins, and non-activating windows of held-out activations on which the feature is zero on every token
(other features' top contexts stand in without activations, and the set says negatives="other-features").
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from saecore.errors import InputError
from saecore.explain import ExplainerConfig, even_quota
from saecore.features import Context
from saecore.prompts import mark_tokens, plain_text, select_contexts

TOP_BIN = "top"
RANDOM_BIN = "random"
NEGATIVES_STORE = "store"
NEGATIVES_OTHER = "other-features"
NEGATIVES_NONE = "none"


@dataclass(frozen=True)
class Example:
    """One excerpt shown to a scorer: tokens, the feature's activation on each, and whether the feature fires."""

    tokens: tuple[str, ...]
    activations: tuple[float, ...]
    activating: bool
    bin: str  # "top", a quantile bin like "0.25-0.50", "random" (store window) or "feature <j>" (another's context)
    row: int | None = None  # first store row of a random window

    @property
    def text(self) -> str:
        return plain_text(self.tokens)


@dataclass(frozen=True)
class ExampleSet:
    """The activating and non-activating examples of one feature, and where the non-activating ones came from."""

    feature: int
    activating: tuple[Example, ...]
    non_activating: tuple[Example, ...]
    negatives: str  # "store", "other-features" or "none"

    @property
    def examples(self) -> tuple[Example, ...]:
        return self.activating + self.non_activating


@dataclass(frozen=True)
class SamplingConfig:
    """How many examples of each kind a feature gets, and how they are drawn."""

    n_activating: int = 10
    n_non_activating: int = 10
    skip_shown: bool = True  # leave out the contexts an explain prompt shows (when enough others remain)
    shown_top: int = ExplainerConfig.n_top
    shown_quantile: int = ExplainerConfig.n_quantile
    seed: int = 0
    max_store_rows: int = 200_000  # rows of the activation store encoded to find windows where a feature is zero
    tries: int = 64  # random windows tried per wanted non-activating example

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def context_bin(context: Context) -> str:
    """The activation bin a stored context was drawn from: 'top' or its quantile bin."""
    if context.kind == "top":
        return TOP_BIN
    return str(context.extra.get("quantile_bin") or context.kind)


def activating_examples(contexts: Sequence[Context], n: int, rng: np.random.Generator,
                        skip: Sequence[Context] = ()) -> list[Example]:
    """Up to n contexts that fire, spread evenly over their activation bins (strongest bin first), random within."""
    firing = [c for c in contexts if any(a > 0 for a in c.activations)]
    skipped = {id(c) for c in skip}
    rest = [c for c in firing if id(c) not in skipped]
    pool = rest if len(rest) >= max(1, n // 2) else firing
    groups: dict[str, list[Context]] = {}
    for c in pool:
        groups.setdefault(context_bin(c), []).append(c)
    names = sorted(groups, key=lambda b: (b != TOP_BIN, [-float(x) for x in re.findall(r"[\d.]+", b)] or [0.0], b))
    quota = even_quota([len(groups[b]) for b in names], n)
    out = []
    for b, q in zip(names, quota):
        for i in np.sort(rng.choice(len(groups[b]), size=q, replace=False)):
            c = groups[b][int(i)]
            out.append(Example(tuple(c.tokens), tuple(float(a) for a in c.activations), True, b))
    return out


@dataclass(frozen=True)
class StoreCodes:
    """Where each feature fires on the first `n_rows` rows of an activation store: rows grouped by feature."""

    store_path: str
    n_rows: int
    indptr: np.ndarray = field(repr=False)  # (d_sae + 1,): feature j fires on rows[indptr[j]:indptr[j + 1]]
    rows: np.ndarray = field(repr=False)  # int32, ascending within each feature

    def firing_rows(self, feature: int) -> np.ndarray:
        return self.rows[self.indptr[feature]:self.indptr[feature + 1]]

    @property
    def nbytes(self) -> int:
        return int(self.indptr.nbytes + self.rows.nbytes)


@torch.no_grad()
def encode_store(sae, store, max_rows: int = 200_000, batch_size: int = 4096,
                 device: str | torch.device = "cpu") -> StoreCodes:
    """Which features of a single-model `sae` fire on each of the first max_rows rows of `store` (support only)."""
    n = min(int(store.n_tokens), int(max_rows))
    d_sae = int(sae.cfg.d_sae)
    dev = torch.device(device)
    sae = sae.to(dev).eval()
    rows, feats = [], []
    for i in range(0, n, batch_size):
        j = min(i + batch_size, n)
        x = torch.from_numpy(np.asarray(store.rows(i, j), dtype=np.float32)).to(dev)
        nz = torch.nonzero(sae.encode(x)[0] > 0)
        rows.append((nz[:, 0] + i).to(torch.int32).cpu().numpy())
        feats.append(nz[:, 1].to(torch.int32).cpu().numpy())
    r = np.concatenate(rows) if rows else np.zeros(0, np.int32)
    f = np.concatenate(feats) if feats else np.zeros(0, np.int32)
    order = np.argsort(f, kind="stable")  # rows come out ascending, and a stable sort keeps them so per feature
    indptr = np.concatenate([[0], np.cumsum(np.bincount(f, minlength=d_sae))]).astype(np.int64)
    return StoreCodes(str(store.path), n, indptr, r[order])


_CODES: OrderedDict[tuple, StoreCodes] = OrderedDict()
_CODES_KEPT = 2
_CODES_LOCK = threading.Lock()


def run_store_codes(run_path: str | Path, store, max_rows: int = 200_000,
                    device: str | torch.device = "cpu") -> StoreCodes:
    """encode_store with the run's own encoder, kept in memory for the last two runs so each is encoded once."""
    from saecore.train import load_sae

    run_path = Path(run_path)
    weights = run_path / "sae_weights.safetensors"
    stamp = (weights.stat().st_size, weights.stat().st_mtime_ns) if weights.is_file() else None
    key = (str(run_path.resolve()), stamp, str(Path(store.path).resolve()), int(store.n_tokens), int(max_rows))
    with _CODES_LOCK:
        if key in _CODES:
            _CODES.move_to_end(key)
            return _CODES[key]
    sae = load_sae(run_path, device=device)
    if sae.cfg.d_in != store.d_model:
        raise InputError(f"{run_path}: the SAE expects d_in={sae.cfg.d_in}, the activations in {store.path} have "
                         f"{store.d_model}")
    codes = encode_store(sae, store, max_rows, device=device)
    with _CODES_LOCK:
        _CODES[key] = codes
        while len(_CODES) > _CODES_KEPT:
            _CODES.popitem(last=False)
    return codes


def store_negatives(codes: StoreCodes, store, feature: int, lengths: Sequence[int], rng: np.random.Generator,
                    tries: int = 64) -> list[Example]:
    """Random windows of the given lengths, each inside one document, on which `feature` is zero on every token."""
    fires = codes.firing_rows(int(feature))
    docs, tokens, vocab = store.docs, store.tokens, store.token_strings
    used: set[int] = set()
    out = []
    for length in lengths:
        if length < 1 or length > codes.n_rows:
            continue
        starts = rng.integers(0, codes.n_rows - length + 1, size=tries)
        window = starts[:, None] + np.arange(length)
        one_doc = np.all(docs[window] == docs[starts][:, None], axis=1)
        at = np.searchsorted(fires, starts)
        silent = (at >= len(fires)) | (fires[np.minimum(at, max(len(fires) - 1, 0))] >= starts + length)
        pick = next((int(starts[i]) for i in np.nonzero(one_doc & silent)[0] if int(starts[i]) not in used), None)
        if pick is None:
            continue
        used.add(pick)
        out.append(Example(tuple(vocab[int(t)] for t in tokens[pick:pick + length]), (0.0,) * length, False,
                           RANDOM_BIN, pick))
    return out


def other_feature_negatives(others: Mapping[int, Sequence[Context]], feature: int, n: int,
                            rng: np.random.Generator) -> list[Example]:
    """n top contexts of randomly chosen other features (the feature's own activation on them is unknown, shown as 0)."""
    candidates = np.array(sorted(f for f, cs in others.items() if f != feature and any(c.kind == "top" for c in cs)))
    if not len(candidates) or n <= 0:
        return []
    out = []
    for f in rng.choice(candidates, size=n, replace=len(candidates) < n):
        tops = [c for c in others[int(f)] if c.kind == "top"]
        c = tops[int(rng.integers(len(tops)))]
        out.append(Example(tuple(c.tokens), (0.0,) * len(c.tokens), False, f"feature {int(f)}"))
    return out


def build_examples(feature: int, contexts: Sequence[Context], sampling: SamplingConfig = SamplingConfig(),
                   codes: StoreCodes | None = None, store=None,
                   others: Mapping[int, Sequence[Context]] | None = None) -> ExampleSet:
    """The examples of one feature (deterministic in sampling.seed and the feature): store negatives when given."""
    rng = np.random.default_rng([int(sampling.seed), int(feature)])
    shown = select_contexts(contexts, sampling.shown_top, sampling.shown_quantile) if sampling.skip_shown else []
    positives = activating_examples(contexts, sampling.n_activating, rng, shown)
    n_neg = sampling.n_non_activating if positives else 0
    if codes is not None and store is not None:
        lengths = [len(positives[i % len(positives)].tokens) for i in range(n_neg)]
        negatives, kind = store_negatives(codes, store, feature, lengths, rng, sampling.tries), NEGATIVES_STORE
    elif others:
        negatives, kind = other_feature_negatives(others, feature, n_neg, rng), NEGATIVES_OTHER
    else:
        negatives, kind = [], NEGATIVES_NONE
    return ExampleSet(int(feature), tuple(positives), tuple(negatives), kind)


# --------------------------------------------------------------------------- fuzzing highlights

def span_count(activations: Sequence[float]) -> int:
    """How many runs of consecutive active tokens a window has (each is one << >> mark)."""
    active = [a > 0 for a in activations]
    return sum(1 for i, a in enumerate(active) if a and (i == 0 or not active[i - 1]))


def random_marks(tokens: Sequence[str], n_marks: int, rng: np.random.Generator) -> list[int]:
    """n_marks random positions of non-blank tokens, no two adjacent (so each is its own mark), ascending."""
    chosen: list[int] = []
    for p in rng.permutation(len(tokens)):
        if len(chosen) >= n_marks:
            break
        if plain_text([tokens[p]]) and all(abs(int(p) - q) > 1 for q in chosen):
            chosen.append(int(p))
    return sorted(chosen)


def highlighted(example: Example, n_marks: int, rng: np.random.Generator) -> str:
    """An activating example with its active tokens marked, or a non-activating one with n_marks random marks."""
    if example.activating:
        return mark_tokens(example.tokens, example.activations)
    acts = [0.0] * len(example.tokens)
    for p in random_marks(example.tokens, max(n_marks, 1), rng):
        acts[p] = 1.0
    return mark_tokens(example.tokens, acts)


def fuzzing_texts(examples: ExampleSet, rng: np.random.Generator) -> list[str]:
    """Every example of the set as a highlighted excerpt; the i-th negative gets as many marks as the i-th positive."""
    marks = [span_count(e.activations) for e in examples.activating] or [1]
    texts = [highlighted(e, 0, rng) for e in examples.activating]
    texts += [highlighted(e, marks[i % len(marks)], rng) for i, e in enumerate(examples.non_activating)]
    return texts


# --------------------------------------------------------------------------- results and storage
