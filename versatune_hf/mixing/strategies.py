"""Domain-weight strategies: pure functions of weights and per-domain eval losses.

Nothing here imports torch or transformers, so every formula can be unit tested on its own. Notation follows the
VersaTune paper (arXiv 2411.11266):

* learnable potential  γ_d = max((ℓ_d − ℓ_ref,d) / ℓ_d, 0)
* forgetting degree    φ_d = max((ℓ_d − ℓ_d^prev) / ℓ_d^prev, 0)
* multiplicative update w_d ← w_d · exp(η · s_d) / Σ_j w_j · exp(η · s_j)
* learning progress    π_d = max((ℓ_d^prev − ℓ_d) / ℓ_d^prev, 0)   (the `"progress"` strategy, not in the paper)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from .guards import apply_floor, apply_guards, divergent_domains, smooth
from .weights import Losses, Weights, multiplicative_update, normalize, uniform_weights


@dataclass(frozen=True)
class UpdateParams:
    """The strategy-relevant subset of `VersaTuneConfig`, so that strategies need no config object."""

    eta: float = 1.0
    forgetting_weight: float = 0.0
    target_domain: str | None = None
    target_max_weight: float = 0.9
    min_weight: float = 0.0
    max_weight_change: float | None = None
    smoothing: float = 0.0
    divergence_factor: float | None = None
    progress_worst_lift: float | None = 0.05


@dataclass
class WeightUpdate:
    """Result of one update: the new weights and the quantities that produced them.

    `potential` is `None` for every domain when no reference losses are known; `held` lists domains whose weight was
    kept because their loss was NaN or infinite or, listed again in `diverged`, jumped by more than
    `divergence_factor`.
    """

    weights: Weights
    score: dict[str, float]
    potential: dict[str, float | None]
    forgetting: dict[str, float]
    held: list[str] = field(default_factory=list)
    diverged: list[str] = field(default_factory=list)


def learnable_potential(losses: Losses, reference_losses: Losses | None) -> dict[str, float | None]:
    """γ_d = max((ℓ_d − ℓ_ref,d) / ℓ_d, 0); `None` where no reference loss is known."""
    potential: dict[str, float | None] = {}
    for name, loss in losses.items():
        if reference_losses is None or name not in reference_losses:
            potential[name] = None
        elif loss <= 0:
            potential[name] = 0.0
        else:
            potential[name] = max((loss - reference_losses[name]) / loss, 0.0)
    return potential


def _relative_changes(losses: Losses, previous_losses: Losses | None) -> dict[str, float | None]:
    """(ℓ_d − ℓ_d^prev) / ℓ_d^prev; `None` where there is no usable (finite, positive) previous loss."""
    changes: dict[str, float | None] = {}
    for name, loss in losses.items():
        previous = None if previous_losses is None else previous_losses.get(name)
        usable = previous is not None and math.isfinite(previous) and previous > 0
        changes[name] = (loss - previous) / previous if usable else None
    return changes


def forgetting_degree(losses: Losses, previous_losses: Losses | None) -> dict[str, float]:
    """φ_d = max((ℓ_d − ℓ_d^prev) / ℓ_d^prev, 0); 0 where there is no previous loss."""
    changes = _relative_changes(losses, previous_losses)
    return {name: 0.0 if change is None else max(change, 0.0) for name, change in changes.items()}


def _reported(
    weights: Weights,
    score: dict[str, float],
    losses: Losses,
    previous_losses: Losses | None,
    reference_losses: Losses | None,
) -> WeightUpdate:
    """A `WeightUpdate` whose γ and φ are computed for reporting only (the score did not use them)."""
    return WeightUpdate(
        weights, score, learnable_potential(losses, reference_losses), forgetting_degree(losses, previous_losses)
    )


def _potential_or_raw_loss(losses: Losses, potential: Mapping[str, float | None]) -> dict[str, float]:
    """γ where a reference loss exists, else the raw loss (the documented fallback)."""
    return {name: losses[name] if potential[name] is None else potential[name] for name in losses}


def versatune_update(
    weights: Mapping[str, float],
    losses: Losses,
    previous_losses: Losses | None,
    reference_losses: Losses | None,
    params: UpdateParams,
) -> WeightUpdate:
    """Paper's multi-ability fostering: score s_d = γ_d + λ · φ_d, multiplicative update with step η.

    Without a reference loss for a domain its γ falls back to the raw eval loss ℓ_d.
    """
    potential = learnable_potential(losses, reference_losses)
    forgetting = forgetting_degree(losses, previous_losses)
    base = _potential_or_raw_loss(losses, potential)
    score = {name: base[name] + params.forgetting_weight * forgetting[name] for name in losses}
    return WeightUpdate(multiplicative_update(weights, score, params.eta), score, potential, forgetting)


def versatune_official_update(
    weights: Mapping[str, float],
    losses: Losses,
    previous_losses: Losses | None,
    reference_losses: Losses | None,
    params: UpdateParams,
) -> WeightUpdate:
    """Released reference code: s_d = ℓ_d − ℓ_ref,d (ℓ_ref = 0 where unknown), η = 1, no clipping, no φ."""
    references = reference_losses or {}
    score = {name: loss - references.get(name, 0.0) for name, loss in losses.items()}
    return _reported(multiplicative_update(weights, score, 1.0), score, losses, previous_losses, reference_losses)


def expansion_update(
    weights: Mapping[str, float],
    losses: Losses,
    previous_losses: Losses | None,
    reference_losses: Losses | None,
    params: UpdateParams,
) -> WeightUpdate:
    """Flexible domain expansion (Phase 2b) with a target domain T and cap c = `target_max_weight`.

    The target's share moves toward the cap by the fraction 1 − exp(−η · s_T), where s_T = γ_T (the raw loss when
    no reference loss is known): it keeps growing while the target still has learnable potential and stops when
    γ_T = 0. A target already above the cap is brought down to it. The remaining mass 1 − w_T goes to the other
    domains ∝ w_d · exp(η · φ_d), so a domain whose loss rose since the last evaluation gets more replay.
    """
    potential = learnable_potential(losses, reference_losses)
    forgetting = forgetting_degree(losses, previous_losses)
    score = dict(forgetting)
    target = params.target_domain
    others = {name: weight for name, weight in weights.items() if name != target}
    if target not in weights:
        return WeightUpdate(multiplicative_update(others, forgetting, params.eta), score, potential, forgetting)
    target_score = _potential_or_raw_loss(losses, potential)[target]
    score[target] = target_score
    current = weights[target]
    if current >= params.target_max_weight:
        new_target = params.target_max_weight
    else:
        new_target = current + (params.target_max_weight - current) * (1.0 - math.exp(-params.eta * target_score))
    new_weights = {target: new_target}
    if others:
        redistributed = multiplicative_update(others, {name: forgetting[name] for name in others}, params.eta)
        new_weights.update({name: (1.0 - new_target) * share for name, share in redistributed.items()})
    else:
        new_weights[target] = 1.0
    return WeightUpdate(new_weights, score, potential, forgetting)


def keep_weights(
    weights: Mapping[str, float],
    losses: Losses,
    previous_losses: Losses | None,
    reference_losses: Losses | None,
    params: UpdateParams,
) -> WeightUpdate:
    """Static mixtures: weights never change; γ and φ are still reported."""
    return _reported(dict(weights), dict.fromkeys(losses, 0.0), losses, previous_losses, reference_losses)


DOREMI_SMOOTHING = 1e-3
"""c in DoReMi's mixing with the uniform distribution, (1 − c)·α + c/N (Xie et al. 2023)."""


