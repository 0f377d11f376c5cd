"""Reference losses without a reference model, tried ideas: how close the asymptote of a power law
ℓ(t) = ℓ∞ + B·(t + 1)^(−α) fitted to a domain's own eval losses, or the geometric (Aitken Δ²) extrapolation of its last
three, comes to the ℓ_ref a 3× longer run reaches, against two naive stand-ins. (Measured before shipping either as an
option; both lost, so the library does not offer them.)

    python benchmarks/reference_estimates.py --output benchmarks/results/reference_estimates.md
    python benchmarks/reference_estimates.py --base bundled \
        --output benchmarks/results/reference_estimates_pretrained.md

Setup: the demo's tiny LLaMA (built from a config, or the pretrained base with `--base`) on the bundled six-domain
corpus, uniform mixture, batch 8, lr 2e-3 cosine, max_length 256, evaluated every 25 steps for `--steps` steps; the
long run trains the same mixture for 3× the steps (what `versatune demo --measure_reference_losses` does) and its
final per-domain eval loss is the target. Every seed gets its own short and long run. Estimators, from the
evaluations seen after the first k of the short run: `curve` (the fitted ℓ∞, clipped to [0, lowest loss]; α on a grid
0.01..3, (ℓ∞, B ≥ 0) by least squares), `geometric` (ℓ₃ − Δ₂·q/(1 − q) with Δ₁ = ℓ₁ − ℓ₂, Δ₂ = ℓ₂ − ℓ₃, q = Δ₂/Δ₁
from the last three evaluations: the limit if each improvement is q times the one before; clipped the same way, and
the last loss where the improvements do not shrink), `last loss` (the eval loss at that evaluation: γ = 0, no
potential left), `zero` (versatune-official's ℓ_ref = 0 without references: γ = 1 everywhere) and `proxy run` (the
final losses of the whole short run, i.e. of a uniform proxy run as long as the real one, made before it; the same at
every k, but the γ it gives changes as the run's losses fall). The last column
ranks what the update uses: the γ each estimate gives at that evaluation against the γ the long run's losses give.
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
from base_regime import add_base_argument, base_model, model_option
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


def geometric_asymptote(losses: Sequence[float]) -> float | None:
    """Aitken's Δ² limit of the last three losses, clipped to [0, min loss]; the last loss where the improvements do
    not shrink (0 < q < 1 fails); `None` with fewer than three points."""
    if len(losses) < 3 or not all(math.isfinite(loss) for loss in losses[-3:]):
        return None
    first, second, third = losses[-3:]
    earlier, later = first - second, second - third
    if earlier <= 0 or not 0 < later / earlier < 1:
        return third
    ratio = later / earlier
    return min(max(third - later * ratio / (1 - ratio), 0.0), min(losses))


def _least_squares_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float] | None:
    """(intercept, slope) of the least-squares line through the points; `None` when the xs do not vary."""
    count = len(xs)
    mean_x, mean_y = sum(xs) / count, sum(ys) / count
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread <= 1e-18:
        return None
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread
    return mean_y - slope * mean_x, slope


def eval_curves(steps: int, seed: int, folder: str, model: str) -> dict[str, list[tuple[int, float]]]:
    """Per-domain eval losses of a uniform run (without the step-0 evaluation the callback never sees)."""
    train, eval_sets = load_demo_corpus()
    args = DemoArguments(
        output_dir=folder, model=model, max_steps=steps, eval_steps=EVAL_STEPS, seed=seed, reference_losses="none"
    )
    _, curves = run_strategy(args, "uniform", train, eval_sets, conversation_texts(train), folder)
    return {domain: [(step, loss) for step, loss in points if step > 0] for domain, points in curves.items()}


def rank_correlation(first: list[float], second: list[float]) -> float:
    """Spearman's ρ (no ties expected in losses); NaN when one side is constant."""
    if len(set(first)) == 1 or len(set(second)) == 1:
        return math.nan
    return float(np.corrcoef(np.argsort(np.argsort(first)), np.argsort(np.argsort(second)))[0, 1])


def potentials(losses: Sequence[float], references: Sequence[float]) -> list[float]:
    """γ = max((ℓ − ℓ_ref) / ℓ, 0) of each domain."""
    return [max((loss - reference) / loss, 0.0) for loss, reference in zip(losses, references)]


