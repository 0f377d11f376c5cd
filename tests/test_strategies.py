"""Every strategy in `STRATEGIES` and every guard of `compute_update`, checked against arithmetic done by hand.

The expected values below are written out from the formulas in docs/method.md (VersaTune, arXiv 2411.11266):

* learnable potential   γ_d = max((ℓ_d − ℓ_ref,d) / ℓ_d, 0)
* forgetting degree     φ_d = max((ℓ_d − ℓ_d^prev) / ℓ_d^prev, 0)
* multiplicative update w_d ← w_d · exp(η · s_d) / Σ_j w_j · exp(η · s_j)

No expected value is produced by calling the function under test.
"""

import math
import random

import pytest

from versatune_hf import VersaTuneConfig
from versatune_hf.mixing import (
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

TOL = dict(rel=1e-9, abs=1e-12)
DYNAMIC = ("versatune", "versatune-official", "expansion", "progress")
STATIC = ("uniform", "static", "inverse")


def close(value):
    """pytest.approx with the tight tolerance used throughout this file."""
    return pytest.approx(value, **TOL)


def normalised(raw):
    """Divide each value by the sum (hand-written helper for the expected values)."""
    total = sum(raw.values())
    return {name: value / total for name, value in raw.items()}


# --------------------------------------------------------------------------------------------------------------------
# The registry itself
# --------------------------------------------------------------------------------------------------------------------


def test_registry_holds_the_documented_strategies_with_the_right_kind():
    """The strategies of the brief and `progress` are registered: DYNAMIC ones dynamic, STATIC ones static."""
    for name in DYNAMIC:
        assert name in STRATEGIES and STRATEGIES[name].dynamic is True
    for name in STATIC:
        assert name in STRATEGIES and STRATEGIES[name].dynamic is False


# --------------------------------------------------------------------------------------------------------------------
# Learnable potential γ
# --------------------------------------------------------------------------------------------------------------------


def test_learnable_potential_by_hand():
    """γ = (ℓ − ℓref)/ℓ for a loss above its reference: (2.5 − 1.0)/2.5 = 0.6 and (4.0 − 3.0)/4.0 = 0.25."""
    potential = learnable_potential({"law": 2.5, "code": 4.0}, {"law": 1.0, "code": 3.0})
    assert potential == {"law": close((2.5 - 1.0) / 2.5), "code": close((4.0 - 3.0) / 4.0)}
    assert potential["law"] == close(0.6)
    assert potential["code"] == close(0.25)


def test_learnable_potential_clips_at_zero():
    """A loss below (or equal to) its reference has no potential: max(negative, 0) = 0, never a negative γ."""
    potential = learnable_potential({"law": 1.0, "code": 2.0, "med": 3.0}, {"law": 1.5, "code": 2.0, "med": 0.0})
    assert potential["law"] == 0.0  # (1.0 − 1.5)/1.0 = −0.5 → 0
    assert potential["code"] == 0.0  # (2.0 − 2.0)/2.0 = 0
    assert potential["med"] == close(1.0)  # (3 − 0)/3 = 1


def test_learnable_potential_without_reference_is_none():
    """No reference losses at all → every γ is None; a reference for only some domains → None for the others."""
    assert learnable_potential({"law": 2.0, "code": 1.0}, None) == {"law": None, "code": None}
    assert learnable_potential({"law": 2.0, "code": 1.0}, {}) == {"law": None, "code": None}
    partial = learnable_potential({"law": 2.0, "code": 1.0}, {"law": 0.5})
    assert partial == {"law": close((2.0 - 0.5) / 2.0), "code": None}


# --------------------------------------------------------------------------------------------------------------------
# Forgetting degree φ
# --------------------------------------------------------------------------------------------------------------------


def test_forgetting_degree_by_hand():
    """φ = (ℓ − ℓprev)/ℓprev for a loss that rose: (1.5 − 1.2)/1.2 = 0.25; a loss that went down gives φ = 0."""
    degree = forgetting_degree({"law": 1.5, "code": 0.7, "med": 2.0}, {"law": 1.2, "code": 1.0, "med": 2.0})
    assert degree["law"] == close((1.5 - 1.2) / 1.2)
    assert degree["law"] == close(0.25)
    assert degree["code"] == 0.0  # (0.7 − 1.0)/1.0 = −0.3 → clipped to 0
    assert degree["med"] == 0.0  # unchanged loss


def test_forgetting_degree_without_previous_losses_is_zero():
    """At the first evaluation there is nothing to forget: φ = 0 everywhere (also for a domain new since then)."""
    assert forgetting_degree({"law": 1.5, "code": 0.7}, None) == {"law": 0.0, "code": 0.0}
    assert forgetting_degree({"law": 1.5, "code": 0.7}, {"law": 1.0}) == {"law": close(0.5), "code": 0.0}


# --------------------------------------------------------------------------------------------------------------------
# Multiplicative update
# --------------------------------------------------------------------------------------------------------------------


def test_multiplicative_update_with_eta_not_one():
    """w·exp(η s)/Σ with η = 0.7 on three domains, written out term by term."""
    eta = 0.7
    weights = {"a": 0.2, "b": 0.3, "c": 0.5}
    scores = {"a": 1.0, "b": -0.5, "c": 0.25}
    ea = 0.2 * math.exp(0.7 * 1.0)
    eb = 0.3 * math.exp(0.7 * -0.5)
    ec = 0.5 * math.exp(0.7 * 0.25)
    total = ea + eb + ec
    result = multiplicative_update(weights, scores, eta)
    assert result == {"a": close(ea / total), "b": close(eb / total), "c": close(ec / total)}
    assert sum(result.values()) == close(1.0)


def test_multiplicative_update_equal_scores_keep_weights():
    """Equal scores multiply every weight by the same factor, so the normalised weights do not change."""
    result = multiplicative_update({"a": 0.25, "b": 0.75}, {"a": 3.0, "b": 3.0}, 2.0)
    assert result == {"a": close(0.25), "b": close(0.75)}


# --------------------------------------------------------------------------------------------------------------------
# versatune
# --------------------------------------------------------------------------------------------------------------------


def test_versatune_scores_learnable_potential():
    """λ = 0: s = γ; with η = 2, w ∝ w·exp(2γ)."""
    weights = {"law": 0.4, "code": 0.6}
    losses = {"law": 2.0, "code": 1.0}
    refs = {"law": 0.5, "code": 0.8}
    params = UpdateParams(eta=2.0)
    g_law = (2.0 - 0.5) / 2.0  # 0.75
    g_code = (1.0 - 0.8) / 1.0  # 0.2
    e_law = 0.4 * math.exp(2.0 * g_law)
    e_code = 0.6 * math.exp(2.0 * g_code)
    result = STRATEGIES["versatune"].update(weights, losses, None, refs, params)
    assert result.potential == {"law": close(0.75), "code": close(0.2)}
    assert result.score == {"law": close(g_law), "code": close(g_code)}
    assert result.weights == {"law": close(e_law / (e_law + e_code)), "code": close(e_code / (e_law + e_code))}


def test_versatune_adds_lambda_times_forgetting():
    """λ > 0: s = γ + λφ; the loss of `med` rose, so φ_med > 0 adds to its score."""
    weights = {"law": 0.5, "code": 0.3, "med": 0.2}
    losses = {"law": 2.0, "code": 1.0, "med": 1.5}
    previous = {"law": 2.5, "code": 1.0, "med": 1.2}
    refs = {"law": 1.0, "code": 0.5, "med": 1.0}
    lam, eta = 3.0, 0.5
    g = {"law": (2.0 - 1.0) / 2.0, "code": (1.0 - 0.5) / 1.0, "med": (1.5 - 1.0) / 1.5}
    phi = {"law": 0.0, "code": 0.0, "med": (1.5 - 1.2) / 1.2}  # law went down, code unchanged
    s = {name: g[name] + lam * phi[name] for name in weights}
    raw = {name: weights[name] * math.exp(eta * s[name]) for name in weights}
    expected = normalised(raw)
    result = STRATEGIES["versatune"].update(
        weights, losses, previous, refs, UpdateParams(eta=eta, forgetting_weight=lam)
    )
    assert result.forgetting == {"law": 0.0, "code": 0.0, "med": close(0.25)}
    assert result.score == {name: close(value) for name, value in s.items()}
    assert result.weights == {name: close(value) for name, value in expected.items()}


def test_versatune_without_reference_losses_uses_raw_loss():
    """No reference losses: γ is None and the score falls back to the raw eval loss ℓ."""
    weights = {"law": 0.5, "code": 0.5}
    losses = {"law": 1.3, "code": 0.4}
    eta = 1.5
    e_law = 0.5 * math.exp(1.5 * 1.3)
    e_code = 0.5 * math.exp(1.5 * 0.4)
    result = STRATEGIES["versatune"].update(weights, losses, None, None, UpdateParams(eta=eta))
    assert result.potential == {"law": None, "code": None}
    assert result.score == {"law": close(1.3), "code": close(0.4)}
    assert result.weights == {"law": close(e_law / (e_law + e_code)), "code": close(e_code / (e_law + e_code))}


def test_versatune_without_reference_still_adds_forgetting():
    """Raw-loss fallback with λ > 0: s = ℓ + λφ."""
    weights = {"law": 0.5, "code": 0.5}
    losses = {"law": 1.0, "code": 2.0}
    previous = {"law": 0.8, "code": 2.5}
    s_law = 1.0 + 2.0 * ((1.0 - 0.8) / 0.8)  # 1.5
    s_code = 2.0 + 2.0 * 0.0  # loss went down
    e_law, e_code = 0.5 * math.exp(s_law), 0.5 * math.exp(s_code)
    result = STRATEGIES["versatune"].update(weights, losses, previous, None, UpdateParams(forgetting_weight=2.0))
    assert result.score == {"law": close(1.5), "code": close(2.0)}
    assert result.weights["law"] == close(e_law / (e_law + e_code))


# --------------------------------------------------------------------------------------------------------------------
# versatune-official
# --------------------------------------------------------------------------------------------------------------------


def test_official_uses_loss_minus_reference_with_eta_forced_to_one():
    """s = ℓ − ℓref (not clipped, not divided by ℓ), and params.eta = 5 is ignored (η = 1)."""
    weights = {"a": 0.25, "b": 0.75}
    losses = {"a": 3.0, "b": 1.0}
    refs = {"a": 1.0, "b": 1.5}
    s_a, s_b = 3.0 - 1.0, 1.0 - 1.5  # 2.0, −0.5 (no max)
    e_a, e_b = 0.25 * math.exp(s_a), 0.75 * math.exp(s_b)
    result = STRATEGIES["versatune-official"].update(weights, losses, None, refs, UpdateParams(eta=5.0))
    assert result.score == {"a": close(2.0), "b": close(-0.5)}
    assert result.weights == {"a": close(e_a / (e_a + e_b)), "b": close(e_b / (e_a + e_b))}
    # γ is still reported (for the log) even though it is not used.
    assert result.potential == {"a": close((3.0 - 1.0) / 3.0), "b": 0.0}


def test_official_without_reference_scores_the_raw_loss_and_ignores_forgetting():
    """No ℓref → s = ℓ; a rising loss (φ > 0) and a large λ do not change the official update."""
    weights = {"a": 0.6, "b": 0.4}
    losses = {"a": 0.5, "b": 2.0}
    previous = {"a": 0.25, "b": 2.0}  # φ_a = 1.0
    e_a, e_b = 0.6 * math.exp(0.5), 0.4 * math.exp(2.0)
    params = UpdateParams(eta=0.01, forgetting_weight=10.0)
    result = STRATEGIES["versatune-official"].update(weights, losses, previous, None, params)
    assert result.score == {"a": close(0.5), "b": close(2.0)}
    assert result.weights == {"a": close(e_a / (e_a + e_b)), "b": close(e_b / (e_a + e_b))}
    assert result.forgetting == {"a": close(1.0), "b": 0.0}


# --------------------------------------------------------------------------------------------------------------------
# expansion
# --------------------------------------------------------------------------------------------------------------------


def test_expansion_target_moves_toward_cap_and_others_share_by_forgetting():
    """Target share: w_T + (c − w_T)(1 − exp(−η γ_T)); others: (1 − w_T') ∝ w·exp(η φ)."""
    eta, cap = 2.0, 0.9
    weights = {"law": 0.5, "code": 0.3, "med": 0.2}
    losses = {"law": 2.0, "code": 1.2, "med": 0.9}
    previous = {"law": 2.2, "code": 1.0, "med": 1.0}
    refs = {"law": 1.0}
    gamma_t = (2.0 - 1.0) / 2.0  # 0.5
    new_t = 0.5 + (0.9 - 0.5) * (1.0 - math.exp(-2.0 * gamma_t))
    phi_code = (1.2 - 1.0) / 1.0  # 0.2 (code's loss rose)
    phi_med = 0.0  # med's loss fell
    e_code = 0.3 * math.exp(2.0 * phi_code)
    e_med = 0.2 * math.exp(2.0 * phi_med)
    params = UpdateParams(eta=eta, target_domain="law", target_max_weight=cap)
    result = STRATEGIES["expansion"].update(weights, losses, previous, refs, params)
    assert result.weights["law"] == close(new_t)
    assert result.weights["code"] == close((1.0 - new_t) * e_code / (e_code + e_med))
    assert result.weights["med"] == close((1.0 - new_t) * e_med / (e_code + e_med))
    assert sum(result.weights.values()) == close(1.0)
    assert result.score == {"law": close(0.5), "code": close(0.2), "med": 0.0}
    # The forgotten domain gains share among the non-target domains (was 0.3/0.5 = 0.6).
    code_share = result.weights["code"] / (result.weights["code"] + result.weights["med"])
    assert code_share > 0.6


def test_expansion_stops_growing_when_target_has_no_potential():
    """γ_T = 0 (loss at or below its reference) → 1 − exp(0) = 0, the target keeps its share exactly."""
    weights = {"law": 0.6, "code": 0.25, "med": 0.15}
    losses = {"law": 1.0, "code": 1.5, "med": 1.0}
    previous = {"law": 1.0, "code": 1.0, "med": 1.0}
    refs = {"law": 1.2}
    params = UpdateParams(eta=1.0, target_domain="law", target_max_weight=0.9)
    result = STRATEGIES["expansion"].update(weights, losses, previous, refs, params)
    e_code = 0.25 * math.exp(1.0 * 0.5)  # φ_code = (1.5 − 1)/1
    e_med = 0.15 * math.exp(0.0)
    assert result.weights["law"] == close(0.6)
    assert result.weights["code"] == close(0.4 * e_code / (e_code + e_med))
    assert result.weights["med"] == close(0.4 * e_med / (e_code + e_med))


def test_expansion_clamps_a_target_above_the_cap():
    """A target already above target_max_weight is set to the cap; the freed mass goes to the others."""
    weights = {"law": 0.95, "code": 0.03, "med": 0.02}
    losses = {"law": 2.0, "code": 1.0, "med": 1.0}
    params = UpdateParams(eta=1.0, target_domain="law", target_max_weight=0.8)
    result = STRATEGIES["expansion"].update(weights, losses, None, {"law": 0.5}, params)
    assert result.weights["law"] == close(0.8)
    # No previous losses → φ = 0 → others keep their 0.03 : 0.02 ratio within 1 − 0.8.
    assert result.weights["code"] == close(0.2 * 0.03 / 0.05)
    assert result.weights["med"] == close(0.2 * 0.02 / 0.05)


def test_expansion_without_reference_uses_raw_loss_for_the_target():
    """No ℓref for the target: s_T = ℓ_T (the documented raw-loss fallback)."""
    weights = {"law": 0.5, "code": 0.5}
    params = UpdateParams(eta=0.5, target_domain="law", target_max_weight=0.9)
    result = STRATEGIES["expansion"].update(weights, {"law": 0.8, "code": 1.0}, None, None, params)
    new_t = 0.5 + 0.4 * (1.0 - math.exp(-0.5 * 0.8))
    assert result.weights == {"law": close(new_t), "code": close(1.0 - new_t)}


# --------------------------------------------------------------------------------------------------------------------
# progress: learning progress per unit of share, the worst domain protected
# --------------------------------------------------------------------------------------------------------------------

PROGRESS_WEIGHTS = {"law": 0.2, "code": 0.5, "med": 0.3}
PROGRESS_PREVIOUS = {"law": 5.0, "code": 4.0, "med": 4.0}
PROGRESS_LOSSES = {"law": 4.95, "code": 3.96, "med": 3.6}  # π: law 0.01, code 0.01, med 0.1; law is the worst


def _progress_by_hand(eta):
    """s_d = π_d / (w_d · Σπ) with Σπ = 0.12, then w·exp(η·s) renormalised (no protection)."""
    score = {"law": 0.01 / (0.2 * 0.12), "code": 0.01 / (0.5 * 0.12), "med": 0.1 / (0.3 * 0.12)}
    raw = {name: PROGRESS_WEIGHTS[name] * math.exp(eta * score[name]) for name in score}
    return score, normalised(raw)


def test_progress_scores_learning_progress_per_unit_of_share():
    """Without protection (`progress_worst_lift=None`): the formula, and Σ w·s = 1."""
    score, expected = _progress_by_hand(0.5)
    params = UpdateParams(eta=0.5, progress_worst_lift=None)
    result = STRATEGIES["progress"].update(PROGRESS_WEIGHTS, PROGRESS_LOSSES, PROGRESS_PREVIOUS, None, params)
    assert result.score == {name: close(value) for name, value in score.items()}
    assert sum(PROGRESS_WEIGHTS[name] * score[name] for name in score) == close(1.0)
    assert result.weights == {name: close(value) for name, value in expected.items()}
    assert result.weights["law"] < PROGRESS_WEIGHTS["law"]  # the plain rule takes share from the worst domain


@pytest.mark.parametrize("lift", [0.0, 0.05])
def test_progress_keeps_the_worst_domain_at_a_lifted_share(lift):
    """The highest-loss domain (law) gets (1 + lift) · 0.2; code and med share the rest in the update's ratio."""
    _, plain = _progress_by_hand(0.5)
    params = UpdateParams(eta=0.5, progress_worst_lift=lift)
    result = STRATEGIES["progress"].update(PROGRESS_WEIGHTS, PROGRESS_LOSSES, PROGRESS_PREVIOUS, None, params)
    law = (1 + lift) * 0.2
    rest = plain["code"] + plain["med"]
    assert result.weights == {
        "law": close(law),
        "code": close((1 - law) * plain["code"] / rest),
        "med": close((1 - law) * plain["med"] / rest),
    }


def test_progress_leaves_a_worst_domain_that_gains_more_than_the_lift():
    """If the update itself raises the worst domain above (1 + lift) times its share, nothing is changed."""
    losses = {"law": 4.0, "code": 3.96, "med": 3.96}  # law (worst, π 0.2) gains most
    previous = {"law": 5.0, "code": 4.0, "med": 4.0}
    lifted = STRATEGIES["progress"].update(PROGRESS_WEIGHTS, losses, previous, None, UpdateParams(eta=0.5))
    plain = STRATEGIES["progress"].update(
        PROGRESS_WEIGHTS, losses, previous, None, UpdateParams(eta=0.5, progress_worst_lift=None)
    )
    assert lifted.weights == plain.weights and lifted.weights["law"] > 1.05 * 0.2


def test_progress_lift_stops_at_twice_the_uniform_share_and_never_lowers_the_worst_domain():
    """The lift compounds over evaluations; it ends at 2/N = 2/3 here. A worst domain already above 2/N keeps its
    share (protected, not lifted)."""
    weights = {"law": 0.65, "code": 0.25, "med": 0.10}
    lifted = STRATEGIES["progress"].update(weights, PROGRESS_LOSSES, PROGRESS_PREVIOUS, None, UpdateParams(eta=0.5))
    assert lifted.weights["law"] == close(2 / 3)
    weights = {"law": 0.7, "code": 0.2, "med": 0.1}
    kept = STRATEGIES["progress"].update(weights, PROGRESS_LOSSES, PROGRESS_PREVIOUS, None, UpdateParams(eta=0.5))
    plain = (
        STRATEGIES["progress"]
        .update(weights, PROGRESS_LOSSES, PROGRESS_PREVIOUS, None, UpdateParams(eta=0.5, progress_worst_lift=None))
        .weights
    )
    rest = plain["code"] + plain["med"]
    assert plain["law"] < 0.7  # the plain update would lower it
    expected = {"law": 0.7, "code": 0.3 * plain["code"] / rest, "med": 0.3 * plain["med"] / rest}
    assert kept.weights == {name: close(value) for name, value in expected.items()}


def test_progress_first_evaluation_keeps_weights_and_later_ones_lift_even_without_progress():
    """No previous losses: nothing to measure, weights kept. No domain improved: scores 0, only the lift acts."""
    first = STRATEGIES["progress"].update(PROGRESS_WEIGHTS, PROGRESS_LOSSES, None, None, UpdateParams(eta=0.5))
    assert first.weights == close(PROGRESS_WEIGHTS) and first.score == {"law": 0.0, "code": 0.0, "med": 0.0}
    worse = {name: loss * 1.01 for name, loss in PROGRESS_PREVIOUS.items()}
    result = STRATEGIES["progress"].update(PROGRESS_WEIGHTS, worse, PROGRESS_PREVIOUS, None, UpdateParams(eta=0.5))
    assert result.score == {"law": 0.0, "code": 0.0, "med": 0.0}
    assert result.weights == {"law": close(0.21), "code": close(0.79 * 0.5 / 0.8), "med": close(0.79 * 0.3 / 0.8)}


def test_progress_default_step_is_its_benchmarked_one():
    """`eta` unset means 0.5 for progress (its benchmark's value) and 1.0 for the others."""
    assert VersaTuneConfig(strategy="progress").eta == 0.5
    assert VersaTuneConfig(strategy="versatune").eta == 1.0
    assert VersaTuneConfig(strategy="progress", eta=2.0).eta == 2.0
    with pytest.raises(ValueError, match="progress_worst_lift must be >= 0"):
        VersaTuneConfig(strategy="progress", progress_worst_lift=-0.1)


# --------------------------------------------------------------------------------------------------------------------
# Static strategies and initial weights
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STATIC)
def test_static_strategies_keep_weights(name):
    """uniform/static/inverse never move the weights, whatever the losses; γ and φ are still reported."""
    weights = {"a": 0.125, "b": 0.375, "c": 0.5}
    losses = {"a": 4.0, "b": 1.0, "c": 0.5}
    previous = {"a": 2.0, "b": 1.0, "c": 1.0}
    refs = {"a": 1.0, "b": 2.0, "c": 0.25}
    result = STRATEGIES[name].update(weights, losses, previous, refs, UpdateParams(eta=3.0, forgetting_weight=1.0))
    assert result.weights == weights
    assert result.forgetting == {"a": close(1.0), "b": 0.0, "c": 0.0}
    assert result.potential == {"a": close(0.75), "b": 0.0, "c": close(0.5)}


