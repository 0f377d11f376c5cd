"""The guards of dynamic strategies: smoothing toward uniform, a cap on the change per update, a weight floor, and
the check that keeps a diverging evaluation from moving the mixture."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

from .weights import Weights, normalize

if TYPE_CHECKING:
    from .strategies import UpdateParams


def divergent_domains(
    losses: Mapping[str, float], previous_losses: Mapping[str, float] | None, factor: float | None
) -> list[str]:
    """Domains whose eval loss looks like a divergence or a bad evaluation rather than learning: more than `factor`
    times their previous eval loss, or, for a domain with no previous loss, more than `factor` times the median loss
    of the domains. `factor=None` checks nothing."""
    if factor is None or not losses:
        return []
    ordered = sorted(losses.values())
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    divergent = []
    for name, loss in losses.items():
        previous = (previous_losses or {}).get(name)
        baseline = previous if previous is not None and previous > 0 else median
        if baseline > 0 and loss > factor * baseline:
            divergent.append(name)
    return divergent


def apply_floor(weights: Mapping[str, float], floor: float) -> Weights:
    """Raise every weight to at least `floor`, taking the mass from the others in proportion to their weight."""
    if floor <= 0:
        return normalize(weights)
    if floor * len(weights) > 1.0 + 1e-12:
        raise ValueError(
            f"min_weight={floor} is too large for {len(weights)} domains: it must be below 1/{len(weights)}."
        )
    pinned: set[str] = set()
    while True:
        free = {name: weight for name, weight in weights.items() if name not in pinned}
        free_mass = 1.0 - floor * len(pinned)
        scaled = {name: free_mass * share for name, share in normalize(free).items()} if free else {}
        below = {name for name, weight in scaled.items() if weight < floor}
        if not below:
            return {name: floor if name in pinned else scaled[name] for name in weights}
        pinned |= below


def limit_change(previous: Mapping[str, float], proposed: Mapping[str, float], max_change: float | None) -> Weights:
    """Move from `previous` toward `proposed` only as far as keeps every |Δw_d| <= `max_change`."""
    largest = max(abs(proposed[name] - previous[name]) for name in previous)
    if max_change is None or largest <= max_change:
        return dict(proposed)
    fraction = max_change / largest
    return {name: previous[name] + fraction * (proposed[name] - previous[name]) for name in previous}


def smooth(weights: Mapping[str, float], smoothing: float) -> Weights:
    """(1 − c) · w + c / N."""
    return {name: (1.0 - smoothing) * weight + smoothing / len(weights) for name, weight in weights.items()}


def apply_guards(
    previous: Mapping[str, float], proposed: Mapping[str, float], params: UpdateParams, held: Collection[str] = ()
) -> Weights:
    """The guards of dynamic strategies, in order: smoothing toward uniform, the cap on the change per update, and
    the weight floor (applied last, so the floor always holds).

    Domains in `held` (no usable loss this round) keep their previous weight exactly: the guards then act on the other
    domains only, inside the mass those share, with the cap and the floor still meant as absolute weights.
    """
    if not held:
        return _guard(previous, proposed, params.smoothing, params.max_weight_change, params.min_weight)
    free = [name for name in previous if name not in held]
    free_mass = 1.0 - sum(previous[name] for name in held)
    if not free or free_mass <= 0:
        return dict(previous)
    change_cap = None if params.max_weight_change is None else params.max_weight_change / free_mass
    shares = _guard(
        normalize({name: previous[name] for name in free}),
        normalize({name: proposed[name] for name in free}),
        params.smoothing,
        change_cap,
        min(params.min_weight / free_mass, 1.0 / len(free)),
    )
    return {name: previous[name] if name in held else free_mass * shares[name] for name in previous}


def _guard(
    previous: Mapping[str, float],
    proposed: Mapping[str, float],
    smoothing: float,
    max_change: float | None,
    floor: float,
) -> Weights:
    guarded = smooth(proposed, smoothing)
    guarded = limit_change(previous, guarded, max_change)
    return apply_floor(guarded, floor)
