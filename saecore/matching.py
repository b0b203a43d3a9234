"""One-to-one feature matching between two runs: exact assignment on decoder cosines."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from saecore.errors import InputError
from saecore.runs import Run, RunMeta
from saecore.similarity import apply_sign, check_sign, dense_similarity, normalize_rows, resolve_device
from saecore.sparse_assignment import pair_dots
from saecore.text import plural

if TYPE_CHECKING:
    import pandas as pd

DEAD_POLICIES = ("include", "exclude")


# Each side's best two partners: (row_vals (n, ≤2), row_idx, col_vals (m, ≤2), col_idx), best first.
Top2 = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
# Pairs per gather when scoring pairs on a GPU.
EDGE_CHUNK = 1 << 14


@dataclass
class Assignment:
    """A solver's answer on live rows: matched index pairs and their cosines (float64), and each
    side's best two partners when the solver saw them anyway (saves the runner-up pass)."""

    rows: np.ndarray
    cols: np.ndarray
    scores: np.ndarray
    info: dict = field(default_factory=dict)
    top2: Top2 | None = None


Solver = Callable[[torch.Tensor, torch.Tensor, str], Assignment]


def solve_dense(a_n: torch.Tensor, b_n: torch.Tensor, sign: str) -> Assignment:
    """Reference: the whole float64 cosine matrix and scipy's exact linear_sum_assignment."""
    from scipy.optimize import linear_sum_assignment  # imported here: the certified path never needs it

    t0 = time.perf_counter()
    s = dense_similarity(a_n, b_n, sign, torch.float64).cpu().numpy()
    t1 = time.perf_counter()
    rows, cols = linear_sum_assignment(s, maximize=True)
    t2 = time.perf_counter()
    return Assignment(rows, cols, s[rows, cols], {
        "method": "dense", "certified": True, "seconds": {"similarity": t1 - t0, "assignment": t2 - t1}})


def solve_certified(a_n: torch.Tensor, b_n: torch.Tensor, sign: str) -> Assignment:
    """Same optimum without the dense matrix: sparse candidates plus a dual certificate (saecore.certified)."""
    from saecore.certified import certified_assignment
    return certified_assignment(a_n, b_n, sign)


SOLVERS: dict[str, Solver] = {"dense": solve_dense, "certified": solve_certified}


def choose_method(n: int, m: int) -> str:
    """The solver 'auto' uses for an n × m problem."""
    # Measured crossover (benchmarks/matching.py, 2 cores): dense wins at 1,024², certified from 2,048².
    if "certified" in SOLVERS and n * m > 1536 * 1536:
        return "certified"
    return "dense"


@dataclass(frozen=True)
class SolveSummary:
    """How a set of matchings was solved: whether every one is proven optimal, a badge-length headline
    and one sentence of detail (for captions, reports and the CLI)."""

    proven: bool
    headline: str
    detail: str


def summarize_solves(infos: list[dict]) -> SolveSummary:
    """Say how these matchings were solved and why each is exact.

    infos: Match.info of each run pair (cached matches keep the info of the run that computed them).
    """
    n = len(infos)
    if not n:
        return SolveSummary(True, "nothing matched", "No pairs were matched.")
    device = ", ".join(sorted({str(i.get("device", "cpu")) for i in infos}))
    seconds = sum(i.get("seconds", {}).get("total", 0.0) for i in infos)
    dense = [i for i in infos if i.get("method") == "dense" or i.get("fallback") == "dense"]
    sparse = [i for i in infos if i.get("method") == "certified" and i.get("fallback") != "dense"]
    proven = [i for i in sparse if i.get("certified") is True]
    failed = [i for i in sparse if i.get("certified") is not True]
    other = n - len(dense) - len(sparse)
    unproven = len(failed) + other  # scipy's dense solve is exact without a certificate
    parts = []
    if dense:
        parts.append("scipy's assignment on the dense float64 cosine matrix" if len(dense) == n else
                     f"{len(dense)} by scipy's dense float64 assignment")
    if proven:
        screens = "/".join(sorted({i.get("screen", {}).get("dtype", "float32") for i in proven}))
        rescored = sum(i.get("recomputed", {}).get("pairs_float64", 0) for i in proven)
        what = "" if len(proven) == n else f"{len(proven)} "
        parts.append(f"{what}certified optimal by a dual certificate ({screens} screen, "
                     f"{rescored:,} pairs rescored in float64)")
    if failed:
        rounds = max(i.get("rounds", 0) for i in failed)
        parts.append(f"{len(failed)} not certified: excluded pairs still violated the dual "
                     f"certificate after {plural(rounds, 'round')}")
    if other:
        parts.append(f"{other} by another solver, without a proof of optimality")
    pairs = "the pair" if n == 1 else f"all {n} pairs"
    head = ("Exact matching of " + pairs if not unproven else
            f"Warning: {unproven} of {n} matchings could not be proven optimal. Matching of " + pairs)
    detail = f"{head}: {'; '.join(parts)}; solved on {device} in {seconds:.1f} s."
    if unproven:
        return SolveSummary(False, "not proven optimal", detail)
    return SolveSummary(True, "certified optimum" if len(proven) == n else "exact optimum", detail)