def test_inverse_initializer_is_normalised_one_minus_p():
    """inverse: 1 − p, renormalised. p = (0.2, 0.3, 0.5) → (0.8, 0.7, 0.5)/2.0."""
    result = inverse_weights({"a": 0.2, "b": 0.3, "c": 0.5})
    assert result == {"a": close(0.8 / 2.0), "b": close(0.7 / 2.0), "c": close(0.5 / 2.0)}
    assert STRATEGIES["inverse"].initialize({"a": 0.2, "b": 0.3, "c": 0.5}) == result
    # Unnormalised input is normalised first: (1, 3) → p = (0.25, 0.75) → (0.75, 0.25).
    assert inverse_weights({"a": 1.0, "b": 3.0}) == {"a": close(0.75), "b": close(0.25)}


def test_initial_weights_for_applies_floor_only_to_dynamic_strategies():
    """The floor is applied to dynamic strategies' starting weights, never to static ones."""
    p = {"a": 0.02, "b": 0.18, "c": 0.8}
    params = UpdateParams(min_weight=0.1)
    # Floor: a → 0.1; b and c share 0.9 in ratio 0.18 : 0.8 (b = 0.9·0.18/0.98 ≈ 0.165 stays above 0.1).
    floored = {"a": 0.1, "b": 0.9 * 0.18 / 0.98, "c": 0.9 * 0.8 / 0.98}
    for name in DYNAMIC:
        assert initial_weights_for(name, p, params) == {k: close(v) for k, v in floored.items()}
    assert initial_weights_for("static", p, params) == {k: close(v) for k, v in p.items()}
    assert initial_weights_for("uniform", p, params) == {"a": close(1 / 3), "b": close(1 / 3), "c": close(1 / 3)}
    # inverse: (0.98, 0.82, 0.2)/2 → c = 0.1, exactly at the floor anyway; a 4-domain case goes below it.
    assert initial_weights_for("inverse", p, params) == {"a": close(0.49), "b": close(0.41), "c": close(0.1)}
    q = {"a": 0.05, "b": 0.05, "c": 0.05, "d": 0.85}
    inv = initial_weights_for("inverse", q, UpdateParams(min_weight=0.1))
    assert inv["d"] == close(0.15 / 3.0)  # 0.05 < floor 0.1, not raised for a static strategy


