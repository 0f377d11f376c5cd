"""The peer strategies (DoReMi, Sheared-LLaMA dynamic batch loading, proportional) against hand-computed numbers
from their papers' formulas (method.md)."""

import math

import pytest

from versatune_hf.mixing import STRATEGIES, UpdateParams

EXACT = dict(rel=1e-12, abs=1e-12)


def test_doremi_by_hand():
    # λ = max(ℓ − ℓ_ref, 0) = (1.0, 0.0); α = softmax(log α + η λ) with η = 2; then (1 − 1e-3) α + 1e-3 / 2
    result = STRATEGIES["doremi"].update(
        {"a": 0.5, "b": 0.5}, {"a": 2.0, "b": 1.0}, None, {"a": 1.0, "b": 1.5}, UpdateParams(eta=2.0)
    )
    a, b = 0.5 * math.exp(2.0), 0.5
    expected_a = (1 - 1e-3) * a / (a + b) + 1e-3 / 2
    assert result.score == {"a": 1.0, "b": 0.0}
    assert result.weights == {"a": pytest.approx(expected_a, **EXACT), "b": pytest.approx(1 - expected_a, **EXACT)}


def test_dynamic_batch_loading_by_hand():
    # Δ = max(ℓ − ℓ_target, 0) = (0.5, 0); w ∝ w·exp(Δ)
    result = STRATEGIES["dbl"].update(
        {"a": 0.3, "b": 0.7}, {"a": 1.5, "b": 0.9}, None, {"a": 1.0, "b": 1.0}, UpdateParams()
    )
    a, b = 0.3 * math.exp(0.5), 0.7
    assert result.weights == {"a": pytest.approx(a / (a + b), **EXACT), "b": pytest.approx(b / (a + b), **EXACT)}


def test_proportional_strategy_starts_from_domain_sizes_and_keeps_them():
    assert STRATEGIES["proportional"].initial_weights == "proportional"
    assert not STRATEGIES["proportional"].dynamic