def mean_and_spread(values: list[float] | None) -> str:
    """`mean ± std`, or n/a where the estimator gives every domain the same value."""
    if values is None:
        return "n/a (constant)"
    if not all(np.isfinite(values)):
        return "n/a (every γ equal)"
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="Steps of the short run (the long one: 3x).")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--output", help="Markdown file for the results table.")
    add_base_argument(parser)
    args = parser.parse_args()
    model = model_option(base_model(args.base))
    torch.set_num_threads(os.cpu_count() or 1)
    started = time.time()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    total_evals = args.steps // EVAL_STEPS
    cutoffs = sorted({k for k in (3, total_evals // 2, total_evals) if 0 < k <= total_evals})
    errors: dict[tuple[str, int], list[float]] = {}
    correlations: dict[tuple[str, int], list[float]] = {}
    potential_correlations: dict[tuple[str, int], list[float]] = {}
    for seed in seeds:
        with tempfile.TemporaryDirectory() as folder:
            short = eval_curves(args.steps, seed, os.path.join(folder, "short"), model)
            long = eval_curves(args.steps * REFERENCE_STEPS_MULTIPLIER, seed, os.path.join(folder, "long"), model)
        domains = sorted(short)
        target = [long[domain][-1][1] for domain in domains]
        for k in cutoffs:
            seen = {domain: short[domain][:k] for domain in domains}
            estimates = {
                "curve": [curve_asymptote([s for s, _ in seen[d]], [v for _, v in seen[d]]) for d in domains],
                "geometric": [geometric_asymptote([v for _, v in seen[d]]) for d in domains],
                "proxy run": [short[d][-1][1] for d in domains],
                "last loss": [seen[d][-1][1] for d in domains],
                "zero": [0.0] * len(domains),
            }
            for name, values in estimates.items():
                if any(value is None for value in values):
                    continue
                errors.setdefault((name, k), []).append(float(np.mean(np.abs(np.subtract(values, target)))))
                if name != "zero":
                    correlations.setdefault((name, k), []).append(rank_correlation(values, target))
                if name in ("curve", "geometric", "proxy run"):  # the others give every domain the same γ (0 or 1)
                    current = [seen[d][-1][1] for d in domains]
                    potential_correlations.setdefault((name, k), []).append(
                        rank_correlation(potentials(current, values), potentials(current, target))
                    )
    lines = [
        "# Reference losses without a reference model",
        "",
        "Command: `python benchmarks/reference_estimates.py "
        f"--steps {args.steps} --seeds {args.seeds} --base {args.base}"
        + (f" --output {args.output}`" if args.output else "`")
        + f". Short runs of {args.steps} steps (an evaluation every {EVAL_STEPS}), long runs of "
        f"{args.steps * REFERENCE_STEPS_MULTIPLIER}; seeds {seeds}; mean over seeds ± standard deviation.",
        "",
        "| estimator | evaluations seen | mean absolute error vs the long run's final loss | rank correlation | "
        "rank correlation of γ |",
        "|---|---|---|---|---|",
    ]
    for (name, k), values in sorted(errors.items(), key=lambda item: (item[0][1], item[0][0])):
        rho, gamma_rho = correlations.get((name, k)), potential_correlations.get((name, k))
        lines.append(
            f"| {name} | {k} (step {k * EVAL_STEPS}) | {np.mean(values):.3f} ± {np.std(values):.3f} | "
            f"{mean_and_spread(rho)} | {mean_and_spread(gamma_rho)} |"
        )
    missing = sorted({(name, k) for name in ("curve",) for k in cutoffs} - set(errors))
    if missing:
        lines += ["", f"No estimate (a curve did not fall) for: {missing}."]
    if args.base == "none":
        lines += [
            "",
            "Reading it: a power law with an offset fitted to the first evaluations of a run that starts from random "
            "weights leaves the asymptote nearly free (curves with a small α and ℓ∞ near 0 fit as well), so the "
            "estimates are clipped to 0 for several domains; and the domains whose curves fall steepest, which are "
            "not the ones with the lowest final loss, get the lowest estimates. Where the rank correlation is "
            "negative, γ from these estimates would rank the domains' learnable potential backwards.",
        ]
    lines += ["", versions_and_time(started, torch, transformers, trl)]
    publish(lines, args.output)


if __name__ == "__main__":
    main()
