"""What a shared dashboard link restores (workspace, family, runs, pair, feature), and its URL key names."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields

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
}
SIGNS = ("signed", "abs")
DEADS = ("include", "exclude")
VIEWS = ("pair", "seeds")


@dataclass(frozen=True)
class ViewState:
    """Everything needed to reopen a view exactly; None means 'not chosen yet'."""

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

    def replace(self, **changes) -> "ViewState":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        if "runs" in changes:
            values["runs"] = tuple(changes["runs"] or ())
        return ViewState(**values)


def to_params(state: ViewState) -> dict[str, str | list[str]]:
    """Query parameters for a state: unset fields and defaults are left out so links stay short."""
    out: dict[str, str | list[str]] = {}
    for name in ("workspace", "family", "run_a", "run_b"):
        value = getattr(state, name)
        if value:
            out[KEYS[name]] = str(value)
    if state.runs:
        out[KEYS["runs"]] = list(state.runs)
    if state.feature is not None:
        out[KEYS["feature"]] = str(int(state.feature))
    if state.sign != "signed":
        out[KEYS["sign"]] = state.sign
    if state.dead != "include":
        out[KEYS["dead"]] = state.dead
    if state.view != "pair":
        out[KEYS["view"]] = state.view
    if state.present:
        out[KEYS["present"]] = "1"
    return out


def _int_or_none(text: str | None) -> int | None:
    try:
        value = int(str(text))
    except (TypeError, ValueError):
        return None
    return value if value >= 0 else None


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

    sign = one("sign")
    dead = one("dead")
    view = one("view")
    return ViewState(
        workspace=one("workspace") or None,
        family=one("family") or None,
        runs=tuple(v for v in get_all(KEYS["runs"]) if v),
        run_a=one("run_a") or None,
        run_b=one("run_b") or None,
        feature=_int_or_none(one("feature")),
        sign=sign if sign in SIGNS else "signed",
        dead=dead if dead in DEADS else "include",
        view=view if view in VIEWS else "pair",
        present=one("present") == "1",
    )