@dataclass
class Match:
    """The optimal one-to-one matching of run A's features to run B's, with per-feature views.

    Per-feature arrays have one entry per feature of that run: the matched partner (-1 when
    unmatched or excluded), its score (NaN then), and the best other candidate (the runner-up,
    a hint of split or absorbed features).
    """

    run_a: str
    run_b: str
    sign: str
    dead: str
    rows: np.ndarray
    cols: np.ndarray
    scores: np.ndarray
    partner_a: np.ndarray
    score_a: np.ndarray
    runner_up_a: np.ndarray
    runner_up_score_a: np.ndarray
    partner_b: np.ndarray
    score_b: np.ndarray
    runner_up_b: np.ndarray
    runner_up_score_b: np.ndarray
    dead_a: int = 0
    dead_b: int = 0
    info: dict = field(default_factory=dict)

    @property
    def n_matched(self) -> int:
        return int(len(self.scores))

    @property
    def mcc(self) -> float:
        """Mean matched cosine (PW-MCC for two runs of one family)."""
        return float(np.mean(self.scores)) if len(self.scores) else float("nan")

    def pairs(self) -> pd.DataFrame:
        """One row per matched pair, best first: feature_a, feature_b, score, runner-up columns."""
        import pandas as pd

        df = pd.DataFrame({
            "feature_a": self.rows, "feature_b": self.cols, "score": self.scores,
            "runner_up_b": self.runner_up_a[self.rows], "runner_up_b_score": self.runner_up_score_a[self.rows],
            "runner_up_a": self.runner_up_b[self.cols], "runner_up_a_score": self.runner_up_score_b[self.cols],
        })
        return df.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)

    def swapped(self) -> "Match":
        """The same matching seen from B's side."""
        order = np.argsort(self.cols, kind="stable")
        return Match(self.run_b, self.run_a, self.sign, self.dead, self.cols[order], self.rows[order],
                     self.scores[order], self.partner_b, self.score_b, self.runner_up_b, self.runner_up_score_b,
                     self.partner_a, self.score_a, self.runner_up_a, self.runner_up_score_a,
                     self.dead_b, self.dead_a, dict(self.info))


def pair_scores(a: torch.Tensor, b: torch.Tensor, rows: np.ndarray, cols: np.ndarray, sign: str = "signed",
                chunk: int = EDGE_CHUNK) -> np.ndarray:
    """Float64 dot products of rows a[rows[e]] and b[cols[e]]: a compiled loop for float32 on the CPU,
    chunked float64 gathers otherwise (GPU, other dtypes)."""
    out = np.empty(len(rows), dtype=np.float64)
    if a.device.type == "cpu" and a.dtype == b.dtype == torch.float32:
        pair_dots(a.contiguous().numpy(), b.contiguous().numpy(), np.asarray(rows, np.int64),
                  np.asarray(cols, np.int64), sign == "abs", out)
        return out
    for s in range(0, len(rows), chunk):
        r = torch.as_tensor(rows[s:s + chunk], device=a.device)
        c = torch.as_tensor(cols[s:s + chunk], device=a.device)
        out[s:s + chunk] = apply_sign((a[r].double() * b[c].double()).sum(1), sign).cpu().numpy()
    return out