def _excess_losses(losses: Losses, reference_losses: Losses | None) -> dict[str, float]:
    """max(ℓ_d − ℓ_ref,d, 0), with ℓ_ref = 0 where no reference loss is known (the raw-loss fallback)."""
    references = reference_losses or {}
    return {name: max(loss - references.get(name, 0.0), 0.0) for name, loss in losses.items()}


def doremi_update(
    weights: Mapping[str, float],
    losses: Losses,
    previous_losses: Losses | None,
    reference_losses: Losses | None,
    params: UpdateParams,
) -> WeightUpdate:
    """DoReMi (Xie et al. 2023), applied at each evaluation: excess loss λ_d = max(ℓ_d − ℓ_ref,d, 0);
    α ← softmax(log α + η·λ); α ← (1 − c)·α + c/N with c = `DOREMI_SMOOTHING`. (DoReMi trains a proxy model and
    uses the *average* α for the final run; here the current α drives this run, like its online variants.)"""
    excess = _excess_losses(losses, reference_losses)
    updated = smooth(multiplicative_update(weights, excess, params.eta), DOREMI_SMOOTHING)
    return _reported(updated, excess, losses, previous_losses, reference_losses)


def dynamic_batch_loading_update(
    weights: Mapping[str, float],
    losses: Losses,
    previous_losses: Losses | None,
    reference_losses: Losses | None,
    params: UpdateParams,
) -> WeightUpdate:
    """Sheared-LLaMA dynamic batch loading (Xia et al. 2023): Δ_d = max(ℓ_d − ℓ_target,d, 0) with the reference
    losses as targets; w ← w·exp(η·Δ) renormalised (η = 1 in the paper)."""
    excess = _excess_losses(losses, reference_losses)
    return _reported(
        multiplicative_update(weights, excess, params.eta), excess, losses, previous_losses, reference_losses
    )