# --------------------------------------------------------------------------------------------------------------------
# Guards: apply_floor, limit_change, smooth
# --------------------------------------------------------------------------------------------------------------------


def test_apply_floor_raises_small_weights_and_keeps_sum_one():
    """One weight below the floor is pinned there; the others share 1 − floor in proportion to their weight."""
    result = apply_floor({"a": 0.01, "b": 0.29, "c": 0.7}, 0.05)
    assert result == {"a": close(0.05), "b": close(0.95 * 0.29 / 0.99), "c": close(0.95 * 0.7 / 0.99)}
    assert sum(result.values()) == close(1.0)


def test_apply_floor_needs_a_second_round():
    """Pinning one domain can push a second below the floor: (0, 0.06, 0.94) at 0.1 → (0.1, 0.1, 0.8)."""
    result = apply_floor({"a": 0.0, "b": 0.06, "c": 0.94}, 0.1)
    # Round 1: a pinned, b = 0.9·0.06 = 0.054 < 0.1 → round 2: b pinned, c = 1 − 0.2 = 0.8.
    assert result == {"a": close(0.1), "b": close(0.1), "c": close(0.8)}


def test_apply_floor_zero_floor_only_normalises():
    """floor = 0 leaves the (normalised) weights as they are."""
    assert apply_floor({"a": 1.0, "b": 3.0}, 0.0) == {"a": close(0.25), "b": close(0.75)}


