"""What a shared dashboard link restores (workspace, runs, pair, filters, presentation mode) and its URL key names."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace

# The one place where query-parameter names are defined.
KEYS: dict[str, str] = {
    "workspace": "ws",
    "family": "family",
    "runs": "runs",
    "run_a": "a",
    "run_b": "b",
    "feature": "f",
    "sign": "sign",
    "dead": "dead",
    "view": "view",
    "present": "present",
    "explained": "explained",
    "search": "q",
    "score": "score",
    "log_freq": "freq",
    "order": "order",
    "reference": "ref",
    "families": "fams",
    "threshold": "thr",
    "scorer": "scorer",
    "min_score": "minscore",
}
SIGNS = ("signed", "abs")
DEADS = ("include", "exclude")
VIEWS = ("pair", "seeds", "partners")
SCORERS = ("detection", "fuzzing", "embedding")
ORDERS = ("score-desc", "score-asc", "feature", "freq-desc")
ORDER_LABELS = {"score-desc": "score (high → low)", "score-asc": "score (low → high)",
                "feature": "feature of run A", "freq-desc": "frequency in run A (high → low)"}


@dataclass(frozen=True)
class ViewState:
    """Everything needed to reopen a view exactly; None means 'not chosen yet' (the page's default)."""

    workspace: str | None = None
    family: str | None = None
    runs: tuple[str, ...] = field(default_factory=tuple)
    run_a: str | None = None
    run_b: str | None = None
    feature: int | None = None
    sign: str = "signed"
    dead: str = "include"
    view: str = "pair"
    present: bool = False
    # Feature pairs page: the filter and order of the pair table.
    explained: bool = False
    search: str = ""
    score: tuple[float, float] | None = None
    log_freq: tuple[int, int] | None = None
    order: str = "score-desc"
    # Consistency page: the run whose features are binned by frequency.
    reference: str | None = None
    # Consistency vs semantics page: the families drawn side by side (None: the page's default choice).
    families: tuple[str, ...] | None = None
    # Orphans page: the cosine below which a latent has no partner in another seed.
    threshold: float = 0.7
    # Consistency vs semantics page: keep only pairs whose explanations score at least min_score by scorer.
    scorer: str | None = None
    min_score: float | None = None

    def replace(self, **changes) -> "ViewState":
        for name in ("runs", "families"):
            if name in changes and changes[name] is not None:
                changes[name] = tuple(changes[name])
        return replace(self, **changes)


def _range_text(values: tuple[float, float], fmt: str) -> str:
    return f"{values[0]:{fmt}},{values[1]:{fmt}}"


def to_params(state: ViewState) -> dict[str, str | list[str]]:
    """Query parameters for a state: unset fields and defaults are left out so links stay short."""
    out: dict[str, str | list[str]] = {}
    for name in ("workspace", "family", "run_a", "run_b", "reference"):
        value = getattr(state, name)
        if value:
            out[KEYS[name]] = str(value)
    if state.runs:
        out[KEYS["runs"]] = list(state.runs)
    if state.families is not None:
        out[KEYS["families"]] = list(state.families) or [""]
    if state.feature is not None:
        out[KEYS["feature"]] = str(int(state.feature))
    defaults = ViewState()
    for name in ("sign", "dead", "view", "order"):
        if getattr(state, name) != getattr(defaults, name):
            out[KEYS[name]] = getattr(state, name)
    if state.present:
        out[KEYS["present"]] = "1"
    if state.explained:
        out[KEYS["explained"]] = "1"
    if state.search:
        out[KEYS["search"]] = state.search
    if state.score is not None:
        out[KEYS["score"]] = _range_text(state.score, "g")
    if state.log_freq is not None:
        out[KEYS["log_freq"]] = _range_text(state.log_freq, "d")
    if state.threshold != ViewState().threshold:
        out[KEYS["threshold"]] = f"{state.threshold:g}"
    if state.scorer:
        out[KEYS["scorer"]] = state.scorer
    if state.min_score is not None:
        out[KEYS["min_score"]] = f"{state.min_score:g}"
    return out


def _unit_float(text: str | None) -> float | None:
    """A float in [0, 1], else None."""
    try:
        value = float(str(text))
    except (TypeError, ValueError):
        return None
    return value if 0.0 <= value <= 1.0 else None


def _int_or_none(text: str | None) -> int | None:
    try:
        value = int(str(text))
    except (TypeError, ValueError):
        return None
    return value if value >= 0 else None


def _range(text: str | None, cast: Callable[[str], float]) -> tuple | None:
    """'lo,hi' as a (lo, hi) pair with lo ≤ hi and both finite, else None."""
    if not text:
        return None
    try:
        lo, hi = (cast(v) for v in str(text).split(","))
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        return None
    return lo, hi


def from_params(params: Mapping[str, str | list[str]] | Callable[[str], list[str]]) -> ViewState:
    """A state from query parameters (a mapping, or a `get_all(key) -> list` function); bad values fall back to defaults."""
    if callable(params):
        get_all = params
    else:
        def get_all(key: str) -> list[str]:
            value = params.get(key)
            if value is None:
                return []
            return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]

    def one(name: str) -> str | None:
        values = get_all(KEYS[name])
        return values[-1] if values else None

    def choice(name: str, allowed: tuple[str, ...]) -> str:
        value = one(name)
        return value if value in allowed else getattr(ViewState(), name)

    families = get_all(KEYS["families"])
    return ViewState(
        workspace=one("workspace") or None,
        family=one("family") or None,
        runs=tuple(v for v in get_all(KEYS["runs"]) if v),
        run_a=one("run_a") or None,
        run_b=one("run_b") or None,
        feature=_int_or_none(one("feature")),
        sign=choice("sign", SIGNS),
        dead=choice("dead", DEADS),
        view=choice("view", VIEWS),
        present=one("present") == "1",
        explained=one("explained") == "1",
        search=one("search") or "",
        score=_range(one("score"), float),
        log_freq=_range(one("log_freq"), int),
        order=choice("order", ORDERS),
        reference=one("reference") or None,
        families=tuple(v for v in families if v) if families else None,
        threshold=_unit_float(one("threshold")) if _unit_float(one("threshold")) is not None else ViewState().threshold,
        scorer=one("scorer") if one("scorer") in SCORERS else None,
        min_score=_unit_float(one("min_score")),
    )


def field_names() -> list[str]:
    """The names of every ViewState field (each has a URL key)."""
    return [f.name for f in fields(ViewState)]
