"""Tables describing a workspace: its runs, families with ≥ 2 seeds, their short labels, checkpoints, PW-MCC."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from saecore.metrics import PWMCC
from saecore.runs import RunMeta
from saecore.text import setting_text
from saecore.workspace import Workspace

# Fields that tell families with the same short label apart, tried in this order.
DISAMBIGUATORS = ("d_in", "model", "hook", "format")
# Keys under which training code may record L0 and FVU in a run's metadata (first present wins).
L0_KEYS = ("l0", "L0", "mean_l0", "final_l0")
FVU_KEYS = ("fvu", "FVU", "final_fvu")


def _first(extra: Mapping, keys: Iterable[str]) -> float | None:
    for k in keys:
        v = extra.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def runs_table(ws: Workspace, explained: Mapping[str, int] | None = None,
               warnings: Mapping[str, list[str]] | None = None) -> pd.DataFrame:
    """One row per run: format, architecture, sparsity, seed, shape, L0/FVU when recorded, explanations, warnings."""
    explained = explained or {}
    warnings = warnings or {}
    rows = []
    for r in sorted(ws.runs, key=lambda m: (ws.family_of(m), m.seed is None, m.seed or 0, m.name)):
        rows.append({
            "run": r.name, "family": ws.family_of(r), "format": r.format, "architecture": r.architecture,
            "sparsity": r.sparsity, "seed": r.seed, "step": r.step, "shape": r.shape,
            "L0": _first(r.extra, L0_KEYS), "FVU": _first(r.extra, FVU_KEYS),
            "explanations": int(explained.get(r.name, 0)),
            "warnings": "; ".join(warnings.get(r.name, [])),
        })
    return pd.DataFrame(rows, columns=["run", "architecture", "sparsity", "seed", "step", "shape", "L0", "FVU",
                                       "explanations", "warnings", "format", "family"])


def families_table(ws: Workspace, labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per family: its short label, architecture, sparsity, step, runs, seeds, shape and full key."""
    labels = labels or {}
    return pd.DataFrame([{"family": labels.get(k, k), "architecture": v[0].architecture, "sparsity": v[0].sparsity,
                          "step": v[0].step, "runs": len(v), "seeds": ", ".join(str(r.seed) for r in v),
                          "shape": v[0].shape, "key": k} for k, v in ws.families.items()],
                        columns=["family", "architecture", "sparsity", "step", "runs", "seeds", "shape", "key"])


def comparable_families(ws: Workspace, final_only: bool = True) -> dict[str, list[RunMeta]]:
    """Families with at least two runs: final runs only (no checkpoint step), or also checkpoints, listed after."""
    fams = {k: v for k, v in ws.families.items() if len(v) >= 2}
    final = {k: v for k, v in fams.items() if all(r.step is None for r in v)}
    if final_only:
        return final
    steps = sorted((k for k in fams if k not in final), key=lambda k: (fams[k][0].family_key(
        tuple(f for f in ws.family_fields if f != "step")), fams[k][0].step or 0))
    return {**final, **{k: fams[k] for k in steps}}


def family_summary(results: Iterable[tuple[str, list[RunMeta], PWMCC]]) -> pd.DataFrame:
    """PW-MCC of every pair in every family, with the family's architecture and sparsity setting."""
    rows = []
    for key, metas, pw in results:
        first = metas[0]
        for p in pw.pairs:
            rows.append({"family": key, "architecture": first.architecture, "sparsity": first.sparsity,
                         "sparsity_value": first.sparsity_value, "d_in": first.d_in, "d_sae": first.d_sae,
                         "run_a": pw.runs[p.a], "run_b": pw.runs[p.b], "pw_mcc": p.pw_mcc, "sign": pw.sign})
    return pd.DataFrame(rows, columns=["family", "architecture", "sparsity", "sparsity_value", "d_in", "d_sae",
                                       "run_a", "run_b", "pw_mcc", "sign"])