def test_apply_floor_too_large_raises():
    """floor · N > 1 cannot be satisfied: ValueError naming min_weight; floor · N = 1 gives the uniform mixture."""
    with pytest.raises(ValueError, match="min_weight"):
        apply_floor({"a": 0.2, "b": 0.3, "c": 0.5}, 0.34)
    assert apply_floor({"a": 0.1, "b": 0.9}, 0.5) == {"a": close(0.5), "b": close(0.5)}


def test_limit_change_caps_largest_change_exactly():
    """The move is scaled by max_change/largest: prev (0.2, 0.3, 0.5) → proposed (0.6, 0.3, 0.1), cap 0.1 → ¼ step."""
    previous = {"a": 0.2, "b": 0.3, "c": 0.5}
    proposed = {"a": 0.6, "b": 0.3, "c": 0.1}
    result = limit_change(previous, proposed, 0.1)
    assert result == {"a": close(0.3), "b": close(0.3), "c": close(0.4)}
    assert max(abs(result[k] - previous[k]) for k in previous) == close(0.1)
    assert sum(result.values()) == close(1.0)


def test_limit_change_leaves_small_moves_and_none_alone():
    """A move within the cap, or no cap, returns the proposal unchanged."""
    previous = {"a": 0.5, "b": 0.5}
    proposed = {"a": 0.55, "b": 0.45}
    assert limit_change(previous, proposed, 0.1) == proposed
    assert limit_change(previous, {"a": 1.0, "b": 0.0}, None) == {"a": 1.0, "b": 0.0}


