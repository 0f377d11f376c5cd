"""Weight vectors: the `{domain: weight}` type, normalisation, and the multiplicative update every strategy uses."""

from __future__ import annotations

import math
from collections.abc import Mapping

Weights = dict[str, float]
Losses = Mapping[str, float]


def normalize(weights: Mapping[str, float]) -> Weights:
    """Scale non-negative weights to sum to 1 (a zero vector becomes uniform)."""
    total = sum(weights.values())
    if total <= 0:
        return {name: 1.0 / len(weights) for name in weights}
    return {name: value / total for name, value in weights.items()}


def uniform_weights(domains: list[str] | Mapping[str, float]) -> Weights:
    """1/N for each of N domains."""
    return {name: 1.0 / len(domains) for name in domains}


def multiplicative_update(weights: Mapping[str, float], scores: Mapping[str, float], eta: float) -> Weights:
    """w_d · exp(η · s_d), renormalised (computed in log space, so large scores cannot overflow)."""
    logits = {
        name: (math.log(weight) if weight > 0 else -math.inf) + eta * scores[name] for name, weight in weights.items()
    }
    top = max(logits.values())
    if top == -math.inf:
        return uniform_weights(weights)
    return normalize({name: math.exp(logit - top) for name, logit in logits.items()})
