"""The pure mixture math: strategies, guards, the odm bandit and initial weights.

Plain Python (no torch, no transformers), so every formula can be imported and tested on its own:
`import versatune_hf.mixing` loads nothing heavy.
"""

from .guards import apply_floor, apply_guards, limit_change, smooth
from .initial_weights import read_domain_values, read_reference_losses, resolve_initial_weights, validate_weights
from .online_mixing import DEFAULT_ODM_SMOOTHING, BanditRound, BanditState, exploration_rate, odm_update
from .strategies import (
    STRATEGIES,
    Strategy,
    UpdateParams,
    WeightUpdate,
    check_reference_coverage,
    compute_update,
    forgetting_degree,
    initial_weights_for,
    inverse_weights,
    learnable_potential,
)
from .weights import Losses, Weights, multiplicative_update, normalize, uniform_weights

__all__ = [
    "DEFAULT_ODM_SMOOTHING",
    "STRATEGIES",
    "BanditRound",
    "BanditState",
    "Losses",
    "Strategy",
    "UpdateParams",
    "WeightUpdate",
    "Weights",
    "apply_floor",
    "apply_guards",
    "check_reference_coverage",
    "compute_update",
    "exploration_rate",
    "forgetting_degree",
    "initial_weights_for",
    "inverse_weights",
    "learnable_potential",
    "limit_change",
    "multiplicative_update",
    "normalize",
    "odm_update",
    "read_domain_values",
    "read_reference_losses",
    "resolve_initial_weights",
    "smooth",
    "uniform_weights",
    "validate_weights",
]
