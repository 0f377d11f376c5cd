"""Plots of a VersaTune run: domain weights and per-domain eval losses over training steps."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

Series = Mapping[str, Mapping[str, Sequence[tuple[int, float]]]]
"""{run label: {domain: [(step, value), ...]}}"""

LINE_STYLES = ("-", "--", ":", "-.")


def pyplot() -> Any:
    """`matplotlib.pyplot` on the file-only Agg backend; matplotlib is the optional `plots` extra."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "Plots need matplotlib, the optional 'plots' extra: pip install 'versatune-hf[plots]'."
        ) from error
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def plot_series(series: Series, title: str, ylabel: str, path: str | os.PathLike, step_plot: bool = False) -> int:
    """Draw one line per (run, domain): colour by domain, line style by run. Returns the number of lines drawn."""
    plt = pyplot()
    domains = sorted({domain for by_domain in series.values() for domain in by_domain})
    colours = {domain: plt.get_cmap("tab10")(index % 10) for index, domain in enumerate(domains)}
    figure, axes = plt.subplots(figsize=(8, 4.5))
    lines = 0
    for run_index, (run, by_domain) in enumerate(series.items()):
        for domain in domains:
            points = by_domain.get(domain)
            if not points:
                continue
            steps, values = zip(*points)
            label = domain if len(series) == 1 else f"{domain} ({run})"
            style = LINE_STYLES[run_index % len(LINE_STYLES)]
            if step_plot:
                axes.step(steps, values, where="post", linestyle=style, color=colours[domain], label=label)
            else:
                axes.plot(steps, values, linestyle=style, marker="o", markersize=3, color=colours[domain], label=label)
            lines += 1
    axes.set_xlabel("training step")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncol=2 if lines > 8 else 1, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return lines


def weight_series(history: Sequence[Mapping]) -> dict[str, list[tuple[int, float]]]:
    """Weights per domain from a history: the starting weights at step 0, then each update's weights at its step."""
    if not history:
        return {}
    series = {domain: [(0, weight)] for domain, weight in history[0]["weights_before"].items()}
    for record in history:
        for domain, weight in record["weights_after"].items():
            series[domain].append((record["step"], weight))
    return series


def plot_shares(bars: Mapping[str, Mapping[str, float]], path: str | os.PathLike) -> int:
    """Stacked bars of domain shares, one bar per model (the paper's detection figure). Returns the bar count."""
    plt = pyplot()
    domains = sorted({domain for shares in bars.values() for domain in shares})
    colours = {domain: plt.get_cmap("tab10")(index % 10) for index, domain in enumerate(domains)}
    figure, axes = plt.subplots(figsize=(max(4, 1.4 * len(bars) + 3), 4.5))
    bottoms = [0.0] * len(bars)
    labels = list(bars)
    for domain in domains:
        heights = [bars[label].get(domain, 0.0) for label in labels]
        axes.bar(labels, heights, bottom=bottoms, color=colours[domain], label=domain)
        for index, (bottom, height) in enumerate(zip(bottoms, heights)):
            if height >= 0.04:
                axes.text(index, bottom + height / 2, f"{height:.2f}", ha="center", va="center", fontsize=7)
        bottoms = [bottom + height for bottom, height in zip(bottoms, heights)]
    axes.set_ylabel("share of unconditional samples")
    axes.set_ylim(0, 1)
    axes.set_title("Domain knowledge detection")
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return len(bars)