def learning_progress(losses: Losses, previous_losses: Losses | None) -> dict[str, float]:
    """π_d = max((ℓ_d^prev − ℓ_d) / ℓ_d^prev, 0): the relative fall of a domain's eval loss since the previous
    evaluation; 0 where there is no usable previous loss."""
    changes = _relative_changes(losses, previous_losses)
    return {name: 0.0 if change is None else max(-change, 0.0) for name, change in changes.items()}


def lift_worst_domain(before: Mapping[str, float], after: Weights, losses: Losses, lift: float) -> Weights:
    """Keep the domain with the highest eval loss at ≥ (1 + `lift`) times its share `before` the update, but lift it
    no higher than twice the uniform share (2 / N; it never loses share either way); the other domains share the rest
    in the proportions `after` gave them.

    The lift compounds over evaluations, (1 + lift)^k, and a domain whose loss is high because its text is hard stays
    the worst one all run; the 2 / N ceiling keeps a run with many evaluations from handing it most of the data."""
    worst = max(losses, key=losses.__getitem__)
    ceiling = max(before[worst], min(2.0 / len(before), 1.0))
    floor = min((1.0 + lift) * before[worst], ceiling)
    rest = 1.0 - after[worst]
    if after[worst] >= floor or rest <= 0:
        return after
    return {name: floor if name == worst else (1.0 - floor) * weight / rest for name, weight in after.items()}


def progress_update(
    weights: Mapping[str, float],
    losses: Losses,
    previous_losses: Losses | None,
    reference_losses: Losses | None,
    params: UpdateParams,
) -> WeightUpdate:
    """Learning progress per unit of share (not in the paper; `benchmarks/rule_search.py` measured it).

    A domain that drew the share w_d since the previous evaluation and whose eval loss fell by π_d scores
    s_d = π_d / (w_d · Σ_j π_j), what a unit of its share bought against the mixture's average (Σ_d w_d · s_d = 1),
    and w ← w · exp(η · s). The domain with the highest eval loss, the one a mixture most easily starves, then keeps
    at least (1 + `progress_worst_lift`) times its share, up to 2 / N (`None`: no such protection; see
    `lift_worst_domain`). The first evaluation, with no previous losses, keeps the weights.
    """
    progress = learning_progress(losses, previous_losses)
    total = sum(progress.values())
    score = {
        name: progress[name] / (weights[name] * total) if total > 0 and weights[name] > 0 else 0.0 for name in losses
    }
    updated = multiplicative_update(weights, score, params.eta)
    if previous_losses is not None and params.progress_worst_lift is not None:
        updated = lift_worst_domain(weights, updated, losses, params.progress_worst_lift)
    return _reported(updated, score, losses, previous_losses, reference_losses)


def inverse_weights(weights: Mapping[str, float]) -> Weights:
    """The paper's "inverse" baseline: 1 − p_d, renormalised."""
    return normalize({name: 1.0 - weight for name, weight in normalize(weights).items()})


UpdateFn = Callable[[Mapping[str, float], Losses, "Losses | None", "Losses | None", UpdateParams], WeightUpdate]


@dataclass(frozen=True)
class Strategy:
    """A named mixture strategy: how it sets the starting weights and how it updates them after an evaluation."""

    update: UpdateFn
    initialize: Callable[[Mapping[str, float]], Weights] = normalize
    dynamic: bool = True
    """Dynamic strategies get the guards (floor, change cap, smoothing); static ones keep their weights exactly."""
    initial_weights: str | None = None
    """An `initial_weights` spec the strategy always starts from (overriding the configured one)."""
    uses_reference_losses: bool = False
    """Whether the score needs reference losses (without them it falls back to the raw loss, with a warning)."""
    compares_potentials: bool = False
    """Whether the score compares reference-based quantities across domains, so that reference losses must be given
    for every domain or for none (a γ of one domain and a raw loss of another are not on one scale)."""
    default_eta: float = 1.0
    """The step size η when the config leaves `eta` unset."""
    reward: str = "eval_loss"
    """What drives the updates: `"eval_loss"` (per-domain eval losses at each evaluation, through `update`) or
    `"train_loss"` (per-domain training losses of the trained rows, through `online_mixing.odm_update`)."""

    @property
    def fixed_start(self) -> str | None:
        """The starting mixture this strategy always uses whatever `initial_weights` says, if any."""
        if self.initial_weights is not None:
            return self.initial_weights
        return "uniform" if self.initialize is uniform_weights else None


