"""Strategies and guards against numbers computed by hand from the formulas in the VersaTune paper (method.md)."""

import math
import random

import pytest

from versatune_hf.strategies import (
    STRATEGIES,
    UpdateParams,
    apply_floor,
    compute_update,
    forgetting_degree,
    initial_weights_for,
    inverse_weights,
    learnable_potential,
    limit_change,
    multiplicative_update,
    smooth,
)

EXACT = dict(rel=1e-12, abs=1e-12)


def test_learnable_potential_clips_at_zero_and_needs_a_reference():
    # γ = max((ℓ − ℓ_ref)/ℓ, 0): law (2 − 0.5)/2 = 0.75; code (1 − 1.5)/1 < 0 → 0; medicine has no reference.
    potential = learnable_potential({"law": 2.0, "code": 1.0, "medicine": 3.0}, {"law": 0.5, "code": 1.5})
    assert potential == {"law": pytest.approx(0.75, **EXACT), "code": 0.0, "medicine": None}
    assert learnable_potential({"law": 2.0}, None) == {"law": None}


def test_forgetting_degree_counts_only_rises():
    # φ = max((ℓ − ℓ_prev)/ℓ_prev, 0): law rose 2 → 2.5 gives 0.25; code fell 1 → 0.8 gives 0.
    degree = forgetting_degree({"law": 2.5, "code": 0.8, "other": 1.0}, {"law": 2.0, "code": 1.0})
    assert degree == {"law": pytest.approx(0.25, **EXACT), "code": 0.0, "other": 0.0}
    assert forgetting_degree({"law": 2.5}, None) == {"law": 0.0}


def test_multiplicative_update_by_hand():
    # w·exp(η s)/Σ with η = 0.5: a: 0.2·e^(0.5·1) , b: 0.8·e^(0.5·3)
    a, b = 0.2 * math.exp(0.5), 0.8 * math.exp(1.5)
    result = multiplicative_update({"a": 0.2, "b": 0.8}, {"a": 1.0, "b": 3.0}, 0.5)
    assert result == {"a": pytest.approx(a / (a + b), **EXACT), "b": pytest.approx(b / (a + b), **EXACT)}


def test_multiplicative_update_does_not_overflow():
    result = multiplicative_update({"a": 0.5, "b": 0.5}, {"a": 1000.0, "b": 999.0}, 1.0)
    assert result["a"] == pytest.approx(math.e / (math.e + 1), **EXACT)


def test_versatune_scores_potential_plus_lambda_forgetting():
    losses, previous, references = {"a": 2.0, "b": 1.5}, {"a": 1.6, "b": 2.0}, {"a": 1.0, "b": 0.5}
    # γ_a = 0.5, φ_a = 0.25 → s_a = 0.5 + 2·0.25 = 1.0 ; γ_b = 2/3, φ_b = 0 → s_b = 2/3 ; η = 1.5
    params = UpdateParams(eta=1.5, forgetting_weight=2.0)
    result = STRATEGIES["versatune"].update({"a": 0.4, "b": 0.6}, losses, previous, references, params)
    a, b = 0.4 * math.exp(1.5 * 1.0), 0.6 * math.exp(1.5 * 2 / 3)
    assert result.score == {"a": pytest.approx(1.0, **EXACT), "b": pytest.approx(2 / 3, **EXACT)}
    assert result.weights == {"a": pytest.approx(a / (a + b), **EXACT), "b": pytest.approx(b / (a + b), **EXACT)}
    assert result.potential == {"a": pytest.approx(0.5), "b": pytest.approx(2 / 3)}