def checkpoint_series(ws: Workspace, family: str) -> dict[int, list[RunMeta]]:
    """Checkpoints of a family: step -> runs (one per seed) whose metadata equals the family's apart from step.

    The family's final runs are added at their recorded `tokens_seen` (checkpoint steps count tokens too).
    """
    fields = tuple(f for f in ws.family_fields if f != "step")
    members = ws.families.get(family, [])
    if not members:
        return {}
    target = members[0].family_key(fields)
    out: dict[int, list[RunMeta]] = {}
    for r in ws.runs:
        if r.step is not None and r.family_key(fields) == target:
            out.setdefault(int(r.step), []).append(r)
    # The final runs join the series at the token count their training recorded, when every one of them has it.
    seen = [r.extra.get("tokens_seen") for r in members]
    if members[0].step is None and all(isinstance(t, int) for t in seen) and len(set(seen)) == 1 \
            and seen[0] not in out:
        out[int(seen[0])] = list(members)
    for runs in out.values():
        runs.sort(key=lambda m: (m.seed is None, m.seed or 0, m.name))
    return dict(sorted(out.items()))


def steps_table(results: Iterable[tuple[int, PWMCC]]) -> pd.DataFrame:
    """PW-MCC of every pair at every checkpoint step: columns step, run_a, run_b, pw_mcc."""
    rows = [{"step": step, "run_a": pw.runs[p.a], "run_b": pw.runs[p.b], "pw_mcc": p.pw_mcc}
            for step, pw in results for p in pw.pairs]
    return pd.DataFrame(rows, columns=["step", "run_a", "run_b", "pw_mcc"])


def explained_pair(names: list[str], explained: Mapping[str, int], preferred: tuple[str | None, str | None] = (None, None)
                   ) -> tuple[str, str] | None:
    """Two runs that both have explanations: the preferred pair when it qualifies, else the first two (or None)."""
    ok = [n for n in names if explained.get(n, 0) > 0]
    a, b = preferred
    if a in ok and b in ok and a != b:
        return a, b
    return (ok[0], ok[1]) if len(ok) >= 2 else None


def _seeds_text(seeds: list[int]) -> str:
    """'seeds 0–2' for a contiguous run of seeds, else the list; '' when no seed is recorded."""
    if not seeds:
        return ""
    seeds = sorted(set(seeds))
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}–{seeds[-1]}"
    return "seeds " + ", ".join(map(str, seeds))


def seed_text(meta: RunMeta) -> str:
    """A run as named within its family: 'seed 1', or its name when no seed is recorded."""
    return meta.name if meta.seed is None else f"seed {meta.seed}"


def family_label(metas: list[RunMeta], extra: tuple[str, ...] = ()) -> str:
    """A short name for a family, e.g. 'TopK k=32 · 1,536 latents · seeds 0–2' (plus `extra` fields when asked)."""
    first = metas[0]
    parts = [setting_text(first.architecture, first.sparsity), f"{first.d_sae:,} latents"]
    for name in extra:
        value = getattr(first, name)
        if value is not None:
            parts.append(f"d_in {value:,}" if name == "d_in" else str(value))
    if first.step is not None:
        parts.append(f"step {first.step:,}")
    seeds = _seeds_text([m.seed for m in metas if m.seed is not None])
    if seeds:
        parts.append(seeds)
    return " · ".join(parts)


def family_labels(families: Mapping[str, list[RunMeta]]) -> dict[str, str]:
    """Family key -> short label, unique within the mapping: families whose short labels collide get the
    fields that tell them apart (d_in, model, hook, format), and the full key only as a last resort."""
    labels = {k: family_label(v) for k, v in families.items()}
    groups: dict[str, list[str]] = {}
    for key, label in labels.items():
        groups.setdefault(label, []).append(key)
    for keys in (g for g in groups.values() if len(g) > 1):
        extra = tuple(name for name in DISAMBIGUATORS
                      if len({getattr(families[k][0], name) for k in keys}) > 1)
        for k in keys:
            labels[k] = family_label(families[k], extra) if extra else f"{labels[k]} ({k})"
    if len(set(labels.values())) < len(labels):
        labels = {k: f"{label} ({k})" for k, label in labels.items()}
    return labels
