"""URL state: a view survives the round trip through query parameters; bad values fall back to defaults."""

from __future__ import annotations

from saecore.viewstate import KEYS, ViewState, from_params, to_params


def test_round_trip_restores_the_view():
    view = ViewState(workspace="data/demo", family="fam", runs=("a", "b"), run_a="a", run_b="b", feature=17,
                     sign="abs", dead="exclude", view="seeds", present=True)
    assert from_params(to_params(view)) == view


def test_defaults_are_left_out_of_the_url():
    assert to_params(ViewState(workspace="w")) == {KEYS["workspace"]: "w"}


def test_bad_values_fall_back_to_defaults():
    view = from_params({KEYS["feature"]: "-3", KEYS["sign"]: "weird", KEYS["view"]: "x"})
    assert (view.feature, view.sign, view.view) == (None, "signed", "pair")


def test_get_all_function_is_accepted():
    params = {KEYS["runs"]: ["r1", "r2"], KEYS["feature"]: ["5"]}
    assert from_params(lambda k: params.get(k, [])) == ViewState(runs=("r1", "r2"), feature=5)