def test_smooth_mixes_uniform():
    """(1 − c)·w + c/N with c = 0.3, N = 3."""
    result = smooth({"a": 0.1, "b": 0.2, "c": 0.7}, 0.3)
    assert result == {
        "a": close(0.7 * 0.1 + 0.1),
        "b": close(0.7 * 0.2 + 0.1),
        "c": close(0.7 * 0.7 + 0.1),
    }
    assert smooth({"a": 0.1, "b": 0.9}, 0.0) == {"a": 0.1, "b": 0.9}


# --------------------------------------------------------------------------------------------------------------------
# compute_update: guards in context
# --------------------------------------------------------------------------------------------------------------------


def test_compute_update_without_guards_equals_the_formula():
    """No floor/cap/smoothing: compute_update gives exactly w·exp(η γ)/Σ."""
    weights = {"a": 0.3, "b": 0.7}
    losses = {"a": 2.0, "b": 1.0}
    refs = {"a": 1.0, "b": 0.9}
    e_a = 0.3 * math.exp(1.5 * 0.5)
    e_b = 0.7 * math.exp(1.5 * 0.1)
    result = compute_update("versatune", weights, losses, None, refs, UpdateParams(eta=1.5, min_weight=0.0))
    assert result.weights == {"a": close(e_a / (e_a + e_b)), "b": close(e_b / (e_a + e_b))}
    assert result.held == []


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, None])
def test_compute_update_holds_a_domain_with_nonfinite_loss(bad):
    """A NaN/inf (or missing) loss keeps that domain's weight; the others share the remaining 0.8 by the formula."""
    weights = {"a": 0.2, "b": 0.3, "c": 0.5}
    losses = {"a": bad, "b": 1.0, "c": 2.0}
    params = UpdateParams(eta=1.0, min_weight=0.0)
    # No reference losses → s = ℓ. Among b and c: 0.3·e^1 : 0.5·e^2, scaled to the free mass 1 − 0.2 = 0.8.
    e_b, e_c = 0.3 * math.exp(1.0), 0.5 * math.exp(2.0)
    result = compute_update("versatune", weights, losses, None, None, params)
    assert result.held == ["a"]
    assert result.weights == {
        "a": close(0.2),
        "b": close(0.8 * e_b / (e_b + e_c)),
        "c": close(0.8 * e_c / (e_b + e_c)),
    }
    assert sum(result.weights.values()) == close(1.0)
    assert math.isnan(result.score["a"]) and math.isnan(result.forgetting["a"])


