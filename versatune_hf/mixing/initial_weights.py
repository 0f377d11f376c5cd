"""Resolve the `initial_weights` option into a validated {domain: weight} mapping, and read per-domain values
(shares, reference losses) from the files users pass."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping

from .weights import Weights, normalize, uniform_weights

logger = logging.getLogger(__name__)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_domain_values(path: str | os.PathLike, key: str) -> dict[str, float]:
    """Read `{domain: number}` from a JSON file, either at the top level or under `key`.

    Used for shares (`key="shares"`, as `versatune detect` writes them) and reference losses
    (`key="reference_losses"`, as `versatune demo --measure_reference_losses` writes them).
    """
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    values = data.get(key, data) if isinstance(data, dict) else None
    if not isinstance(values, dict) or not all(_is_number(value) for value in values.values()):
        raise ValueError(
            f"{path} does not hold per-domain {key}. Expected a JSON object such as "
            f'{{"{key}": {{"law": 0.2, "code": 0.8}}}} or {{"law": 0.2, "code": 0.8}}.'
        )
    return {str(name): float(value) for name, value in values.items()}


def read_reference_losses(path: str | os.PathLike) -> dict[str, float]:
    """Per-domain reference losses from a JSON file (`read_domain_values` with `key="reference_losses"`), or from the
    `versatune_history.jsonl` of a finished run: the eval losses of its last evaluation.

    The second form turns a *proxy run* (your script once with `strategy="uniform"`, same data and budget) into
    reference losses without a reference model.
    """
    if not str(path).endswith(".jsonl"):
        return read_domain_values(path, "reference_losses")
    final: dict | None = None
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by an interruption
            losses = record.get("losses") if isinstance(record, dict) else None
            if isinstance(losses, dict) and losses:
                final = losses
    if final is None:
        raise ValueError(
            f"{path} holds no evaluation with per-domain eval losses. Pass the versatune_history.jsonl of a run that "
            "evaluated (eval_strategy='steps') with a strategy other than 'odm', such as strategy='uniform'."
        )
    unusable = sorted(name for name, value in final.items() if not _is_number(value) or not math.isfinite(value))
    if unusable:
        raise ValueError(f"The last evaluation in {path} has no finite eval loss for {unusable}.")
    return {str(name): float(value) for name, value in final.items()}


def validate_weights(weights: Mapping[str, float], domains: list[str], source: str) -> Weights:
    """Check that `weights` covers exactly `domains` with non-negative finite values; return them normalised.

    Weights that do not sum to 1 are normalised, with a warning naming the sum.
    """
    unknown = sorted(set(weights) - set(domains))
    missing = sorted(set(domains) - set(weights))
    if unknown or missing:
        problems = []
        if unknown:
            problems.append(f"names domains that are not in the train set: {unknown}")
        if missing:
            problems.append(f"has no weight for train domains {missing}")
        raise ValueError(
            f"{source} {' and '.join(problems)}. The train set's domains are {domains}; give one weight per domain "
            "(a detection result must come from the same domain names)."
        )
    bad = {name: value for name, value in weights.items() if not (math.isfinite(value) and value >= 0)}
    if bad:
        raise ValueError(f"{source} has negative or non-finite weights {bad}; weights must be finite and >= 0.")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"{source} sums to 0; give at least one domain a positive weight.")
    if not math.isclose(total, 1.0, rel_tol=0, abs_tol=1e-6):
        logger.warning(f"{source} sums to {total:.6g}, not 1; normalising it.")
    return normalize({name: float(weights[name]) for name in domains})


def resolve_initial_weights(spec: str | Mapping[str, float], domain_sizes: Mapping[str, int]) -> Weights:
    """Turn `"uniform"`, `"proportional"`, a dict or a shares-file path into weights over `domain_sizes`' domains."""
    domains = list(domain_sizes)
    if isinstance(spec, Mapping):
        return validate_weights(spec, domains, "initial_weights")
    if spec == "uniform":
        return uniform_weights(domains)
    if spec == "proportional":
        return normalize({name: float(size) for name, size in domain_sizes.items()})
    if os.path.isfile(spec):
        return validate_weights(read_domain_values(spec, "shares"), domains, f"initial_weights file {spec}")
    raise ValueError(
        f"initial_weights={spec!r} is neither 'uniform', 'proportional', a dict, nor an existing JSON file."
    )
