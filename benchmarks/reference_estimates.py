"""Reference losses without a reference model, a tried idea: how close the asymptote of a power law
ℓ(t) = ℓ∞ + B·(t + 1)^(−α) fitted to a domain's own eval losses comes to the ℓ_ref a 3× longer run reaches, against
two naive stand-ins. (Measured before shipping it as an option; it lost, so the library does not offer it.)

    python benchmarks/reference_estimates.py --output benchmarks/results/reference_estimates.md

Setup: the demo's tiny LLaMA (built from a config) on the bundled six-domain corpus, uniform mixture, batch 8,
lr 2e-3 cosine, max_length 256, evaluated every 25 steps for `--steps` steps; the long run trains the same mixture for
3× the steps (what `versatune demo --measure_reference_losses` does) and its final per-domain eval loss is the target.
Every seed gets its own short and long run. Estimators, from the evaluations seen after the first k of the short run:
`curve` (the fitted ℓ∞, clipped to [0, lowest loss]; α on a grid 0.01..3, (ℓ∞, B ≥ 0) by least squares), `last loss`
(the eval loss at that evaluation: γ = 0, no potential left) and `zero` (versatune-official's ℓ_ref = 0 without
references: γ = 1 everywhere).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from collections.abc import Sequence

import numpy as np
import torch
import transformers
import trl
from report import publish, versions_and_time

from versatune_hf.demo.corpus import load_demo_corpus
from versatune_hf.demo.runner import REFERENCE_STEPS_MULTIPLIER, DemoArguments, conversation_texts, run_strategy

EVAL_STEPS = 25
MIN_CURVE_POINTS = 3
"""Evaluations a domain needs before its curve gives an estimate (two points fit any power law)."""

EXPONENTS = tuple(0.01 * k for k in range(1, 301))
"""The α tried: 0.01 ... 3.0."""


def curve_asymptote(steps: Sequence[int], losses: Sequence[float]) -> float | None:
    """ℓ∞ of the power law ℓ(t) = ℓ∞ + B·(t + 1)^(−α) (B ≥ 0) that fits the points best, clipped to [0, min loss];
    `None` with fewer than `MIN_CURVE_POINTS` points or a curve that does not fall."""
    points = [(step, loss) for step, loss in zip(steps, losses) if math.isfinite(loss)]
    if len(points) < MIN_CURVE_POINTS:
        return None
    lowest = min(loss for _, loss in points)
    if points[-1][1] >= points[0][1]:
        return None  # not falling: no learnable part to extrapolate
    best: tuple[float, float] | None = None
    for alpha in EXPONENTS:
        xs = [(step + 1) ** -alpha for step, _ in points]
        fit = _least_squares_line(xs, [loss for _, loss in points])
        if fit is None:
            continue
        offset, slope = fit
        if slope < 0:
            continue
        error = sum((offset + slope * x - loss) ** 2 for x, (_, loss) in zip(xs, points))
        if best is None or error < best[0]:
            best = (error, offset)
    if best is None:
        return None
    return min(max(best[1], 0.0), lowest)


def _least_squares_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float] | None:
    """(intercept, slope) of the least-squares line through the points; `None` when the xs do not vary."""
    count = len(xs)
    mean_x, mean_y = sum(xs) / count, sum(ys) / count
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread <= 1e-18:
        return None
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread
    return mean_y - slope * mean_x, slope


def eval_curves(steps: int, seed: int, folder: str) -> dict[str, list[tuple[int, float]]]:
    """Per-domain eval losses of a uniform run (without the step-0 evaluation the callback never sees)."""
    train, eval_sets = load_demo_corpus()
    args = DemoArguments(output_dir=folder, max_steps=steps, eval_steps=EVAL_STEPS, seed=seed, reference_losses="none")
    _, curves = run_strategy(args, "uniform", train, eval_sets, conversation_texts(train), folder)
    return {domain: [(step, loss) for step, loss in points if step > 0] for domain, points in curves.items()}


def rank_correlation(first: list[float], second: list[float]) -> float:
    """Spearman's ρ (no ties expected in losses)."""
    return float(np.corrcoef(np.argsort(np.argsort(first)), np.argsort(np.argsort(second)))[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="Steps of the short run (the long one: 3x).")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--output", help="Markdown file for the results table.")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    started = time.time()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    total_evals = args.steps // EVAL_STEPS
    cutoffs = sorted({k for k in (3, total_evals // 2, total_evals) if 0 < k <= total_evals})
    errors: dict[tuple[str, int], list[float]] = {}
    correlations: dict[tuple[str, int], list[float]] = {}
    for seed in seeds:
        with tempfile.TemporaryDirectory() as folder:
            short = eval_curves(args.steps, seed, os.path.join(folder, "short"))
            long = eval_curves(args.steps * REFERENCE_STEPS_MULTIPLIER, seed, os.path.join(folder, "long"))
        domains = sorted(short)
        target = [long[domain][-1][1] for domain in domains]
        for k in cutoffs:
            seen = {domain: short[domain][:k] for domain in domains}
            estimates = {
                "curve": [curve_asymptote([s for s, _ in seen[d]], [v for _, v in seen[d]]) for d in domains],
                "last loss": [seen[d][-1][1] for d in domains],
                "zero": [0.0] * len(domains),
            }
            for name, values in estimates.items():
                if any(value is None for value in values):
                    continue
                errors.setdefault((name, k), []).append(float(np.mean(np.abs(np.subtract(values, target)))))
                if name != "zero":
                    correlations.setdefault((name, k), []).append(rank_correlation(values, target))
    lines = [
        "# Reference losses without a reference model",
        "",
        f"Command: `python benchmarks/reference_estimates.py --steps {args.steps} --seeds {args.seeds}"
        + (f" --output {args.output}`" if args.output else "`")
        + f". Short runs of {args.steps} steps (an evaluation every {EVAL_STEPS}), long runs of "
        f"{args.steps * REFERENCE_STEPS_MULTIPLIER}; seeds {seeds}; mean over seeds ± standard deviation.",
        "",
        "| estimator | evaluations seen | mean absolute error vs the long run's final loss | rank correlation |",
        "|---|---|---|---|",
    ]
    for (name, k), values in sorted(errors.items(), key=lambda item: (item[0][1], item[0][0])):
        rho = correlations.get((name, k))
        rho_text = "n/a (constant)" if rho is None else f"{np.mean(rho):.2f} ± {np.std(rho):.2f}"
        lines.append(
            f"| {name} | {k} (step {k * EVAL_STEPS}) | {np.mean(values):.3f} ± {np.std(values):.3f} | {rho_text} |"
        )
    missing = sorted({(name, k) for name in ("curve",) for k in cutoffs} - set(errors))
    if missing:
        lines += ["", f"No estimate (a curve did not fall) for: {missing}."]
    lines += [
        "",
        "Reading it: a power law with an offset fitted to the first evaluations of a run that starts from random "
        "weights leaves the asymptote nearly free (curves with a small α and ℓ∞ near 0 fit as well), so the "
        "estimates are clipped to 0 for several domains; and the domains whose curves fall steepest, which are "
        "not the ones with the lowest final loss, get the lowest estimates. Where the rank correlation is negative, "
        "γ from these estimates would rank the domains' learnable potential backwards.",
        "",
        versions_and_time(started, torch, transformers, trl),
    ]
    publish(lines, args.output)


if __name__ == "__main__":
    main()