def exact_scores(dec_a: torch.Tensor, dec_b: torch.Tensor, rows: np.ndarray, cols: np.ndarray, sign: str) -> np.ndarray:
    """Matched cosines recomputed in float64 from the raw rows: one definition of the score, whatever the solver."""
    dots = pair_scores(dec_a, dec_b, rows, cols)
    norms = np.sqrt(pair_scores(dec_a, dec_a, rows, rows) * pair_scores(dec_b, dec_b, cols, cols))
    c = dots / np.where(norms == 0, 1.0, norms)
    return np.abs(c) if sign == "abs" else c


def d_in_origin(meta: RunMeta) -> str:
    """'d_in=576, from cfg.json 'd_in'': a run's d_in and where it was read, for messages about mismatches."""
    return f"d_in={meta.d_in}, from {meta.d_in_source}" if meta.d_in_source else f"d_in={meta.d_in}"


def check_compatible(a: Run, b: Run) -> None:
    """Refuse two runs whose decoders live in different spaces, naming where each d_in came from."""
    if a.d_in != b.d_in:
        raise InputError(f"cannot match {a.meta.path} ({d_in_origin(a.meta)}) with {b.meta.path} "
                         f"({d_in_origin(b.meta)}): decoders live in different spaces")


@dataclass(frozen=True)
class Prepared:
    """A decoder made ready for matching once (then reused for every pair it is in): its unit rows on
    the device, only the live ones when dead rows are excluded, and the feature each of them is."""

    raw: torch.Tensor  # (d_sae, d_in) as stored: matched scores are recomputed from it
    unit: torch.Tensor
    keep: np.ndarray
    n_dead: int
    dead: str


def prepare(dec: torch.Tensor, dead: str = "include", device: str | torch.device = "auto") -> Prepared:
    """Normalise a decoder and move it to the chosen device; dead='exclude' leaves zero-norm rows out.

    Normalising happens on the CPU whatever the device, so a GPU matches exactly the unit rows the CPU does.
    """
    if dead not in DEAD_POLICIES:
        raise ValueError(f"dead must be one of {DEAD_POLICIES}, got {dead!r}")
    dev = resolve_device(device)
    dec = torch.as_tensor(dec)
    unit, dead_rows = normalize_rows(dec.to("cpu", torch.float32))
    keep = np.arange(len(unit))
    if dead == "exclude":
        keep = torch.nonzero(~dead_rows).flatten().numpy()
        unit = unit[torch.as_tensor(keep)]
    return Prepared(dec, unit.to(dev), keep, int(dead_rows.sum()), dead)


def match_decoders(dec_a: torch.Tensor, dec_b: torch.Tensor, sign: str = "signed", dead: str = "include",
                   device: str | torch.device = "auto", method: str = "auto",
                   names: tuple[str, str] = ("A", "B")) -> Match:
    """Match two (d_sae, d_in) decoders; see `match_runs`."""
    check_sign(sign)
    if dec_a.shape[1] != dec_b.shape[1]:
        raise InputError(f"decoders have different d_in: {dec_a.shape[1]} vs {dec_b.shape[1]}")
    dev = resolve_device(device)
    return match_prepared(prepare(dec_a, dead, dev), prepare(dec_b, dead, dev), sign, method, names)