def test_a_domain_whose_loss_rises_gains_weight_through_lambda():
    losses, previous, references = {"a": 2.0, "b": 2.0}, {"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 1.0}
    with_forgetting = STRATEGIES["versatune"].update(
        {"a": 0.5, "b": 0.5}, losses, previous, references, UpdateParams(forgetting_weight=1.0)
    )
    assert with_forgetting.weights["a"] > 0.5 > with_forgetting.weights["b"]


def test_versatune_without_reference_falls_back_to_the_raw_loss():
    result = STRATEGIES["versatune"].update({"a": 0.5, "b": 0.5}, {"a": 3.0, "b": 1.0}, None, None, UpdateParams())
    a, b = 0.5 * math.exp(3.0), 0.5 * math.exp(1.0)
    assert result.score == {"a": 3.0, "b": 1.0}
    assert result.weights["a"] == pytest.approx(a / (a + b), **EXACT)


def test_official_variant_uses_loss_minus_reference_with_eta_one():
    params = UpdateParams(eta=7.0)  # ignored: the released code has no η
    result = STRATEGIES["versatune-official"].update(
        {"a": 0.5, "b": 0.5}, {"a": 2.0, "b": 1.0}, None, {"a": 3.0}, params
    )
    # s_a = 2 − 3 = −1 (no clipping), s_b = 1 − 0 = 1
    a, b = 0.5 * math.exp(-1.0), 0.5 * math.exp(1.0)
    assert result.score == {"a": -1.0, "b": 1.0}
    assert result.weights["a"] == pytest.approx(a / (a + b), **EXACT)


def test_expansion_grows_the_target_toward_its_cap_and_replays_forgotten_domains():
    params = UpdateParams(eta=1.0, target_domain="law", target_max_weight=0.9)
    weights = {"law": 0.5, "code": 0.25, "medicine": 0.25}
    losses = {"law": 2.0, "code": 1.2, "medicine": 1.0}
    previous = {"law": 2.2, "code": 1.0, "medicine": 1.0}
    result = STRATEGIES["expansion"].update(weights, losses, previous, {"law": 1.0}, params)
    # γ_law = (2 − 1)/2 = 0.5 → w_law = 0.5 + (0.9 − 0.5)(1 − e^−0.5)
    target = 0.5 + 0.4 * (1 - math.exp(-0.5))
    # φ_code = 0.2, φ_medicine = 0 → others share 1 − w_law ∝ 0.25·e^0.2 : 0.25·e^0
    code, medicine = 0.25 * math.exp(0.2), 0.25
    assert result.weights["law"] == pytest.approx(target, **EXACT)
    assert result.weights["code"] == pytest.approx((1 - target) * code / (code + medicine), **EXACT)
    assert result.weights["medicine"] == pytest.approx((1 - target) * medicine / (code + medicine), **EXACT)


def test_expansion_stops_when_the_target_has_no_potential_and_clamps_to_the_cap():
    params = UpdateParams(target_domain="law", target_max_weight=0.9)
    stopped = STRATEGIES["expansion"].update(
        {"law": 0.6, "code": 0.4}, {"law": 1.0, "code": 1.0}, None, {"law": 1.5}, params
    )
    assert stopped.weights["law"] == pytest.approx(0.6, **EXACT)
    clamped = STRATEGIES["expansion"].update(
        {"law": 0.95, "code": 0.05}, {"law": 2.0, "code": 1.0}, None, None, params
    )
    assert clamped.weights == {"law": pytest.approx(0.9), "code": pytest.approx(0.1)}


def test_static_strategies_keep_their_weights():
    weights = {"a": 0.7, "b": 0.3}
    for name in ("uniform", "static", "inverse"):
        result = STRATEGIES[name].update(weights, {"a": 5.0, "b": 1.0}, {"a": 1.0, "b": 1.0}, None, UpdateParams())
        assert result.weights == weights
        assert result.forgetting == {"a": pytest.approx(4.0), "b": 0.0}


def test_initial_weights_of_each_strategy():
    p = {"a": 0.7, "b": 0.2, "c": 0.1}
    params = UpdateParams(min_weight=0.15)
    assert initial_weights_for("uniform", p, params) == {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}
    # inverse: 1 − p = 0.3, 0.8, 0.9 → / 2.0
    assert initial_weights_for("inverse", p, params) == pytest.approx({"a": 0.15, "b": 0.4, "c": 0.45})
    assert initial_weights_for("static", p, params) == pytest.approx(p)  # no floor for static strategies
    floored = initial_weights_for("versatune", p, params)
    assert floored["c"] == pytest.approx(0.15) and sum(floored.values()) == pytest.approx(1.0)
    assert inverse_weights({"a": 2.0, "b": 2.0}) == {"a": 0.5, "b": 0.5}


def test_apply_floor_takes_mass_proportionally():
    # c is raised to 0.1; a and b share the remaining 0.9 in their 0.6 : 0.38 ratio.
    result = apply_floor({"a": 0.6, "b": 0.38, "c": 0.02}, 0.1)
    assert result == {
        "a": pytest.approx(0.9 * 0.6 / 0.98, **EXACT),
        "b": pytest.approx(0.9 * 0.38 / 0.98, **EXACT),
        "c": pytest.approx(0.1, **EXACT),
    }
    with pytest.raises(ValueError, match="below 1/3"):
        apply_floor({"a": 0.5, "b": 0.3, "c": 0.2}, 0.4)


def test_limit_change_scales_the_step_to_the_cap():
    result = limit_change({"a": 0.5, "b": 0.5}, {"a": 0.9, "b": 0.1}, 0.1)
    assert result == {"a": pytest.approx(0.6, **EXACT), "b": pytest.approx(0.4, **EXACT)}
    assert limit_change({"a": 0.5, "b": 0.5}, {"a": 0.55, "b": 0.45}, 0.1) == {"a": 0.55, "b": 0.45}


def test_smooth_mixes_in_uniform():
    assert smooth({"a": 1.0, "b": 0.0}, 0.2) == {"a": pytest.approx(0.9), "b": pytest.approx(0.1)}


def test_nan_and_inf_losses_hold_the_previous_weight():
    weights = {"a": 0.5, "b": 0.3, "c": 0.2}
    result = compute_update("versatune", weights, {"a": math.nan, "b": 2.0, "c": math.inf}, None, None, UpdateParams())
    assert result.held == ["a", "c"]
    assert result.weights["a"] == 0.5 and result.weights["c"] == 0.2
    assert result.weights["b"] == pytest.approx(0.3)  # the only free domain keeps the free mass
    assert math.isnan(result.potential["a"])
    both_free = compute_update("versatune", weights, {"a": math.nan, "b": 2.0, "c": 1.0}, None, None, UpdateParams())
    b, c = 0.6 * math.exp(2.0), 0.4 * math.exp(1.0)  # renormalised 0.3 : 0.2 inside the free mass 0.5
    assert both_free.weights["b"] == pytest.approx(0.5 * b / (b + c), **EXACT)
    assert (
        compute_update("versatune", weights, dict.fromkeys(weights, math.nan), None, None, UpdateParams()).weights
        == weights
    )


def test_guards_apply_to_dynamic_strategies_only():
    weights = {"a": 0.98, "b": 0.02}
    params = UpdateParams(min_weight=0.05, max_weight_change=0.01)
    static = compute_update("static", weights, {"a": 1.0, "b": 9.0}, None, None, params)
    assert static.weights == weights
    dynamic = compute_update("versatune", weights, {"a": 1.0, "b": 9.0}, None, None, params)
    assert dynamic.weights["b"] == pytest.approx(0.05)  # floor applied last, after the 0.01 change cap


def test_every_dynamic_update_is_a_distribution_above_the_floor():
    rng = random.Random(0)
    for _ in range(200):
        domains = [f"d{i}" for i in range(rng.randint(2, 6))]
        weights = dict(zip(domains, (rng.random() + 1e-3 for _ in domains)))
        total = sum(weights.values())
        weights = {d: w / total for d, w in weights.items()}
        losses = {d: rng.uniform(0.1, 8.0) for d in domains}
        previous = {d: rng.uniform(0.1, 8.0) for d in domains}
        references = {d: rng.uniform(0.0, 4.0) for d in domains}
        params = UpdateParams(
            eta=rng.uniform(0.1, 5.0),
            forgetting_weight=rng.uniform(0.0, 2.0),
            target_domain=domains[0],
            min_weight=rng.uniform(0.0, 0.9 / len(domains)),
            max_weight_change=rng.choice([None, 0.05, 0.3]),
            smoothing=rng.choice([0.0, 0.1]),
        )
        for name, strategy in STRATEGIES.items():
            if not strategy.dynamic:
                continue
            result = compute_update(name, weights, losses, previous, references, params)
            assert math.fsum(result.weights.values()) == pytest.approx(1.0, abs=1e-9), name
            assert min(result.weights.values()) >= params.min_weight - 1e-12, name


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