STRATEGIES: dict[str, Strategy] = {
    "versatune": Strategy(update=versatune_update, uses_reference_losses=True, compares_potentials=True),
    "versatune-official": Strategy(update=versatune_official_update),
    "expansion": Strategy(update=expansion_update, uses_reference_losses=True),
    "uniform": Strategy(update=keep_weights, initialize=uniform_weights, dynamic=False),
    "static": Strategy(update=keep_weights, dynamic=False),
    "inverse": Strategy(update=keep_weights, initialize=inverse_weights, dynamic=False),
    "proportional": Strategy(update=keep_weights, dynamic=False, initial_weights="proportional"),
    "doremi": Strategy(update=doremi_update, uses_reference_losses=True, compares_potentials=True),
    "dbl": Strategy(update=dynamic_batch_loading_update, uses_reference_losses=True, compares_potentials=True),
    "odm": Strategy(update=keep_weights, initial_weights="uniform", reward="train_loss"),
    "progress": Strategy(update=progress_update, default_eta=0.5),
}


def check_reference_coverage(strategy: str, domains: Collection[str], reference_losses: Losses | None) -> None:
    """Raise if `strategy` compares reference-based scores across domains but only some domains have ℓ_ref."""
    if not STRATEGIES[strategy].compares_potentials or not reference_losses:
        return
    missing = sorted(set(domains) - set(reference_losses))
    if missing:
        covered = sorted(set(domains) & set(reference_losses))
        raise ValueError(
            f"reference_losses cover domains {covered} but not {missing}. Strategy {strategy!r} compares every "
            "domain's learnable potential γ, and a domain without a reference loss could only be scored by its raw "
            "eval loss, which is not on the same scale. Give a reference loss for every train domain, or none "
            "(then every domain is scored by its raw eval loss)."
        )


def initial_weights_for(strategy: str, weights: Mapping[str, float], params: UpdateParams) -> Weights:
    """Starting weights of `strategy` from a user/Phase 1 distribution; dynamic strategies get the floor."""
    chosen = STRATEGIES[strategy]
    start = chosen.initialize(weights)
    return apply_floor(start, params.min_weight) if chosen.dynamic else start


def compute_update(
    strategy: str,
    weights: Mapping[str, float],
    losses: Losses,
    previous_losses: Losses | None,
    reference_losses: Losses | None,
    params: UpdateParams,
) -> WeightUpdate:
    """One full update: the strategy on the domains with a finite loss, then the guards.

    Domains whose loss is NaN or infinite, or diverged (more than `params.divergence_factor` times their previous
    loss, see `divergent_domains`), keep their previous weight exactly (listed in `held`); the strategy redistributes
    the rest of the mass among the others. Dynamic strategies then get, in order: smoothing toward uniform, the cap
    on the change per update, and the weight floor (applied last, so the floor always holds), all acting on the
    domains that are not held.

    Raises:
        ValueError: if the strategy compares γ across domains and `reference_losses` cover only some of them.
    """
    chosen = STRATEGIES[strategy]
    check_reference_coverage(strategy, weights, reference_losses)
    finite = {name: loss for name, loss in losses.items() if loss is not None and math.isfinite(loss)}
    diverged = divergent_domains(finite, previous_losses, params.divergence_factor)
    usable = {name: loss for name, loss in finite.items() if name not in diverged}
    held = [name for name in weights if name not in usable]
    if not usable:
        nan_diagnostics = {name: math.nan for name in weights}
        return WeightUpdate(
            dict(weights), nan_diagnostics, dict(nan_diagnostics), dict(nan_diagnostics), held, diverged
        )
    free_mass = 1.0 - sum(weights[name] for name in held)
    result = chosen.update(
        normalize({name: weights[name] for name in usable}), usable, previous_losses, reference_losses, params
    )
    proposed = {name: weights[name] if name in held else free_mass * result.weights[name] for name in weights}
    if chosen.dynamic:
        proposed = apply_guards(weights, proposed, params, held)
    for diagnostics in (result.score, result.potential, result.forgetting):
        diagnostics.update({name: math.nan for name in held})
    return WeightUpdate(proposed, result.score, result.potential, result.forgetting, held, diverged)
