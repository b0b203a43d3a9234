"""URL state: a view survives the round trip through query parameters; bad values fall back to defaults."""

from __future__ import annotations

from saecore.viewstate import KEYS, ViewState, field_names, from_params, to_params


def test_round_trip_restores_the_view():
    view = ViewState(workspace="data/demo", family="fam", runs=("a", "b"), run_a="a", run_b="b", feature=17,
                     sign="abs", dead="exclude", view="seeds", present=True, explained=True, search="cat & dog",
                     score=(0.25, 0.9), log_freq=(-4, -2), order="freq-desc", reference="b", families=("f1", "f2"))
    assert from_params(to_params(view)) == view


def test_an_empty_family_choice_survives_the_round_trip():
    view = ViewState(workspace="w", families=())
    assert from_params(to_params(view)).families == ()
    assert from_params(to_params(ViewState(workspace="w"))).families is None


def test_every_field_has_a_url_key():
    assert set(field_names()) == set(KEYS)


def test_defaults_are_left_out_of_the_url():
    assert to_params(ViewState(workspace="w")) == {KEYS["workspace"]: "w"}


def test_bad_values_fall_back_to_defaults():
    view = from_params({KEYS["feature"]: "-3", KEYS["sign"]: "weird", KEYS["view"]: "x", KEYS["order"]: "?",
                        KEYS["score"]: "0.9,0.1", KEYS["log_freq"]: "a,b"})
    assert (view.feature, view.sign, view.view, view.order, view.score, view.log_freq) == (
        None, "signed", "pair", "score-desc", None, None)


def test_get_all_function_is_accepted():
    params = {KEYS["runs"]: ["r1", "r2"], KEYS["feature"]: ["5"]}
    assert from_params(lambda k: params.get(k, [])) == ViewState(runs=("r1", "r2"), feature=5)