def test_compute_update_all_nan_returns_previous_weights():
    """With no finite loss at all there is nothing to learn from: the previous weights come back, all held."""
    weights = {"a": 0.2, "b": 0.3, "c": 0.5}
    losses = {"a": math.nan, "b": math.inf, "c": math.nan}
    for name in DYNAMIC + STATIC:
        params = UpdateParams(min_weight=0.05, smoothing=0.5, target_domain="a")
        result = compute_update(name, weights, losses, None, None, params)
        assert result.weights == weights
        assert sorted(result.held) == ["a", "b", "c"]


def test_compute_update_expansion_with_held_target():
    """Expansion whose target has a NaN loss: target held; others ∝ w·exp(η φ) in the remaining mass."""
    weights = {"law": 0.5, "code": 0.3, "med": 0.2}
    losses = {"law": math.nan, "code": 1.5, "med": 1.0}
    previous = {"law": 1.0, "code": 1.0, "med": 1.0}
    params = UpdateParams(eta=1.0, target_domain="law", min_weight=0.0)
    e_code, e_med = 0.3 * math.exp(0.5), 0.2 * math.exp(0.0)
    result = compute_update("expansion", weights, losses, previous, None, params)
    assert result.held == ["law"]
    assert result.weights == {
        "law": close(0.5),
        "code": close(0.5 * e_code / (e_code + e_med)),
        "med": close(0.5 * e_med / (e_code + e_med)),
    }


