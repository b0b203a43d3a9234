"""Explanation job estimates: tokens from the real prompts, skipped features, cost and time."""

from __future__ import annotations

import pytest

from saecore.explain_plan import estimate, parse_indices
from saecore.features import Context


def _contexts():
    return {f: [Context(f, ["The", " cat", " sat"], [0.0, 2.0, 0.5])] for f in range(4)}


def test_estimate_counts_requests_and_skips():
    plan = estimate(_contexts(), [0, 1, 2, 3, 9], max_tokens=30, already=[1])
    assert (plan.features, plan.already, plan.without_contexts) == (5, 1, 1)
    assert plan.completion_tokens == 3 * 30 and plan.prompt_tokens > 0


def test_cost_and_time_scale_with_prices_and_concurrency():
    one = estimate(_contexts(), [0, 1], max_tokens=20, price_in_per_m=1.0, price_out_per_m=2.0)
    two = estimate(_contexts(), [0, 1], max_tokens=20, concurrency=2, price_in_per_m=1.0, price_out_per_m=2.0)
    assert one.cost == pytest.approx((one.prompt_tokens + 2 * one.completion_tokens) / 1e6)
    assert two.seconds == pytest.approx(one.seconds / 2)
    assert "≈" in one.summary() and "2 features" in one.summary()


def test_parse_indices_checks_range_and_drops_repeats():
    assert parse_indices("3, 17 3\n42", 64) == [3, 17, 42]
    with pytest.raises(ValueError, match="feature 64 is out of range"):
        parse_indices("64", 64)
    with pytest.raises(ValueError, match="'x' is not a feature index"):
        parse_indices("1 x", 64)


def test_counts_are_worded_in_the_right_number():
    one = estimate(_contexts(), [0], max_tokens=10).summary()
    assert one.startswith("1 feature (0 already explained by this model, 0 without contexts)")
    assert estimate(_contexts(), [0, 1], max_tokens=10).summary().startswith("2 features (")
    with pytest.raises(ValueError, match=r"\(the run has 1 feature\)"):
        parse_indices("1", 1)