def match_prepared(pa: Prepared, pb: Prepared, sign: str = "signed", method: str = "auto",
                   names: tuple[str, str] = ("A", "B")) -> Match:
    """Match two prepared decoders (same dead policy and device): the optimal assignment, each side's
    scores, partners and runner-ups."""
    check_sign(sign)
    if pa.dead != pb.dead or pa.unit.device != pb.unit.device:
        raise ValueError("both decoders must be prepared with the same dead policy on the same device")
    live_a, live_b, ka, kb = pa.unit, pb.unit, pa.keep, pb.keep
    if method == "auto":
        method = choose_method(len(live_a), len(live_b))
    if method not in SOLVERS:
        raise ValueError(f"unknown matching method {method!r} (known: {', '.join(SOLVERS)})")
    t0 = time.perf_counter()
    if len(live_a) and len(live_b):
        sol = SOLVERS[method](live_a, live_b, sign)
    else:
        sol = Assignment(np.zeros(0, int), np.zeros(0, int), np.zeros(0), {"method": method, "certified": True})
    t1 = time.perf_counter()
    rows, cols = ka[sol.rows], kb[sol.cols]
    order = np.argsort(rows, kind="stable")
    rows, cols = rows[order], cols[order]
    scores = exact_scores(pa.raw, pb.raw, rows, cols, sign)
    n_a, n_b = len(pa.raw), len(pb.raw)

    def per_feature(n: int, mine: np.ndarray, theirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        partner, score = np.full(n, -1, dtype=np.int64), np.full(n, np.nan)
        partner[mine], score[mine] = theirs, scores
        return partner, score

    partner_a, score_a = per_feature(n_a, rows, cols)
    partner_b, score_b = per_feature(n_b, cols, rows)
    if sol.top2 is None:
        from saecore.top_two import exact_best_two  # late: top_two scores pairs with this module's pair_scores

        top2 = exact_best_two(live_a, live_b, sign)[0]
    else:
        top2 = sol.top2
    ru_a, rus_a, ru_b, rus_b = _runner_ups(top2, ka, kb, partner_a, partner_b, n_a, n_b)
    info = dict(sol.info)
    info["device"] = str(live_a.device)
    info.setdefault("seconds", {})["runner_up"] = time.perf_counter() - t1
    info["seconds"]["total"] = time.perf_counter() - t0
    return Match(names[0], names[1], sign, pa.dead, rows, cols, scores, partner_a, score_a, ru_a, rus_a,
                 partner_b, score_b, ru_b, rus_b, pa.n_dead, pb.n_dead, info)


def _runner_ups(top2: Top2, ka, kb, partner_a, partner_b, n_a, n_b):
    """Each feature's best candidate on the other side other than its matched partner."""
    out = []
    rv, ri, cv, ci = top2
    for vals, idx, mine, theirs, partner, n in ((rv, ri, ka, kb, partner_a, n_a), (cv, ci, kb, ka, partner_b, n_b)):
        ru, rus = np.full(n, -1, dtype=np.int64), np.full(n, np.nan)
        if vals.shape[1]:
            cand = theirs[idx]
            first_is_partner = cand[:, 0] == partner[mine]
            col = np.where(first_is_partner, 1, 0) if vals.shape[1] > 1 else np.zeros(len(mine), dtype=int)
            ok = ~(first_is_partner & (vals.shape[1] == 1))
            pick = np.arange(len(mine))
            ru[mine[ok]] = cand[pick, col][ok]
            rus[mine[ok]] = vals[pick, col][ok]
        out += [ru, rus]
    return out


def match_runs(a: Run, b: Run, sign: str = "signed", dead: str = "include", device: str | torch.device = "auto",
               method: str = "auto") -> Match:
    """Optimal one-to-one matching of a's decoder rows to b's (min(d_a, d_b) pairs).

    sign: 'signed' cosine (as the authors' code) or 'abs'. dead: zero-norm rows either take part
    with score 0 ('include') or are left out before matching ('exclude').
    """
    check_compatible(a, b)
    return match_decoders(a.decoder, b.decoder, sign, dead, device, method, (a.name, b.name))


_SIDE_COLUMNS = ("partner", "score", "runner_up", "runner_up_score")


def match_to_arrays(match: Match) -> tuple[dict[str, np.ndarray], dict]:
    """Both sides' per-feature arrays plus JSON metadata: how a Match is stored on disk."""
    arrays = {f"{c}_{s}": getattr(match, f"{c}_{s}") for s in ("a", "b") for c in _SIDE_COLUMNS}
    meta = {"run_a": match.run_a, "run_b": match.run_b, "sign": match.sign, "dead": match.dead,
            "dead_a": match.dead_a, "dead_b": match.dead_b, "info": match.info}
    return arrays, meta


def match_from_arrays(arrays: dict[str, np.ndarray], meta: dict) -> Match:
    """Inverse of `match_to_arrays`."""
    arr = {f"{c}_{s}": arrays[f"{c}_{s}"] for s in ("a", "b") for c in _SIDE_COLUMNS}
    rows = np.nonzero(arr["partner_a"] >= 0)[0]
    return Match(meta["run_a"], meta["run_b"], meta["sign"], meta["dead"], rows, arr["partner_a"][rows],
                 arr["score_a"][rows], dead_a=meta["dead_a"], dead_b=meta["dead_b"], info=meta.get("info", {}), **arr)