def test_compute_update_floor_applies_after_update():
    """A domain the update would starve is raised to min_weight; the others share the rest in proportion."""
    weights = {"a": 0.5, "b": 0.5}
    losses = {"a": 10.0, "b": 1.0}  # raw-loss score; b shrinks to 0.5e^1/(0.5e^10 + 0.5e^1) ≈ 1.2e-4
    e_a, e_b = 0.5 * math.exp(10.0), 0.5 * math.exp(1.0)
    assert e_b / (e_a + e_b) < 0.05
    result = compute_update("versatune", weights, losses, None, None, UpdateParams(min_weight=0.05))
    assert result.weights == {"a": close(0.95), "b": close(0.05)}


def test_compute_update_limits_change_exactly():
    """max_weight_change = 0.05: the largest |Δw| after the update is exactly 0.05, direction of the formula kept."""
    weights = {"a": 0.2, "b": 0.3, "c": 0.5}
    losses = {"a": 3.0, "b": 1.0, "c": 0.5}
    raw = {"a": 0.2 * math.exp(3.0), "b": 0.3 * math.exp(1.0), "c": 0.5 * math.exp(0.5)}
    free = normalised(raw)
    largest = max(abs(free[k] - weights[k]) for k in weights)
    assert largest > 0.05
    expected = {k: weights[k] + (0.05 / largest) * (free[k] - weights[k]) for k in weights}
    params = UpdateParams(min_weight=0.0, max_weight_change=0.05)
    result = compute_update("versatune", weights, losses, None, None, params)
    assert result.weights == {k: close(v) for k, v in expected.items()}
    assert max(abs(result.weights[k] - weights[k]) for k in weights) == close(0.05)
    assert sum(result.weights.values()) == close(1.0)


def test_compute_update_smoothing_mixes_uniform():
    """smoothing = 0.2: (1 − 0.2)·(formula) + 0.2/2."""
    weights = {"a": 0.5, "b": 0.5}
    losses = {"a": 2.0, "b": 1.0}
    e_a, e_b = 0.5 * math.exp(2.0), 0.5 * math.exp(1.0)
    params = UpdateParams(min_weight=0.0, smoothing=0.2)
    result = compute_update("versatune", weights, losses, None, None, params)
    assert result.weights == {
        "a": close(0.8 * e_a / (e_a + e_b) + 0.1),
        "b": close(0.8 * e_b / (e_a + e_b) + 0.1),
    }


def test_compute_update_official_ignores_params_eta():
    """versatune-official through compute_update: η = 1 whatever params.eta says."""
    weights = {"a": 0.5, "b": 0.5}
    losses = {"a": 1.0, "b": 0.25}
    e_a, e_b = 0.5 * math.exp(1.0), 0.5 * math.exp(0.25)
    for eta in (0.1, 1.0, 9.0):
        result = compute_update("versatune-official", weights, losses, None, None, UpdateParams(eta=eta, min_weight=0))
        assert result.weights == {"a": close(e_a / (e_a + e_b)), "b": close(e_b / (e_a + e_b))}


@pytest.mark.parametrize(
    "guard",
    [dict(smoothing=0.5), dict(min_weight=0.2), dict(max_weight_change=0.05), dict(min_weight=0.2, smoothing=0.3)],
)
def test_guards_leave_held_weights_exactly_where_they_were(guard):
    """A held domain (NaN loss) keeps its weight exactly, also when smoothing, the floor or the change cap act; the
    guards work on the other domains inside the 0.9 they share, the floor and the cap still as absolute weights."""
    weights = {"a": 0.1, "b": 0.45, "c": 0.45}
    losses = {"a": math.nan, "b": 1.0, "c": 9.0}  # raw-loss score: c takes almost all of b's share
    params = UpdateParams(eta=1.0, **{"min_weight": 0.0, **guard})
    result = compute_update("versatune", weights, losses, None, None, params)
    assert result.held == ["a"]
    assert result.weights["a"] == 0.1
    assert sum(result.weights.values()) == close(1.0)
    assert min(result.weights["b"], result.weights["c"]) >= params.min_weight - 1e-12
    if params.max_weight_change is not None:
        assert abs(result.weights["b"] - 0.45) == close(0.05)
    if params.smoothing and not params.min_weight:
        # Smoothing toward uniform over b and c: (1 − s)·share + s/2 of the 0.9 they share.
        e_b, e_c = 0.45 * math.exp(1.0), 0.45 * math.exp(9.0)
        share_b = (1 - params.smoothing) * e_b / (e_b + e_c) + params.smoothing / 2
        assert result.weights["b"] == close(0.9 * share_b)


