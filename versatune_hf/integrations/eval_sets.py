"""Per-domain eval sets from the one eval set a training script passes, and the overall `eval_loss` over them.

TRL's `sft.py` (and most scripts) give the Trainer one eval set, `dataset["test"]`. VersaTune needs a loss per domain,
so an eval set with the domain column is split into `{domain: rows}`; the Trainer then reports `eval_<domain>_loss`
for each. A dict of eval sets has no plain `eval_loss`, which `metric_for_best_model="eval_loss"` (and
`load_best_model_at_end`) read, so `OverallEvalLoss` adds it.
"""

from __future__ import annotations

from typing import Any

import datasets

from ..utils.logs import get_logger
from .labels import has_column, rows_by_domain

logger = get_logger(__name__)

OVERALL_LOSS_KEY = "eval_loss"


def split_by_domain(eval_dataset: Any, column: str) -> dict[str, datasets.Dataset] | None:
    """`{domain: rows}` of a single eval set with `column`, in domain-name order; `None` when it is not one (a dict
    of sets, no eval set, or a set without the column)."""
    if not isinstance(eval_dataset, datasets.Dataset) or not has_column(eval_dataset, column):
        return None
    split = rows_by_domain(eval_dataset, column)
    logger.info(
        f"VersaTune split the eval set by its '{column}' column into {len(split)} per-domain sets "
        f"{ {name: len(rows) for name, rows in split.items()} }; eval_loss is their row-weighted mean."
    )
    return split


class OverallEvalLoss:
    """Adds `eval_loss` to an evaluation of a dict of eval sets: the mean of the sets' `eval_<name>_loss` weighted by
    their rows, the loss one eval set of all those rows would report (up to the per-batch averaging).

    The Trainer evaluates the sets one at a time, firing `on_evaluate` with each set's metrics dict, and returns those
    same dicts merged; `add` collects the losses and writes `eval_loss` into the last set's dict, so the merged
    metrics that pick the best checkpoint hold it.
    """

    def __init__(self) -> None:
        self._losses: dict[str, float] = {}

    def add(self, metrics: dict[str, float], eval_sets: dict[str, Any]) -> float | None:
        """Collect one set's loss; once the last set's is in, write the overall loss into `metrics` and return it."""
        names = list(eval_sets)
        if not names or OVERALL_LOSS_KEY in metrics:
            return None
        if f"eval_{names[0]}_loss" in metrics:
            self._losses = {}
        self._losses.update({name: metrics[f"eval_{name}_loss"] for name in names if f"eval_{name}_loss" in metrics})
        if f"eval_{names[-1]}_loss" not in metrics:
            return None
        losses, self._losses = self._losses, {}
        if len(losses) != len(names):
            return None
        rows = {name: len(eval_sets[name]) for name in names}
        total = sum(rows.values())
        if total == 0:
            return None
        metrics[OVERALL_LOSS_KEY] = sum(losses[name] * rows[name] for name in names) / total
        return metrics[OVERALL_LOSS_KEY]
