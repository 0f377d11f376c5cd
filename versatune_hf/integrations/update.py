"""What a driver hands the run after deciding new weights: the weights, its own history fields and metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

LOG_PREFIX = "versatune"


@dataclass
class MixtureUpdate:
    """New domain weights (guards applied) with what explains them.

    Attributes:
        weights: The new weights.
        record: Driver-specific fields of the history record (losses, γ, φ, rewards, ...).
        metrics: Driver-specific metrics for `Trainer.log`, already named `versatune/<kind>/<domain>`.
        furthest_draw: The furthest draw any process has made, when the driver already agreed on it with the other
            processes (it saves the run a collective call); `None` otherwise.
    """

    weights: dict[str, float]
    record: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    furthest_draw: int | None = None


def finite_or_none(values: dict[str, float | None]) -> dict[str, float | None]:
    """The values with NaN and infinities replaced by `None` (JSON has no NaN)."""
    return {name: value if value is not None and math.isfinite(value) else None for name, value in values.items()}


def named_metrics(kind: str, values: dict[str, float | None]) -> dict[str, float]:
    """`{"versatune/<kind>/<domain>": value}` for the finite values."""
    return {
        f"{LOG_PREFIX}/{kind}/{name}": value
        for name, value in values.items()
        if value is not None and math.isfinite(value)
    }