def test_reference_losses_for_only_some_domains_are_refused_where_gamma_is_compared():
    """γ of one domain and a raw loss of another are not on one scale: versatune, DoReMi and DBL refuse the mix;
    expansion (only the target's γ is used) and the official variant (the released code's formula) accept it."""
    weights, losses, refs = {"a": 0.5, "b": 0.5}, {"a": 2.0, "b": 3.0}, {"a": 1.0}
    for name in ("versatune", "doremi", "dbl"):
        with pytest.raises(ValueError, match=r"cover domains \['a'\] but not \['b'\].*every train domain, or none"):
            compute_update(name, weights, losses, None, refs, UpdateParams())
    for name in ("expansion", "versatune-official"):
        compute_update(name, weights, losses, None, refs, UpdateParams(target_domain="a"))


def test_strategies_that_ignore_initial_weights_name_their_start():
    assert STRATEGIES["uniform"].fixed_start == "uniform"
    assert STRATEGIES["odm"].fixed_start == "uniform"
    assert STRATEGIES["proportional"].fixed_start == "proportional"
    assert all(STRATEGIES[name].fixed_start is None for name in ("versatune", "static", "inverse", "expansion"))


@pytest.mark.parametrize("name", STATIC)
def test_guards_do_not_touch_static_strategies(name):
    """uniform/static/inverse keep exact weights through compute_update even with a floor, a cap and smoothing."""
    weights = {"a": 0.015625, "b": 0.234375, "c": 0.75}  # binary fractions summing to exactly 1
    losses = {"a": 5.0, "b": 1.0, "c": 0.1}
    params = UpdateParams(min_weight=0.1, max_weight_change=0.01, smoothing=0.5)
    result = compute_update(name, weights, losses, {"a": 1.0, "b": 1.0, "c": 1.0}, None, params)
    assert result.weights == weights


@pytest.mark.parametrize("name", STATIC)
def test_static_strategy_with_nan_loss_still_keeps_weights(name):
    """A held domain in a static strategy: all weights stay as they were."""
    weights = {"a": 0.25, "b": 0.25, "c": 0.5}
    result = compute_update(name, weights, {"a": math.nan, "b": 1.0, "c": 2.0}, None, None, UpdateParams())
    assert result.held == ["a"]
    assert result.weights == {k: close(v) for k, v in weights.items()}


# --------------------------------------------------------------------------------------------------------------------
# Property test
# --------------------------------------------------------------------------------------------------------------------


def _random_case(rng):
    n = rng.randint(2, 6)
    domains = [f"d{i}" for i in range(n)]
    min_weight = rng.choice([0.0, 0.0, rng.uniform(0.0, 0.99 / n)])
    raw = [rng.random() ** 3 for _ in domains]  # skewed, sometimes tiny
    total = sum(raw) or 1.0
    free = 1.0 - n * min_weight
    weights = {d: min_weight + free * r / total for d, r in zip(domains, raw)}

    def loss():
        roll = rng.random()
        if roll < 0.08:
            return math.nan
        if roll < 0.12:
            return math.inf
        return rng.uniform(0.01, 8.0)

    losses = {d: loss() for d in domains}
    previous = None if rng.random() < 0.3 else {d: rng.uniform(0.01, 8.0) for d in domains}
    refs_roll = rng.random()
    if refs_roll < 0.3:
        refs = None
    elif refs_roll < 0.5:
        refs = {d: rng.uniform(0.0, 8.0) for d in domains if rng.random() < 0.5}
    else:
        refs = {d: rng.uniform(0.0, 8.0) for d in domains}
    params = UpdateParams(
        eta=rng.uniform(0.05, 10.0),
        forgetting_weight=rng.choice([0.0, rng.uniform(0.0, 5.0)]),
        target_domain=rng.choice(domains),
        target_max_weight=rng.uniform(0.05, 1.0),
        min_weight=min_weight,
        max_weight_change=rng.choice([None, rng.uniform(0.001, 1.0)]),
        smoothing=rng.choice([0.0, rng.uniform(0.0, 0.9)]),
    )
    return weights, losses, previous, refs, params


def test_property_dynamic_updates_sum_to_one_and_respect_floor():
    """200 seeded random cases: every dynamic strategy's output sums to 1 (1e-9) and respects min_weight (1e-12)."""
    rng = random.Random(20241118)
    dynamic = [name for name, strategy in STRATEGIES.items() if strategy.dynamic]
    assert set(DYNAMIC) <= set(dynamic)
    for case in range(200):
        weights, losses, previous, refs, params = _random_case(rng)
        for name in dynamic:
            if refs and STRATEGIES[name].compares_potentials and set(refs) != set(weights):
                with pytest.raises(ValueError, match="reference_losses cover"):
                    compute_update(name, weights, losses, previous, refs, params)
                continue
            result = compute_update(name, weights, losses, previous, refs, params)
            assert set(result.weights) == set(weights), (case, name)
            assert abs(sum(result.weights.values()) - 1.0) <= 1e-9, (case, name, result.weights)
            assert all(w >= params.min_weight - 1e-12 for w in result.weights.values()), (case, name, result.weights)
            assert all(math.isfinite(w) for w in result.weights.values()), (case, name, result.weights)
